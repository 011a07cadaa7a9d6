"""Prediction-level fusion strategies (scikit-learn style: ``fit`` / ``combine`` / ``to_torch``)."""

from modelfusion.strategies.averaging import GeometricMean, Mean, Median, WeightedAverage
from modelfusion.strategies.base import STRATEGY_REGISTRY, Strategy, get_strategy, normalize_weights
from modelfusion.strategies.calibration import Calibrated
from modelfusion.strategies.dynamic import DynamicWeighting, MaxConfidence
from modelfusion.strategies.gating import Gating
from modelfusion.strategies.rank import RankAverage
from modelfusion.strategies.search import SearchResult, search_strategies
from modelfusion.strategies.selection import GreedySelection
from modelfusion.strategies.stacking import Stacking
from modelfusion.strategies.voting import MajorityVote
from modelfusion.strategies.weights import OptimizedWeights

__all__ = [
    "STRATEGY_REGISTRY",
    "Calibrated",
    "DynamicWeighting",
    "GeometricMean",
    "Gating",
    "GreedySelection",
    "MajorityVote",
    "MaxConfidence",
    "Mean",
    "Median",
    "OptimizedWeights",
    "RankAverage",
    "SearchResult",
    "Stacking",
    "Strategy",
    "WeightedAverage",
    "get_strategy",
    "normalize_weights",
    "search_strategies",
]

"""The tutorial's ``modelfusion.strategy``: the fusion strategies of :mod:`modelfusion.strategies`.

A door, not an implementation: every name here is the class in ``modelfusion.strategies``.
``combine`` takes a :class:`~modelfusion.predictions.PredictionSet` or the tutorial's records.

Examples
--------
>>> from modelfusion.strategy import WeightedAverage
>>> WeightedAverage({"resnet": 0.6, "bert": 0.4}).combine(
...     [{"model": "resnet", "output": 0.85}, {"model": "bert", "output": 0.72}])
{'fused_score': 0.798, 'weights': {'resnet': 0.6, 'bert': 0.4}}
"""

from modelfusion.strategies import (
    Calibrated,
    DynamicWeighting,
    Gating,
    GeometricMean,
    GreedySelection,
    MajorityVote,
    MaxConfidence,
    Mean,
    Median,
    OptimizedWeights,
    RankAverage,
    Stacking,
    Strategy,
    WeightedAverage,
    get_strategy,
    search_strategies,
)

__all__ = [
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
    "Stacking",
    "Strategy",
    "WeightedAverage",
    "get_strategy",
    "search_strategies",
]

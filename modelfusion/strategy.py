"""The tutorial's ``modelfusion.strategy``: the fusion strategies of :mod:`modelfusion.strategies`.

A door, not an implementation: each class here is the one in ``modelfusion.strategies`` (a
subclass, so ``isinstance`` holds and every behaviour is the same) whose ``combine`` also takes
the tutorial's records and then returns a dict, through :mod:`modelfusion.strategies.records`.

Examples
--------
>>> from modelfusion.strategy import WeightedAverage
>>> WeightedAverage({"resnet": 0.6, "bert": 0.4}).combine(
...     [{"model": "resnet", "output": 0.85}, {"model": "bert", "output": 0.72}])
{'fused_score': 0.798, 'weights': {'resnet': 0.6, 'bert': 0.4}}
"""

from typing import Any

from modelfusion import strategies
from modelfusion.strategies import Strategy, get_strategy, search_strategies
from modelfusion.strategies.base import is_records
from modelfusion.strategies.records import combine_records


class _TakesRecords:
    """``combine`` also takes the tutorial's records and then returns a dict (see :func:`combine_records`)."""

    def combine(self, predictions: Any) -> Any:
        if is_records(predictions):
            return combine_records(self, predictions)  # type: ignore[arg-type]
        return super().combine(predictions)  # type: ignore[misc]


def _door(cls: type[Strategy]) -> type[Strategy]:
    """``cls`` whose ``combine`` also takes records: a subclass named like it, kept out of the registry."""
    return type(
        cls.__name__, (_TakesRecords, cls), {"__module__": __name__, "__doc__": cls.__doc__}, register=False
    )


Calibrated = _door(strategies.Calibrated)
DynamicWeighting = _door(strategies.DynamicWeighting)
Gating = _door(strategies.Gating)
GeometricMean = _door(strategies.GeometricMean)
GreedySelection = _door(strategies.GreedySelection)
MajorityVote = _door(strategies.MajorityVote)
MaxConfidence = _door(strategies.MaxConfidence)
Mean = _door(strategies.Mean)
Median = _door(strategies.Median)
OptimizedWeights = _door(strategies.OptimizedWeights)
RankAverage = _door(strategies.RankAverage)
Stacking = _door(strategies.Stacking)
WeightedAverage = _door(strategies.WeightedAverage)

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

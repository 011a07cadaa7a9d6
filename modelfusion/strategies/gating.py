"""Gating: a small network that picks member weights per sample (a mixture of experts)."""

from __future__ import annotations

import contextlib
import copy
import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.errors import StrategyError
from modelfusion.outputs import EPS
from modelfusion.predictions import PredictionSet, as_prediction_set
from modelfusion.strategies.base import Strategy
from modelfusion.strategies.stacking import FEATURES, feature_floor, member_features, torch_member_features

#: Share of the fit data held out to stop training early, and how many epochs without
#: improvement on it end training.
HOLDOUT_FRACTION = 0.2
PATIENCE = 20
_MIN_HOLDOUT_SAMPLES = 10
#: Inputs up to this many elements are trained on one thread (see _few_threads_if_small).
_SMALL_INPUT_ELEMENTS = 2_000_000


class Gating(Strategy):
    """A learned gate: an MLP maps a sample's member outputs to a softmax over members.

    The fused output is ``sum_m g_m(x) * p_m(x)`` (Jacobs et al., 1991, "Adaptive Mixtures
    of Local Experts"; here the experts are frozen and only the gate learns). The gate sees
    the members' log-probabilities (or probabilities; values for regression), standardised
    with the fit data's mean and spread, through ``Linear -> ReLU -> Linear -> softmax``.
    Its last layer starts at zero, so training starts from the plain mean.

    Training is full-batch Adam on the NLL of the gated mixture (binary cross-entropy for
    multi-label, MSE for regression), seeded with ``random_state``. 20% of the fit data
    is held out: training stops after 20 epochs without improvement there and keeps the
    best epoch (the untrained, uniform gate included).

    Parameters
    ----------
    hidden : hidden units
    epochs : most training epochs
    lr, weight_decay : Adam's learning rate and L2 penalty
    features : {"log_proba", "proba"} (ignored for regression)
    random_state : seed for the initial weights and the holdout split

    Learned: ``network_`` (eval mode, maps features [samples, members * outputs] to gates
    [samples, members]), ``weights_`` (mean gate per member on the fit data),
    ``n_features_``, ``n_epochs_``.

    Examples
    --------
    >>> gate = Gating(hidden=32, epochs=200).fit(val_preds, y_val)
    >>> gate.combine(test_preds).shape
    (1000, 10)
    >>> gate.sample_weights(test_preds).shape     # [members, samples]
    (5, 1000)
    """

    alias = "gating"
    symmetric = False

    def __init__(
        self,
        hidden: int = 32,
        epochs: int = 200,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        features: str = "log_proba",
        random_state: int | None = 0,
    ):
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.features = features
        self.random_state = random_state

    def _needs_labels(self) -> bool:
        return True

    def _check_params(self) -> None:
        if self.features not in FEATURES:
            raise StrategyError(f"Gating features={self.features!r} is not one of {', '.join(FEATURES)}")
        for name in ("hidden", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 1:
                raise StrategyError(f"Gating {name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.lr, numbers.Real) or not self.lr > 0:
            raise StrategyError(f"Gating lr must be > 0, got {self.lr!r}")
        if not isinstance(self.weight_decay, numbers.Real) or not self.weight_decay >= 0:
            raise StrategyError(f"Gating weight_decay must be >= 0, got {self.weight_decay!r}")

    # -- fitting --------------------------------------------------------------------------
    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        assert y is not None  # fit() checked: this strategy learns from labels
        self._check_params()
        scores = np.array(preds.scores, dtype=np.float32)  # a writable copy, even of a memmap
        X = member_features(scores, self.task_, self.features).astype(np.float32)
        self.n_features_ = X.shape[1]
        self.n_outputs_ = preds.n_outputs
        rng = np.random.default_rng(self.random_state)
        order = rng.permutation(preds.n_samples)
        n_hold = int(round(HOLDOUT_FRACTION * preds.n_samples))
        if n_hold < _MIN_HOLDOUT_SAMPLES or preds.n_samples - n_hold < _MIN_HOLDOUT_SAMPLES:
            train, hold = order, None
        else:
            train, hold = order[n_hold:], order[:n_hold]

        with torch.random.fork_rng(devices=[]):
            if self.random_state is not None:
                torch.manual_seed(self.random_state)
            network = GateNetwork(self.n_features_, preds.n_members, self.hidden)
        network.standardise_with(torch.from_numpy(X[train]))
        s = torch.from_numpy(scores)
        x = torch.from_numpy(X)
        target = _target_tensor(y, self.task_)
        loss_fn = _mixture_loss(self.task_)

        def loss_on(rows: np.ndarray) -> torch.Tensor:
            idx = torch.from_numpy(rows)
            gates = network(x[idx])
            return loss_fn(gates, s[:, idx], target[idx])

        monitor = hold if hold is not None else train
        optimiser = torch.optim.Adam(network.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        with _few_threads_if_small(X.size):
            with torch.no_grad():
                best_loss = float(loss_on(monitor))
            best_state = copy.deepcopy(network.state_dict())
            waited, epochs_run = 0, 0
            for _ in range(self.epochs):
                network.train()
                optimiser.zero_grad()
                loss_on(train).backward()
                optimiser.step()
                epochs_run += 1
                network.eval()
                with torch.no_grad():
                    current = float(loss_on(monitor))
                if current < best_loss - 1e-7:
                    best_loss, best_state, waited = current, copy.deepcopy(network.state_dict()), 0
                else:
                    waited += 1
                    if waited >= PATIENCE:
                        break
        network.load_state_dict(best_state)
        self.network_ = network.eval()
        self.n_epochs_ = epochs_run
        self.holdout_loss_ = best_loss
        with torch.no_grad():
            self.weights_ = network(x).mean(dim=0).double().numpy()
        self.weights_ = self.weights_ / self.weights_.sum()

    # -- combining ------------------------------------------------------------------------
    def _combine(self, preds: PredictionSet) -> np.ndarray:
        with torch.no_grad():
            out = self.to_torch()(torch.tensor(np.asarray(preds.scores), dtype=torch.float32))
        return out.double().numpy()

    def member_weights(self, predictions: PredictionSet | None = None) -> tuple[dict[str, float], str] | None:
        """The gate each member gets, averaged over ``predictions`` (the validation samples)."""
        if predictions is None:
            return None
        gates = self.sample_weights(predictions).mean(axis=1)
        return dict(zip(self.names_, map(float, gates))), "average gate on the validation samples"

    def sample_weights(self, predictions: PredictionSet | np.ndarray) -> np.ndarray:
        """Per-sample gate values, float array [members, samples]; each column sums to one."""
        self._check_fitted()
        preds = self._align(as_prediction_set(predictions))
        x = member_features(np.asarray(preds.scores, dtype=np.float32), self.task_, self.features)
        with torch.no_grad():
            gates = self.network_(torch.from_numpy(x.astype(np.float32)))
        return gates.double().numpy().T

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        floor = feature_floor(1 if self.task_ == "multilabel" else self.n_outputs_)
        return GatingModule(copy.deepcopy(self.network_).eval(), self.task_, self.features, floor)

    # -- saving ----------------------------------------------------------------------------
    def fitted_state(self) -> dict[str, Any]:
        """Learned attributes with the network as numpy arrays under ``network_state_``."""
        state = super().fitted_state()
        network = state.pop("network_", None)
        if network is None:  # not fitted
            return state
        state["network_state_"] = {
            k: v.detach().cpu().numpy().copy() for k, v in network.state_dict().items()
        }
        return state

    def set_fitted_state(self, state: dict[str, Any]) -> Gating:
        """Restore :meth:`fitted_state`: rebuild the network from the parameters and load it."""
        state = dict(state)
        arrays = state.pop("network_state_")
        super().set_fitted_state(state)
        sizes = (int(self.n_features_), int(self.n_members_), int(self.hidden))
        expected = {
            "hidden_layer.weight": (sizes[2], sizes[0]),
            "output_layer.weight": (sizes[1], sizes[2]),
        }
        found = {k: tuple(np.shape(arrays.get(k))) for k in expected}
        if found != expected:  # checked before building: the sizes may come from a hostile file
            raise StrategyError(
                f"Gating state holds {found}, but n_features_={sizes[0]}, n_members_={sizes[1]} and "
                f"hidden={sizes[2]} need {expected}; the saved strategy is inconsistent"
            )
        network = GateNetwork(*sizes)
        try:
            network.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()})
        except RuntimeError as exc:
            raise StrategyError(f"Gating state does not fit its network: {exc}") from None
        self.network_ = network.eval()
        return self


class GateNetwork(nn.Module):
    """Member features [batch, features] -> gates [batch, members] (softmax over members)."""

    mean: torch.Tensor  # a buffer
    scale: torch.Tensor  # a buffer

    def __init__(self, n_features: int, n_members: int, hidden: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.hidden_layer = nn.Linear(n_features, hidden)
        self.output_layer = nn.Linear(hidden, n_members)
        with torch.no_grad():  # uniform gates at the start: training begins from the mean
            self.output_layer.weight.zero_()
            self.output_layer.bias.zero_()

    def standardise_with(self, features: torch.Tensor) -> None:
        """Set the input standardisation from fit features [samples, features]."""
        with torch.no_grad():
            self.mean.copy_(features.mean(dim=0))
            self.scale.copy_(features.std(dim=0, unbiased=False).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden_layer((features - self.mean) / self.scale))
        return torch.softmax(self.output_layer(h), dim=-1)


class GatingModule(nn.Module):
    """Tensor rule of :class:`Gating`: scores [members, batch, outputs] -> [batch, outputs]."""

    def __init__(self, network: GateNetwork, task: str, features: str, floor: float):
        super().__init__()
        self.network = network
        self.task = task
        self.features = features
        self.floor = floor

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        features = torch_member_features(scores, self.task, self.features, self.floor)
        gates = self.network(features)  # [batch, members]
        return (gates.transpose(0, 1).unsqueeze(-1) * scores).sum(dim=0)


@contextlib.contextmanager
def _few_threads_if_small(n_elements: int) -> Iterator[None]:
    """Train on one intra-op thread when the inputs are small, then restore the setting.

    Each step of a small full-batch gate takes microseconds; waking a thread pool costs
    more than that, and far more when other processes share the cores.
    """
    if n_elements > _SMALL_INPUT_ELEMENTS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _target_tensor(y: np.ndarray, task: str) -> torch.Tensor:
    if task == "classification":
        return torch.from_numpy(np.asarray(y, dtype=np.int64))
    return torch.from_numpy(np.asarray(y, dtype=np.float32))


def _mixture_loss(task: str):
    """Loss of the gated mixture: gates [batch, members], scores [members, batch, outputs]."""

    def mix(gates: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return (gates.transpose(0, 1).unsqueeze(-1) * scores).sum(dim=0)

    if task == "classification":

        def nll(gates: torch.Tensor, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            p_true = mix(gates, scores).gather(1, y.view(-1, 1)).squeeze(1)
            return -torch.log(p_true.clamp_min(EPS)).mean()

        return nll
    if task == "multilabel":

        def bce(gates: torch.Tensor, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            p = mix(gates, scores)
            return -(y * torch.log(p.clamp_min(EPS)) + (1 - y) * torch.log((1 - p).clamp_min(EPS))).mean()

        return bce

    def mse(gates: torch.Tensor, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((mix(gates, scores) - y) ** 2).mean()

    return mse

"""The YAML of ``modelfusion train``: data, the ``model:`` section (encoders, fusion, head), training.

Validated like the ``run`` config: every problem at once with its YAML path, unknown keys with a
did-you-mean, ``${VAR}`` from the environment, paths relative to the config file.

Examples
--------
.. code-block:: yaml

    name: instructions
    data: {source: builtin:digit_instructions}
    model:
      encoders:
        image: {type: module, architecture: "modelfusion.examples.digit_instructions:digit_cnn", input_shape: [1, 8, 8]}
        text: {type: words, vocabulary: auto, width: 64}
      fusion: [concat, gated, film, late]  # each trained and compared, with each modality alone
      head: {hidden: [128]}
    training: {epochs: 30, lr: 0.003}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelfusion.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainDataConfig(_Strict):
    """``builtin:digit_instructions`` or a manifest (CSV/TSV/Parquet) read by MultimodalDataset."""

    source: str = Field(min_length=1, max_length=4096)
    columns: dict[str, str | list[str]] = Field(default_factory=dict, description="{modality: column(s)}")
    label: str = "label"
    kinds: dict[str, Literal["image", "text", "tabular"]] | None = None
    image_size: int | None = Field(None, ge=1, le=8192)
    channels: Literal[1, 3] | None = None
    missing: Literal["skip", "embed"] = "skip"
    bad_images: Literal["fail", "skip"] = "fail"
    test: float = Field(0.3, gt=0, lt=1, description="held-out fraction (the builtin splits by image)")
    per_image: int = Field(4, ge=1, le=100, description="builtin:digit_instructions: instructions per image")


class ModelSpecConfig(_Strict):
    """The fusion model as the spec format of :meth:`MultimodalFusion.spec`, with several fusions."""

    encoders: dict[str, dict[str, Any]] = Field(min_length=1)
    fusion: list[str] = Field(default_factory=lambda: ["concat"], min_length=1)
    dim: int = Field(128, ge=1, le=65536)
    fusion_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="{fusion: its options}, e.g. {cross_attention: {heads: 4}}"
    )
    late_strategy: str = Field(
        "mean", description="fusion 'late': the prediction-level strategy of the heads"
    )
    head: dict[str, Any] = Field(default_factory=dict)
    single_modality: bool = Field(True, description="also train each encoder alone, for the comparison")

    @field_validator("late_strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        from modelfusion.strategies import STRATEGY_REGISTRY

        if value not in STRATEGY_REGISTRY:
            raise ValueError(f"unknown strategy {value!r}; use one of {', '.join(sorted(STRATEGY_REGISTRY))}")
        return value

    @field_validator("fusion", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("fusion")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from modelfusion.multimodal.operators import FUSION_OPERATORS

        unknown = [v for v in value if v not in FUSION_OPERATORS and v != "late"]
        if unknown:
            raise ValueError(f"unknown fusion {unknown}; use {', '.join(FUSION_OPERATORS)} or late")
        return value


class TrainingConfig(_Strict):
    """The shared Trainer's settings."""

    epochs: int = Field(30, ge=1, le=100_000)
    lr: float = Field(3e-3, gt=0, le=10)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    scheduler: Literal["cosine", "onecycle"] | None = None
    patience: int | None = Field(None, ge=1, description="early stopping on the held-out loss")
    weight_decay: float = Field(0.0, ge=0, le=10)


class TrainConfig(_Strict):
    """The whole ``modelfusion train`` config."""

    name: str = Field("multimodal", min_length=1, max_length=200)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    output_dir: str = Field("runs/train", min_length=1, max_length=4096)
    data: TrainDataConfig
    model: ModelSpecConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    export: bool = Field(True, description="save the best model with its ONNX graphs (fp32, int8)")
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    def resolve(self, path: str) -> Path:
        """``path`` relative to the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a ``modelfusion train`` YAML; raises ConfigError listing every problem."""
    from modelfusion.config import describe_error, interpolate_env, read_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", [f"{path}: not found"])
    raw = read_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(raw, dict):
        problem = f"{path}: expected a mapping at the top level, got {type(raw).__name__}"
        raise ConfigError(problem, [problem])
    problems: list[str] = []
    raw = interpolate_env(raw, (), problems, {})
    config = None
    try:
        config = TrainConfig.model_validate({**raw, "base_dir": path.parent.resolve()})
    except ValidationError as e:
        problems.extend(describe_error(err, TrainConfig) for err in e.errors())
    if problems or config is None:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{path} has {len(problems)} problem(s):\n{lines}", problems)
    return config


__all__ = ["ModelSpecConfig", "TrainConfig", "TrainDataConfig", "TrainingConfig", "load_train_config"]

"""The YAML configuration of a fusion run, validated with pydantic.

Every problem is reported at once with its YAML path (``members[2].path: file not
found``); unknown keys get a did-you-mean suggestion; ``${VAR}`` and ``${VAR:-default}``
are replaced from the environment. Relative paths are resolved against the config file.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from modelfusion.data.datasets import FORMATS
from modelfusion.errors import ConfigError
from modelfusion.importpath import is_import_path
from modelfusion.strategies import STRATEGY_REGISTRY
from modelfusion.strategies.base import check_strategy_params

#: Rows per scoring call: beyond this a batch no longer fits in memory for any real model.
MAX_BATCH_SIZE = 1_000_000
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Strict):
    """How one data source is split; the ``train`` part is left for training members."""

    validation: float = Field(0.25, gt=0, lt=1, description="fraction used to fit the fusion")
    test: float = Field(0.25, gt=0, lt=1, description="fraction held out for the final report")
    seed: int | None = Field(None, description="default: the run's top-level seed")
    stratify: bool = True


def _check_format(value: str) -> str:
    """A ``format:`` value: ``auto`` or a format :func:`~modelfusion.data.load_dataset` reads."""
    if value not in ("auto", *FORMATS):
        raise ValueError(f"unknown format {value!r}; use auto, {', '.join(FORMATS)}")
    return value


class DataSourceConfig(_Strict):
    """One dataset: ``builtin:NAME``, a file/folder path, or a ``module:function`` factory."""

    source: str
    format: str = "auto"
    label: str | None = None
    features: list[str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    _known_format = field_validator("format")(_check_format)


class DataConfig(_Strict):
    """The data section: one ``source`` split into validation/test, or explicit ``validation`` and ``test``."""

    source: str | None = None
    format: str = "auto"
    label: str | None = None
    features: list[str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    split: SplitConfig = Field(default_factory=SplitConfig)
    validation: DataSourceConfig | None = None
    test: DataSourceConfig | None = None

    _known_format = field_validator("format")(_check_format)

    @model_validator(mode="after")
    def _one_layout(self) -> DataConfig:
        separate = (self.validation is not None, self.test is not None)
        if self.source is None and separate != (True, True):
            raise ValueError(
                "give data.source (split into validation/test) or both data.validation and data.test"
            )
        if self.source is not None and any(separate):
            raise ValueError("give data.source or data.validation + data.test, not both")
        return self

    def as_source(self) -> DataSourceConfig:
        """The single source of a split layout."""
        return DataSourceConfig(
            source=self.source or "",
            format=self.format,
            label=self.label,
            features=self.features,
            options=self.options,
        )


class MemberConfig(_Strict):
    """One member: a model file (or hub id) and how to load and feed it."""

    name: str | None = Field(None, min_length=1, max_length=200)
    path: str = Field(min_length=1, max_length=4096)
    framework: str | None = None
    trust: bool = False
    preprocess: dict[str, Any] | list[Any] | str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class StrategyConfig(_Strict):
    """A strategy by registry name with its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class FusionConfig(_Strict):
    """Which strategies to try and how to choose among them."""

    strategies: Literal["auto"] | list[str | StrategyConfig] = Field("auto", max_length=100)
    metric: str = Field("nll", max_length=64)
    cv: int = Field(5, ge=2, le=100)
    fallback: Literal["best_member", "strategy"] = Field(
        "best_member",
        description="when a single member beats every strategy on validation CV: ship that member alone, "
        "or the best strategy anyway",
    )

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, value: Any) -> Any:
        if value == "auto":
            return value

        for item in value:
            name = item if isinstance(item, str) else item.name
            if name.lower() not in STRATEGY_REGISTRY:
                close = difflib.get_close_matches(name.lower(), list(STRATEGY_REGISTRY), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown strategy {name!r}{hint}")
            if not isinstance(item, str):  # checked now, not after every member has been scored
                check_strategy_params(STRATEGY_REGISTRY[name.lower()], item.params)
        return value


class ReportConfig(_Strict):
    enabled: bool = True
    title: str | None = Field(None, max_length=300)


class DeployConfig(_Strict):
    """Serving files ``run`` also writes into the bundle.

    Each graph is measured on the test split (size, accuracy, latency) and its accuracy change
    against the fp32 graph on validation is recorded in the manifest.
    """

    onnx: bool = Field(False, description="the whole fused model as one ONNX graph, bundle/fused.onnx")
    quantize: Literal["dynamic", "static"] | None = Field(
        None, description="an int8 graph, bundle/fused.int8.onnx (implies onnx)"
    )
    fp16: bool = Field(False, description="a half-precision graph, bundle/fused.fp16.onnx (implies onnx)")

    @property
    def wanted(self) -> bool:
        """Whether anything is to be exported."""
        return self.onnx or self.quantize is not None or self.fp16


class AugmentConfig(_Strict):
    """Augmented copies of the student's training inputs, each scored by the teacher once."""

    copies: int = Field(4, ge=0, le=64, description="augmented copies of the training inputs")
    noise: float = Field(0.0, ge=0, description="Gaussian noise sigma added to every input value")
    shift: int = Field(0, ge=0, le=16, description="roll each image by up to this many pixels")
    image_shape: list[int] | None = Field(
        None, min_length=2, max_length=4, description="reshape flat rows to this for shift (e.g. [8, 8])"
    )
    clip: tuple[float, float] | None = Field(None, description="clip values into [low, high] after noise")
    function: str | None = Field(
        None, description="module:function, augment(X, rng) -> X', instead of noise/shift"
    )

    @model_validator(mode="after")
    def _changes_something(self) -> AugmentConfig:
        if self.copies and not (self.noise or self.shift or self.function):
            raise ValueError("augment makes copies but changes nothing: give noise, shift or function")
        if self.function is not None and (self.noise or self.shift):
            raise ValueError("give augment.function or noise/shift, not both")
        return self


class DistillConfig(_Strict):
    """``modelfusion distill``: the fused ensemble distilled into one small student, pruned, quantized."""

    student: str = Field("mlp", min_length=1, max_length=300, description="mlp | cnn | an architecture name")
    student_kwargs: dict[str, Any] = Field(default_factory=dict)
    temperature: float = Field(4.0, gt=0, le=100)
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the soft loss (1: no hard labels)")
    teacher_mode: Literal["mean", "per_teacher"] = "mean"
    epochs: int = Field(30, ge=1, le=10_000)
    lr: float = Field(3e-3, gt=0, le=10)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    batch_size: int = Field(128, ge=1, le=MAX_BATCH_SIZE)
    scheduler: Literal["cosine", "onecycle"] | None = "cosine"
    patience: int | None = Field(None, ge=1, description="early stopping on validation loss")
    data: DataSourceConfig | None = Field(
        None, description="the student's training data (default: the train part of data.split)"
    )
    augment: AugmentConfig | None = None
    hint_layers: dict[str, str] | None = Field(
        None,
        min_length=1,
        description="feature distillation: {student_layer: 'member:layer'} of a torch member of the teacher",
    )
    hint_weight: float = Field(1.0, gt=0, le=1000, description="weight of the hint (feature) loss")
    labels_only: bool = Field(True, description="also train the student on labels alone, for the table")
    prune: float | None = Field(None, gt=0, lt=1, description="fraction of the student's channels to remove")
    prune_epochs: int = Field(10, ge=1, le=10_000, description="distillation fine-tune after pruning")
    quantize: Literal["dynamic", "static"] | None = Field("dynamic", description="an int8 student graph")
    tensorboard: bool = Field(False, description="TensorBoard curves in output_dir/tensorboard/<student>")


class RunConfig(_Strict):
    """The whole ``fusion.yaml``."""

    name: str = Field("fusion", min_length=1, max_length=200)
    task: Literal["classification", "multilabel", "regression"] | None = None
    seed: int = Field(0, ge=0, le=2**32 - 1)
    output_dir: str = Field("runs/fusion", min_length=1, max_length=4096)
    cache_dir: str | None = Field(".modelfusion-cache", max_length=4096)
    batch_size: int = Field(256, ge=1, le=MAX_BATCH_SIZE)
    data: DataConfig
    members: list[MemberConfig] = Field(min_length=1, max_length=1000)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    #: read by ``modelfusion distill`` (``run`` ignores it)
    distill: DistillConfig | None = None

    #: Folder relative paths are resolved against (the config file's folder).
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @field_validator("members", mode="before")
    @classmethod
    def _some_members(cls, value: Any) -> Any:
        if value is None or value == []:
            raise ValueError(
                "list at least one trained model, e.g. members: [{path: ../models/mymodel.onnx}]"
            )
        return value

    #: The file the config was read from (None when parsed from a mapping).
    _config_file: Path | None = PrivateAttr(None)
    #: YAML path -> the string as written, for values that had ``${VAR}`` (see :func:`config_record`).
    _unexpanded: dict[tuple[Any, ...], str] = PrivateAttr(default_factory=dict)

    @property
    def config_file(self) -> Path | None:
        """The YAML file this config was read from, when it was read from one."""
        return self._config_file

    def resolve(self, path: str | None) -> Path | None:
        """``path`` relative to the config file's folder (absolute paths unchanged)."""
        if path is None:
            return None
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else (self.base_dir / p)


#: Limits on a config file: its size, how deep it nests, how many values it holds once
#: YAML aliases are expanded (a "billion laughs" file is a few hundred bytes that expand to
#: 10^9 values), and the length of one string.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_VALUES = 200_000
MAX_STRING = 64 * 1024


def load_config(path: str | Path) -> RunConfig:
    """Read, interpolate and validate a YAML config; raise ConfigError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", [f"{path}: not found"])
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        problem = f"{path}: {size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,} bytes"
        raise ConfigError(problem, [problem])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        problem = f"{path}: not UTF-8 text (byte {e.start})"
        raise ConfigError(problem, [problem]) from None
    raw = read_yaml(text, str(path))
    config = parse_config(raw, base_dir=path.parent.resolve(), source=str(path))
    config._config_file = path.resolve()
    return config


def read_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` with limits on nesting depth and on the values aliases expand to.

    The events are checked first, without building anything, so a hostile file is refused
    in milliseconds with the line where it goes too far.
    """
    try:
        _check_yaml_size(text, source)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = f"{source}{where}: not valid YAML: {getattr(e, 'problem', e)}"
        raise ConfigError(problem, [problem]) from None


def _check_yaml_size(text: str, source: str) -> None:
    open_sizes: list[list[Any]] = []  # [values so far, anchor] per open mapping/sequence
    anchors: dict[str, int] = {}
    open_anchors: set[str] = set()  # an alias to one of these would make the value contain itself

    def fail(event: Any, what: str) -> None:
        line = event.start_mark.line + 1
        problem = f"{source} (line {line}): {what}"
        raise ConfigError(problem, [problem])

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            open_sizes.append([1, event.anchor])
            if event.anchor is not None:
                open_anchors.add(event.anchor)
            if len(open_sizes) > MAX_DEPTH:
                fail(event, f"nested more than {MAX_DEPTH} levels deep; a config is a few levels deep")
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            size, anchor = open_sizes.pop()
            open_anchors.discard(anchor)
        elif isinstance(event, yaml.ScalarEvent):
            size, anchor = 1, event.anchor
            if len(event.value) > MAX_STRING:
                fail(event, f"a value of {len(event.value):,} characters; the limit is {MAX_STRING:,}")
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in open_anchors:
                fail(event, f"alias *{event.anchor} refers to a value that contains it (a recursive alias)")
            size, anchor = anchors.get(event.anchor, 1), None
        else:
            continue
        if anchor is not None:
            anchors[anchor] = size
        if open_sizes:
            open_sizes[-1][0] += size
        if size > MAX_VALUES or (open_sizes and open_sizes[-1][0] > MAX_VALUES):
            fail(
                event,
                f"YAML aliases expand to more than {MAX_VALUES:,} values (an alias bomb?); write the values "
                "out or use fewer aliases",
            )


def parse_config(raw: Any, *, base_dir: Path | None = None, source: str = "config") -> RunConfig:
    """Validate an already-parsed config mapping (see :func:`load_config`)."""
    if not isinstance(raw, dict):
        problem = f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        raise ConfigError(problem, [problem])
    problems: list[str] = []
    unexpanded: dict[tuple[Any, ...], str] = {}
    raw = interpolate_env(raw, (), problems, unexpanded)
    base_dir = base_dir or Path.cwd()
    config = None
    try:
        config = RunConfig.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as e:
        problems.extend(describe_error(err) for err in e.errors())
    problems.extend(_check_paths(raw, base_dir))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{source} has {len(problems)} problem(s):\n{lines}", problems)
    assert config is not None
    config._unexpanded = unexpanded
    return config


def with_overrides(config: RunConfig, changes: dict[str, Any], *, source: str = "overrides") -> RunConfig:
    """``config`` with dotted keys replaced (``{"fusion.strategies": ["mean"]}``), validated again.

    Used by ``modelfusion run --output-dir / --no-cache / --strategies``; the overridden
    values are saved as given (they did not come from the environment).
    """
    if not changes:
        return config
    raw = config.model_dump(mode="python", exclude={"base_dir"})
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    try:
        updated = RunConfig.model_validate({**raw, "base_dir": config.base_dir})
    except ValidationError as e:
        problems = [describe_error(err) for err in e.errors()]
        raise ConfigError(f"{source}: " + "; ".join(problems), problems) from None
    updated._config_file = config._config_file
    updated._unexpanded = {
        k: v for k, v in config._unexpanded.items() if ".".join(map(str, k)) not in changes
    }
    return updated


def config_record(config: RunConfig) -> dict[str, Any]:
    """The config as saved with a run (``config.yaml``, the report, the bundle): ``${VAR}`` unexpanded.

    Values that came from the environment keep the ``${VAR}`` form they were written in, so
    a secret substituted into the config is never written to disk.
    """
    record = config.model_dump(mode="json", exclude={"base_dir"})
    for loc, text in config._unexpanded.items():
        node: Any = record
        for part in loc[:-1]:
            node = node[part] if isinstance(node, dict) and part in node or isinstance(node, list) else None
            if node is None:
                break
        if isinstance(node, dict) and loc[-1] in node or isinstance(node, list) and loc[-1] < len(node):
            node[loc[-1]] = text
    return record


def dump_config(config: RunConfig) -> str:
    """The config as YAML (what the run used, with ``${VAR}`` values unexpanded: :func:`config_record`)."""
    return yaml.safe_dump(config_record(config), sort_keys=False)


def interpolate_env(value: Any, loc: tuple[Any, ...], problems: list[str], unexpanded: dict) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in every string of ``value`` from the environment; unset
    variables are added to ``problems`` with their YAML path, originals recorded in ``unexpanded``."""
    if isinstance(value, dict):
        return {k: interpolate_env(v, (*loc, k), problems, unexpanded) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_env(v, (*loc, i), problems, unexpanded) for i, v in enumerate(value)]
    if isinstance(value, str):
        where = _loc(loc)
        if _ENV.search(value):
            unexpanded[loc] = value

        def sub(m: re.Match) -> str:
            var, default = m.group(1), m.group(2)
            if var in os.environ:
                return os.environ[var]
            if default is not None:
                return default
            problems.append(f"{where}: environment variable {var} is not set (use ${{{var}:-default}})")
            return m.group(0)

        return _ENV.sub(sub, value)
    return value


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "StrategyConfig", "list[union[str,StrategyConfig]]", "literal['auto']"):
            continue  # pydantic union branch names, not YAML keys
        else:
            out += f".{part}" if out else str(part)
    return out


def describe_error(err: Mapping[str, Any], root: type[BaseModel] | None = None) -> str:
    """One pydantic error as ``yaml.path: message`` (unknown keys with a did-you-mean from ``root``'s fields)."""
    loc = tuple(err["loc"])
    where = _loc(loc)
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        parent = _model_at(loc[:-1], root or RunConfig)
        valid = list(parent.model_fields) if parent else []
        valid = [v for v in valid if v != "base_dir"]
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{where}: unknown key{hint} (valid keys: {', '.join(valid)})"
    if err["type"] == "missing":
        return f"{where}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}"


def _model_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nxt = None
        for c in candidates:
            for cc in [c, *getattr(c, "__args__", ())]:
                if isinstance(cc, type) and issubclass(cc, BaseModel):
                    nxt = cc
        if nxt is None:
            return None
        model = nxt
    return model


def _check_paths(raw: dict[str, Any], base_dir: Path) -> list[str]:
    """Existence checks on member files (hub ids and builtins are left to the loaders)."""
    problems = []
    members = raw.get("members")
    if isinstance(members, list):
        for i, m in enumerate(members):
            if not isinstance(m, dict) or not isinstance(m.get("path"), str):
                continue
            path = m["path"]
            framework = str(m.get("framework") or "").lower()
            if framework in ("hf", "transformers", "huggingface") and not path.startswith((".", "/", "~")):
                continue  # may be a hub id
            p = Path(os.path.expanduser(path))
            p = p if p.is_absolute() else base_dir / p
            if not p.exists():
                problems.append(f"members[{i}].path: {path!r} does not exist (relative to {base_dir})")
    data = raw.get("data")
    distill = raw.get("distill")
    if isinstance(data, dict):
        for key, section in (
            ("data", data),
            ("data.validation", data.get("validation")),
            ("data.test", data.get("test")),
            ("distill.data", distill.get("data") if isinstance(distill, dict) else None),
        ):
            if not isinstance(section, dict) or not isinstance(section.get("source"), str):
                continue
            src = section["source"]
            if src.startswith("builtin:") or section.get("format") == "factory" or is_import_path(src):
                continue
            p = Path(os.path.expanduser(src))
            p = p if p.is_absolute() else base_dir / p
            if not p.exists():
                problems.append(f"{key}.source: {src!r} does not exist (relative to {base_dir})")
    return problems

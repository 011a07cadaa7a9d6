"""ONNX Runtime sessions that honour the settings a graph carries in its metadata.

Quantized graphs run fastest with some of ONNX Runtime's graph optimizers off (see
:mod:`modelfusion.runtime.quantize`). The quantizer records them in the graph's
``metadata_props`` under :data:`SETTINGS_KEY`, so every session made through
:func:`open_session` — the fused executor's and an ONNX member's alike — applies them, and a
quantized file moved elsewhere keeps running the way it was measured.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from modelfusion.errors import ModelFusionWarning

SETTINGS_KEY = "modelfusion.ort_session"


def write_settings(
    model: Any, *, config: dict[str, str] | None = None, disabled_optimizers: list[str] | None = None
) -> None:
    """Record session settings in an ``onnx.ModelProto``'s metadata (replacing earlier ones).

    Examples
    --------
    >>> write_settings(proto, config={"session.disable_quant_qdq": "1"})
    """
    settings = {"config": dict(config or {}), "disabled_optimizers": list(disabled_optimizers or [])}
    kept = [p for p in model.metadata_props if p.key != SETTINGS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = SETTINGS_KEY, json.dumps(settings, sort_keys=True)


def read_settings(source: str | Path | bytes | Any) -> dict[str, Any]:
    """The settings recorded in a model (path, bytes or ModelProto); empty when there are none.

    Only the graph's header is parsed: external weight files are not read.
    """
    import onnx

    if hasattr(source, "metadata_props"):
        model = source
    else:
        try:
            if isinstance(source, (bytes, bytearray)):
                model = onnx.load_from_string(bytes(source))
            else:
                model = onnx.load(str(source), load_external_data=False)
        except Exception:  # let onnxruntime report what is wrong with the file
            return {}
    value = next((p.value for p in model.metadata_props if p.key == SETTINGS_KEY), None)
    if value is None:
        return {}
    try:
        settings = json.loads(value)
    except ValueError:
        return {}
    return settings if isinstance(settings, dict) else {}


def open_session(
    source: str | Path | bytes | Any,
    providers: list[str],
    *,
    threads: int | None = None,
    spinning: bool = True,
) -> Any:
    """An ``onnxruntime.InferenceSession`` with the settings the graph records applied.

    ``threads``: intra-op threads (default: ONNX Runtime's, one per core); ``spinning=False``:
    idle pool threads sleep instead of spin-waiting, for a process that needs its cores for other
    work between calls (a server's event loop).

    Examples
    --------
    >>> open_session("bundle/fused.int8.onnx", ["CPUExecutionProvider"]).get_inputs()[0].name
    'input'
    """
    import onnxruntime as ort

    if hasattr(source, "SerializeToString"):
        settings, source = read_settings(source), source.SerializeToString()
    else:
        source = str(source) if isinstance(source, Path) else source
        settings = read_settings(source)
    options, disabled = session_options(settings)
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(source, options, providers=providers, disabled_optimizers=disabled or None)


def session_options(settings: dict[str, Any]) -> tuple[Any, list[str]]:
    """``SessionOptions`` and the optimizers to disable, from a graph's recorded settings.

    The settings come from the file, which may come from anywhere: only the entries our
    quantizer writes are applied (:data:`ALLOWED_CONFIG`, optimizer names); any other entry,
    such as one naming a file ONNX Runtime would write, is ignored with a warning.

    Examples
    --------
    >>> options, disabled = session_options(read_settings("bundle/fused.int8.onnx"))
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    config = settings.get("config") or {}
    ignored = []
    for key, value in config.items() if isinstance(config, dict) else []:
        if ALLOWED_CONFIG.get(str(key)) is not None and str(value) in ALLOWED_CONFIG[str(key)]:
            options.add_session_config_entry(str(key), str(value))
        else:
            ignored.append(str(key))
    names = settings.get("disabled_optimizers") or []
    disabled = (
        [n for n in names if isinstance(n, str) and _OPTIMIZER_NAME.match(n)]
        if isinstance(names, list)
        else []
    )
    if ignored or (isinstance(names, list) and len(disabled) != len(names)):
        warnings.warn(
            f"the ONNX graph's {SETTINGS_KEY} metadata holds settings modelfusion does not write "
            f"({', '.join(ignored) or 'optimizer names'}); they are ignored",
            ModelFusionWarning,
            stacklevel=3,
        )
    return options, disabled


#: Session config entries a graph may ask for, with the values allowed: what the quantizer writes.
ALLOWED_CONFIG: dict[str, tuple[str, ...]] = {"session.disable_quant_qdq": ("0", "1")}
_OPTIMIZER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")

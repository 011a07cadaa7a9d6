"""Save and load a feature-level fusion model as a bundle folder: spec, safetensors, checksums.

Layout::

    model/
      manifest.json            # format, the model's spec, classes, sha256 of every file
      bundle.sha256            # sha256 of manifest.json
      weights.safetensors      # every parameter and buffer
      encoders/<name>/...      # what an encoder needs beside weights (a tokenizer, config.json)
      fused.onnx               # optional: the whole model as one graph (several inputs)
      fused.int8.onnx          # optional: the same, int8 weights

Nothing is pickled and nothing downloads on load: the model is rebuilt from its spec
(encoders by name, plain arguments, :func:`~modelfusion.multimodal.specs.build_encoder`),
then the weights are read (:meth:`MultimodalFusion.load <modelfusion.multimodal.MultimodalFusion.load>`). The folder is written beside its target and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from modelfusion.errors import BundleError
from modelfusion.files import current_umask, replace_dir
from modelfusion.manifest import MANIFEST, bundle_files, inside, verify_digest, write_manifest
from modelfusion.members.base import sha256_file
from modelfusion.version import __version__

if TYPE_CHECKING:
    from modelfusion.multimodal.fusion import MultimodalFusion

FORMAT = "modelfusion-multimodal"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
#: The graphs a bundle may hold, by precision.
GRAPHS = {"fp32": "fused.onnx", "int8": "fused.int8.onnx"}


def save_multimodal(
    model: MultimodalFusion,
    path: str | Path,
    *,
    classes: Sequence[Any] | None = None,
    example: Mapping[str, Any] | None = None,
    precisions: Sequence[str] = ("fp32", "int8"),
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (built with ``MultimodalFusion(encoders=...)``) as a bundle folder at ``path``.

    Parameters
    ----------
    classes : the label of each output (default ``0..num_classes-1``)
    example : one raw batch ``{modality: values}``; with it the model is also exported to one
        ONNX graph per precision in ``precisions`` ("fp32", "int8"), each checked against eager
    metadata : plain values kept in the manifest (what it was trained on, scores)

    Examples
    --------
    >>> save_multimodal(model, "runs/mm/model", example={"image": x[:4], "text": texts[:4]})
    >>> load_multimodal("runs/mm/model")
    """
    from safetensors.torch import save_model

    path = Path(path)
    spec = model.spec()
    unknown = [p for p in precisions if p not in GRAPHS]
    if unknown:
        raise BundleError(f"precisions {unknown}: expected some of {list(GRAPHS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    try:
        for name, encoder in model.encoders.items():
            spec["encoders"][name] = cast(Any, encoder).save_files(tmp / "encoders" / name)
        save_model(model, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        graphs = _write_graphs(model, tmp, example, precisions) if example is not None else {}
        files, _ = bundle_files(tmp)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "modelfusion_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": spec,
            "classes": list(classes) if classes is not None else list(range(spec["num_classes"] or 0)),
            "graphs": graphs,
            "metadata": dict(metadata or {}),
            "files": {rel: sha256_file(tmp / rel) for rel in sorted(files)},
        }
        write_manifest(tmp, manifest, default=str)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_graphs(
    model: MultimodalFusion, folder: Path, example: Mapping[str, Any], precisions: Sequence[str]
) -> dict[str, str]:
    from modelfusion.multimodal.export import export_multimodal_onnx
    from modelfusion.runtime.quantize import quantize_onnx

    graphs = {"fp32": GRAPHS["fp32"]}
    export_multimodal_onnx(model, folder / GRAPHS["fp32"], example)
    if "int8" in precisions:
        quantize_onnx(folder / GRAPHS["fp32"], folder / GRAPHS["int8"], mode="dynamic")
        graphs["int8"] = GRAPHS["int8"]
    if "fp32" not in precisions:
        (folder / GRAPHS["fp32"]).unlink()
        del graphs["fp32"]
    return graphs


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The verified manifest of a multimodal bundle: digest, format and every file's checksum."""
    import json

    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise BundleError(f"{path} is not a multimodal bundle: it has no {MANIFEST}")
    verify_digest(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BundleError(f"bundle {path}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(
            f"bundle {path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r} is not "
            f"{FORMAT!r}; a fused-predictions bundle loads with FusedModel.load"
        )
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise BundleError(
            f"bundle {path} has format version {manifest['format_version']}; this modelfusion reads up to "
            f"{FORMAT_VERSION}: upgrade modelfusion"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or WEIGHTS not in files:
        raise BundleError(f"bundle {path}: the manifest lists no {WEIGHTS}")
    for rel, digest in files.items():
        target = inside(path, rel, "file")
        if not target.is_file():
            raise BundleError(f"bundle {path}: {rel} is missing")
        if sha256_file(target) != digest:
            raise BundleError(f"bundle {path}: {rel} fails its sha256 check (changed after it was written)")
    return manifest


def load_saved_weights(model: MultimodalFusion, path: str | Path) -> None:
    """Read a bundle's ``weights.safetensors`` into ``model`` (built from the bundle's spec), strictly."""
    from safetensors.torch import load_model

    try:
        load_model(model, str(Path(path) / WEIGHTS), strict=True, device="cpu")
    except RuntimeError as exc:
        raise BundleError(
            f"bundle {path}: {WEIGHTS} does not fit the model its manifest describes: {exc}"
        ) from None


__all__ = ["FORMAT", "GRAPHS", "load_saved_weights", "read_manifest", "save_multimodal"]

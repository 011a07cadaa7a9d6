"""The saved fused model: a folder with a manifest, member files and checksums.

Layout::

    bundle/
      manifest.json            # members, strategy, classes, versions, sha256 of every file
      bundle.sha256            # sha256 of manifest.json (integrity, see modelfusion.manifest)
      members/<name>/...       # each member's own format: safetensors, onnx, skops, ...
      strategy/state.safetensors

Nothing is pickled. Saving writes into a temporary sibling folder and renames it into
place, so an interrupted save never leaves a half-written bundle. Loading validates the
manifest, its digest, every path and every checksum before it reads a member file
(:mod:`modelfusion.manifest`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from modelfusion.data import build_preprocessor
from modelfusion.errors import BundleError, ModelFusionError, ModelFusionWarning
from modelfusion.files import atomic_path, current_umask, defer_interrupts, replace_dir
from modelfusion.manifest import (
    DERIVED_GRAPH,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    bundle_files,
    inside,
    manifest_digest,
    parse_manifest,
    verify_digest,
    write_manifest,
)
from modelfusion.members.base import sha256_file
from modelfusion.members.hf import check_saved_configs
from modelfusion.members.loading import load_saved_member
from modelfusion.recovery import bundle_lock, recover_bundle
from modelfusion.serialization import load_strategy, save_strategy
from modelfusion.version import __version__

if TYPE_CHECKING:
    from modelfusion.fused import FusedModel


def save_bundle(model: FusedModel, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write ``model`` as a bundle folder at ``path`` atomically; returns the path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise BundleError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with bundle_lock(path):
        for action in recover_bundle(path):
            warnings.warn(action, ModelFusionWarning, stacklevel=3)
        check_bundle_target(path)
        return _save_locked(model, path)


def _save_locked(model: FusedModel, path: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; a bundle is shared like any folder
    try:
        members = []
        for i, member in enumerate(model.members):
            rel = Path("members") / f"{i:02d}-{_safe(member.name)}"
            (tmp / rel).mkdir(parents=True)
            spec = member.save(tmp / rel)
            preprocess = _bundled_preprocess(_preprocess_spec(member), tmp / rel)
            members.append({**spec, "dir": rel.as_posix(), "preprocess": preprocess})
        strategy_spec = save_strategy(model.strategy, tmp / "strategy")
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "task": model.task,
            "classes": None if model.classes is None else model.classes.tolist(),
            "members": members,
            "strategy": strategy_spec,
            "metadata": model.metadata,
            "versions": library_versions(),
            "checksums": files,
        }
        write_manifest(tmp, manifest, default=_json_default)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_bundle(
    path: str | Path, *, trust: bool = False, expected_digest: str | None = None
) -> tuple[list[Any], Any, dict[str, Any] | None]:
    """Read a bundle folder, verifying it whole before any member file is read: ``(members, strategy,
    metadata)``, what :meth:`~modelfusion.fused.FusedModel.load` builds the model from.

    Checks, in order: the manifest's schema; ``bundle.sha256`` (and ``expected_digest``, the
    manifest's sha256 you pinned, when given); that every path it names stays inside the
    bundle; that every file has a checksum that matches and no file is uncovered. A derived
    graph (``fused*.onnx``) whose checksum fails is ignored with a warning, not a reason to
    refuse the bundle: the members still define the model.

    ``trust=True`` allows what runs code: architectures outside the known list, pickled
    ``.pt2`` entries, TensorFlow SavedModels, strategy files with non-sklearn types.
    """
    manifest, path = read_manifest(path)
    verify_digest(path, expected_digest, format_version=manifest["format_version"])
    damaged = verify_checksums(path, manifest)
    for rel in damaged:
        warnings.warn(
            f"bundle {path}: {rel} fails its checksum and is ignored (rebuild it with `modelfusion export`)",
            ModelFusionWarning,
            stacklevel=2,
        )
    try:
        return _load_verified(path, manifest, trust)
    except ModelFusionError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        # a framework refusing a file that passed every check: still the bundle's fault, not a crash
        raise BundleError(f"bundle {path} could not be loaded ({type(e).__name__}: {e})") from e


def _load_verified(
    path: Path, manifest: dict[str, Any], trust: bool
) -> tuple[list[Any], Any, dict[str, Any] | None]:

    members = []
    for i, spec in enumerate(manifest["members"]):
        folder = inside(path, spec["dir"], f"members[{i}].dir")
        inside(folder, spec["file"], f"members[{i}].file")
        member = load_saved_member(folder, spec, trust=trust)
        if spec.get("preprocess") is not None:
            for tokenizer in _tokenizer_paths(spec["preprocess"]):
                where = inside(folder, tokenizer, f"members[{i}].preprocess tokenizer")
                if where.is_dir() and not trust:  # its tokenizer_config.json may name files elsewhere
                    check_saved_configs(where, owner=f"members[{i}].preprocess tokenizer")
            member.preprocess = build_preprocessor(spec["preprocess"], base_dir=folder)
            member.preprocess_spec = spec["preprocess"]
        members.append(member)
    strategy = load_strategy(manifest["strategy"], inside(path, "strategy", "strategy"), trust=trust)
    return members, strategy, manifest.get("metadata")


def read_manifest(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The parsed, schema-checked manifest of a bundle folder, with a clear error when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path} is not a bundle folder (it does not exist or is a file)")
    return parse_manifest(path), path


def update_manifest(
    path: str | Path, key: str, value: Any, new_files: list[str] | tuple[str, ...] = ()
) -> None:
    """Set ``manifest[key] = value`` and record the sha256 of ``new_files`` (paths relative to the bundle).

    The files must already be in place; the manifest is replaced atomically, so a reader sees
    the old manifest or the new one, never half of one. Used by the runtime to add
    ``fused.onnx`` and quantized graphs to a saved bundle.
    """
    manifest, path = read_manifest(path)
    manifest[key] = value
    checksums = manifest.setdefault("checksums", {})
    for rel in new_files:
        if not (path / rel).is_file():
            raise BundleError(f"cannot record {rel} in {path / MANIFEST}: the file does not exist")
        checksums[rel] = sha256_file(path / rel)
    write_manifest(path, manifest, default=_json_default)


class staged_bundle_file:
    """A new file for a saved bundle, written under a temporary name and added with its record.

    On success the file is renamed to ``rel`` and its checksum recorded, together with
    :attr:`metadata` when the block set it (the manifest's ``metadata``), with Ctrl-C held
    until both are done (:func:`~modelfusion.files.defer_interrupts`): the bundle always
    verifies, holding the old file and record or the new ones. On error or interrupt (in
    the block, or a manifest that cannot be written) the temporary file is removed, the
    old file is put back and the bundle is as it was.

    Examples
    --------
    >>> with staged_bundle_file(bundle, "fused.int8.onnx") as staged:
    ...     quantize_onnx(bundle / "fused.onnx", staged.path)
    ...     staged.metadata = {**old_metadata, "runtime": {...}}
    """

    def __init__(self, bundle: str | Path, rel: str):
        self.bundle, self.rel = Path(bundle), rel
        self.metadata: dict[str, Any] | None = None
        self._tmp = atomic_path(self.bundle / rel, suffix=".tmp" + Path(rel).suffix)

    def __enter__(self) -> staged_bundle_file:
        read_manifest(self.bundle)  # a clear error before any work when it is not a bundle
        self._lock = bundle_lock(self.bundle).__enter__()
        try:
            for action in recover_bundle(self.bundle):
                warnings.warn(action, ModelFusionWarning, stacklevel=2)
            self.path = Path(self._tmp.__enter__())
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._finish(exc_type, exc, tb)
        finally:
            self._lock.__exit__(None, None, None)

    def _finish(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._tmp.__exit__(exc_type, exc, tb)
            return
        target = self.bundle / self.rel
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
        with defer_interrupts():
            try:
                if target.exists():  # the recorded file, put back if the record cannot be written
                    try:
                        os.link(target, old)
                    except OSError:  # a filesystem without hard links
                        shutil.copy2(target, old)
                self._tmp.__exit__(None, None, None)
                manifest, _ = read_manifest(self.bundle)
                value = manifest.get("metadata") if self.metadata is None else self.metadata
                update_manifest(self.bundle, "metadata", value, new_files=[self.rel])
            except BaseException:
                if old.exists():
                    os.replace(old, target)
                elif target.exists() and not Path(self._tmp.tmp).exists():
                    target.unlink()  # it was new: the bundle is as it was without it
                if Path(self._tmp.tmp).exists():
                    os.remove(self._tmp.tmp)
                raise
            finally:
                if old.exists():
                    old.unlink()


def verify_checksums(path: Path, manifest: dict[str, Any]) -> list[str]:
    """Check every file of the bundle against the manifest; return the derived graphs that fail.

    Raises BundleError naming each member or strategy file that is missing, changed, outside
    the bundle or not covered by a checksum, and each file the manifest does not list.
    """
    checksums = manifest["checksums"]
    found, problems = bundle_files(path)
    damaged = []
    for rel, digest in checksums.items():
        f = inside(path, rel, "checksums key")
        if not f.is_file():
            bad = f"{rel}: missing"
        elif sha256_file(f) != digest:
            bad = f"{rel}: checksum mismatch (file changed or corrupt)"
        else:
            continue
        if DERIVED_GRAPH.match(rel):
            damaged.append(rel)
        else:
            problems.append(bad)
    for rel in sorted(found - set(checksums)):
        problems.append(f"{rel}: not covered by a checksum (a file the manifest does not list)")
    for i, spec in enumerate(manifest["members"]):
        folder = PurePosixPath(spec["dir"])
        if folder.parts[:1] != ("members",) or len(folder.parts) < 2 or ".." in folder.parts:
            problems.append(f"members[{i}].dir: {spec['dir']!r} is not a folder under members/")
            continue
        inside(path, spec["dir"], f"members[{i}].dir")
        target = (folder / spec["file"]).as_posix()
        if (path / target).is_dir():  # a save_pretrained folder: every file in it is checked above
            covered = any(rel.startswith(f"{target}/") for rel in checksums)
        else:
            covered = target in checksums
        if not covered:
            problems.append(f"members[{i}] ({spec['name']}): no checksum covers its file {target!r}")
    for name in manifest["strategy"].get("files", []):
        if f"strategy/{name}" not in checksums:
            problems.append(f"strategy/{name}: no checksum covers it")
    if problems:
        raise BundleError(f"bundle {path} failed verification: " + "; ".join(problems[:10]))
    return damaged


def bundle_summary(path: str | Path) -> dict[str, Any]:
    """What ``modelfusion info`` shows: the manifest's facts and whether every file verifies.

    Reads and checks; builds no member (nothing from the bundle runs).
    """

    manifest, path = read_manifest(path)
    try:
        damaged = verify_checksums(path, manifest)
        verify_digest(path, None, format_version=manifest["format_version"])
        verification = "all verify" if not damaged else f"derived graphs failing: {', '.join(damaged)}"
    except BundleError as exc:
        verification, damaged = f"FAILED: {exc}", []
    checksums = manifest["checksums"]
    members = []
    for spec in manifest["members"]:
        prefix = f"{spec['dir'].rstrip('/')}/"
        members.append(
            {
                "name": spec["name"],
                "framework": spec["framework"],
                "output_kind": spec.get("output_kind"),
                "n_classes": len(spec.get("classes") or []) or spec.get("n_outputs") or "-",
                "file": spec["file"],
                "bytes": sum(
                    (path / rel).stat().st_size
                    for rel in checksums
                    if rel.startswith(prefix) and (path / rel).is_file()
                ),
            }
        )
    metadata = manifest.get("metadata") or {}
    return {
        "path": str(path),
        "format_version": manifest["format_version"],
        "created": manifest.get("created"),
        "sha256": manifest_digest(path),
        "verification": verification,
        "task": manifest["task"],
        "classes": manifest.get("classes"),
        "strategy": manifest["strategy"]["class"],
        "chosen": metadata.get("chosen"),
        "inputs": metadata.get("inputs"),
        "members": members,
        "graphs": {
            rel: ("checksum fails" if rel in damaged else "ok")
            for rel in checksums
            if DERIVED_GRAPH.match(rel)
        },
        "versions": manifest.get("versions") or {},
        "n_files": len(checksums),
    }


def check_bundle_target(path: Path) -> None:
    """Raise BundleError when ``path`` exists and is not a bundle (a bundle is only ever replaced by a bundle)."""
    if path.exists() and not is_bundle(path):
        raise BundleError(
            f"{path} exists and is not a modelfusion bundle; refusing to replace it (choose another path)"
        )


def is_bundle(path: Path) -> bool:
    """Whether ``path`` holds a modelfusion manifest (a quick look; :func:`load_bundle` verifies)."""
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _preprocess_spec(member: Any) -> Any:
    """The member's preprocessing as a config spec; a bare callable cannot be saved safely."""
    spec = getattr(member, "preprocess_spec", None)
    if member.preprocess is not None and spec is None:
        raise BundleError(
            f"member {member.name!r} has a preprocess callable that cannot be saved without pickle; "
            "give it as a spec (e.g. preprocess={'reshape': [1, 8, 8]}) via modelfusion.data.build_preprocessor "
            "and set member.preprocess_spec, or bake the preprocessing into the model"
        )
    return spec


#: Where a member's text preprocessing keeps its tokenizer inside the bundle.
_TOKENIZER = "preprocess-tokenizer"


def _bundled_preprocess(spec: Any, folder: Path) -> Any:
    """``spec`` with each text step's tokenizer copied into ``folder`` and named relative to it.

    A bundle carries every file it loads: a tokenizer path from the config would point
    outside it (and break when the bundle moves).
    """
    if isinstance(spec, list):
        return [_bundled_preprocess(step, folder) for step in spec]
    if not isinstance(spec, dict) or "text" not in spec:
        return spec
    text = spec["text"]
    options = {"tokenizer": text} if isinstance(text, (str, Path)) else dict(text or {})
    source = options.get("tokenizer")
    if isinstance(source, (str, Path)) and Path(source).expanduser().exists():
        source = Path(source).expanduser()
        name = _TOKENIZER + (source.suffix if source.is_file() else "")
        if source.is_dir():
            shutil.copytree(source, folder / name, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, folder / name)
        options["tokenizer"] = name
    return {**spec, "text": options}


def _tokenizer_paths(spec: Any) -> list[Any]:
    """The tokenizer paths a saved preprocessing spec names (they must lie in the member's folder)."""
    if isinstance(spec, list):
        return [p for step in spec for p in _tokenizer_paths(step)]
    if not isinstance(spec, dict) or "text" not in spec:
        return []
    text = spec["text"]
    tokenizer = text.get("tokenizer") if isinstance(text, dict) else text
    return [tokenizer] if isinstance(tokenizer, str) else []


def library_versions() -> dict[str, str]:
    """The versions of Python and the libraries a bundle or report was made with."""
    import numpy
    import onnx
    import onnxruntime
    import sklearn
    import torch

    return {
        "modelfusion": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# -- the fused graphs a bundle may hold ----------------------------------------------------------

#: The fused fp32 graph of a bundle (``modelfusion export``); int8 and fp16 graphs sit beside it.
ONNX_FILE = "fused.onnx"


def cached_bundle_graph(bundle: str | Path) -> Path | None:
    """A bundle's ``fused.onnx`` when it exists and matches the manifest's checksum, else None."""
    if not (Path(bundle) / ONNX_FILE).is_file():
        return None
    try:
        manifest, _ = read_manifest(bundle)
    except ModelFusionError:
        return None
    digest = manifest.get("checksums", {}).get(ONNX_FILE)
    return Path(bundle) / ONNX_FILE if digest and digest == sha256_file(Path(bundle) / ONNX_FILE) else None


def record_bundle_graph(bundle: Path, data: bytes, proto: Any, name: str = ONNX_FILE) -> Path:
    """Write the fused graph into a bundle and record it (file, opset, size) in the manifest."""
    with staged_bundle_file(bundle, name) as staged:
        staged.path.write_bytes(data)
        manifest, _ = read_manifest(bundle)
        metadata = dict(manifest.get("metadata") or {})
        runtime = dict(metadata.get("runtime") or {})
        props = {p.key: p.value for p in proto.metadata_props}
        runtime["onnx"] = {
            "file": name,
            "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
            "size_bytes": len(data),
            "input_shape": json.loads(props.get("modelfusion.input_shape", "null")),
        }
        metadata["runtime"] = runtime
        staged.metadata = metadata
    target = Path(bundle) / name
    return target

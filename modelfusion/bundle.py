"""The saved fused model: a folder with a manifest, member files and checksums.

Layout::

    bundle/
      manifest.json            # members, strategy, classes, versions, sha256 of every file
      members/<name>/...       # each member's own format: safetensors, onnx, skops, ...
      strategy/state.safetensors

Nothing is pickled. Saving writes into a temporary sibling folder and renames it into
place, so an interrupted save never leaves a half-written bundle. Loading verifies every
checksum before it reads a file.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelfusion.errors import BundleError
from modelfusion.files import atomic_path, current_umask, defer_interrupts, replace_dir, write_text_atomic
from modelfusion.members.base import sha256_file
from modelfusion.serialization import load_strategy, save_strategy

if TYPE_CHECKING:
    from modelfusion.fused import FusedModel

FORMAT = "modelfusion-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def save_bundle(model: FusedModel, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write ``model`` as a bundle folder at ``path`` atomically; returns the path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise BundleError(f"{path} already exists; pass overwrite=True to replace it")
    check_bundle_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; a bundle is shared like any folder
    try:
        members = []
        for i, member in enumerate(model.members):
            rel = Path("members") / f"{i:02d}-{_safe(member.name)}"
            (tmp / rel).mkdir(parents=True)
            spec = member.save(tmp / rel)
            members.append({**spec, "dir": rel.as_posix(), "preprocess": _preprocess_spec(member)})
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
            "versions": _versions(),
            "checksums": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_bundle(path: str | Path, *, trust: bool = False) -> FusedModel:
    """Read a bundle folder, verifying its checksums first.

    ``trust=True`` allows members whose architecture is built by importing a
    ``module:factory`` named in the manifest, and strategy files with non-sklearn types.
    """
    manifest, path = read_manifest(path)
    verify_checksums(path, manifest)
    try:
        return _load_verified(path, manifest, trust)
    except (KeyError, TypeError) as e:
        raise BundleError(f"bundle {path} has a malformed manifest ({type(e).__name__}: {e})") from e


def _load_verified(path: Path, manifest: dict[str, Any], trust: bool) -> FusedModel:
    from modelfusion.fused import FusedModel
    from modelfusion.members.loading import load_saved_member

    members = []
    for spec in manifest["members"]:
        _check_architecture(spec, trust)
        member = load_saved_member(path / spec["dir"], spec)
        if spec.get("preprocess") is not None:
            from modelfusion.data import build_preprocessor

            member.preprocess = build_preprocessor(spec["preprocess"])
            member.preprocess_spec = spec["preprocess"]
        members.append(member)
    strategy = load_strategy(manifest["strategy"], path / "strategy", trust=trust)
    return FusedModel(members, strategy, metadata=manifest.get("metadata"))


def read_manifest(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The parsed manifest of a bundle folder, with a clear error when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path} is not a bundle folder (it does not exist or is a file)")
    mf = path / MANIFEST
    if not mf.is_file():
        raise BundleError(f"{path} is not a modelfusion bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{mf} is not valid JSON: {e}") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{mf} is not a {FORMAT} manifest (format={manifest.get('format')!r})")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise BundleError(
            f"{path} was written by a newer modelfusion (bundle format {manifest['format_version']}); upgrade"
        )
    return manifest, path


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
    write_text_atomic(path / MANIFEST, json.dumps(manifest, indent=2, default=_json_default))


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
        self.path = Path(self._tmp.__enter__())
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
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


def verify_checksums(path: Path, manifest: dict[str, Any]) -> None:
    """Raise BundleError naming every file that is missing or whose sha256 differs."""
    problems = []
    for rel, digest in manifest.get("checksums", {}).items():
        f = path / rel
        if not f.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(f) != digest:
            problems.append(f"{rel}: checksum mismatch (file changed or corrupt)")
    if problems:
        raise BundleError(f"bundle {path} failed verification: " + "; ".join(problems))


#: Architectures a bundle may build without trust=True: our own example networks. A
#: ``module:factory`` string anywhere else imports and calls code named by the manifest.
_SAFE_FACTORY_PREFIXES = ("modelfusion.examples.",)


def _check_architecture(spec: dict[str, Any], trust: bool) -> None:
    arch = spec.get("architecture")
    if not isinstance(arch, str) or ":" not in arch or trust or arch.startswith(_SAFE_FACTORY_PREFIXES):
        return
    raise BundleError(
        f"member {spec.get('name')!r} builds its architecture by importing and calling {arch!r}; "
        "load the bundle with trust=True (CLI: --trust) if you trust where it came from"
    )


def check_bundle_target(path: Path) -> None:
    """Raise BundleError when ``path`` exists and is not a bundle (a bundle is only ever replaced by a bundle)."""
    if path.exists() and not _is_bundle(path):
        raise BundleError(
            f"{path} exists and is not a modelfusion bundle; refusing to replace it (choose another path)"
        )


def _is_bundle(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT
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


def _versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import sklearn
    import torch

    import modelfusion

    return {
        "modelfusion": modelfusion.__version__,
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

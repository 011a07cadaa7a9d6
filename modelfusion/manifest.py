"""A bundle's manifest: its schema, its digest file, and the checks that keep every path inside.

A bundle is a folder that may come from anywhere, so nothing in it is taken on faith:

- ``manifest.json`` is read with a size cap, as UTF-8 JSON, and validated against
  :class:`ManifestSchema` (a wrong type names its field);
- ``bundle.sha256`` beside it holds the manifest's sha256, which pins every other file,
  since the manifest lists their checksums. It proves *integrity* (nothing was changed by
  accident or in part), not *authenticity*: whoever can rewrite the whole bundle can rewrite
  this file too. Pin a bundle you downloaded with ``expected_digest=`` / ``--expect-sha256``;
- every path the manifest names resolves inside the bundle after symlinks are followed, every
  file in the bundle has a checksum, and files the manifest does not cover are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from modelfusion.errors import BundleError, ModelFusionWarning
from modelfusion.files import write_text_atomic

FORMAT = "modelfusion-bundle"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
DIGEST_FILE = "bundle.sha256"
#: A manifest larger than this is not one we wrote (the largest real ones are a few hundred KB).
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_HEX64 = r"^[0-9a-f]{64}$"
#: Top-level files of the runtime's derived graphs: verified alone, never a reason to refuse the bundle.
DERIVED_GRAPH = re.compile(r"^fused(\.[A-Za-z0-9_-]+)*\.(onnx|engine)$")
#: Leftovers of an interrupted write (see :mod:`modelfusion.recovery`): not part of the bundle.
LEFTOVER = re.compile(r"^\..+\.(old-[0-9a-f]{12}|tmp(\.[A-Za-z0-9]+)?)$")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow")


class MemberEntry(_Entry):
    """One member of the manifest: where its files are and how to rebuild it."""

    @model_validator(mode="after")
    def _regression_emits_values(self) -> MemberEntry:
        if self.task == "regression" and self.output_kind != "values":
            raise ValueError(f"a regression member emits 'values', not {self.output_kind!r}")
        return self

    name: StrictStr = Field(min_length=1, max_length=256)
    framework: StrictStr
    dir: StrictStr = Field(min_length=1, max_length=1024)
    file: StrictStr = Field(min_length=1, max_length=1024)
    task: Literal["classification", "multilabel", "regression"] = "classification"
    output_kind: Literal["proba", "logits", "values"] = "proba"
    classes: list[StrictStr | StrictInt | StrictFloat | StrictBool] | None = Field(None, max_length=1_000_000)
    n_outputs: StrictInt | None = Field(None, ge=0, le=10_000_000)
    architecture: StrictStr | None = None
    architecture_kwargs: dict[str, Any] | None = None


class StrategyEntry(_Entry):
    """The fitted strategy: class name, parameters, state and its files."""

    class_: StrictStr = Field(alias="class")
    params: dict[str, Any] = Field(default_factory=dict)
    state: dict[str, Any] = Field(default_factory=dict)
    files: list[StrictStr] = Field(default_factory=list)


class ManifestSchema(_Entry):
    """What ``manifest.json`` must hold; extra keys are kept (later versions add some)."""

    format: Literal["modelfusion-bundle"]
    format_version: StrictInt = Field(ge=1)
    task: Literal["classification", "multilabel", "regression"]
    classes: list[StrictStr | StrictInt | StrictFloat | StrictBool] | None = Field(None, max_length=1_000_000)
    members: list[MemberEntry] = Field(min_length=1)
    strategy: StrategyEntry
    metadata: dict[str, Any] | None = None
    checksums: dict[StrictStr, StrictStr] = Field(min_length=1)


def parse_manifest(path: Path) -> dict[str, Any]:
    """The validated manifest of the bundle folder ``path`` (a dict), or BundleError naming the field."""
    mf = path / MANIFEST
    if not mf.is_file() or mf.is_symlink():
        raise BundleError(f"{path} is not a modelfusion bundle: {MANIFEST} is missing")
    size = mf.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{mf} is {size:,} bytes; a manifest is at most {MAX_MANIFEST_BYTES:,} (not a bundle we wrote)"
        )
    data = mf.read_bytes()
    try:
        manifest = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BundleError(f"{mf} is not UTF-8 text (byte {e.start}); the manifest is corrupt") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise BundleError(f"{mf} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mf} must hold a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{mf} is not a {FORMAT} manifest (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise BundleError(f"{path} was written by a newer modelfusion (bundle format {version}); upgrade")
    try:
        ManifestSchema.model_validate(manifest)
    except ValidationError as e:
        problems = "; ".join(f"{_field(err['loc'])}: {err['msg']}" for err in e.errors()[:8])
        raise BundleError(f"{mf} is malformed: {problems}") from None
    bad = [k for k, v in manifest["checksums"].items() if not re.match(_HEX64, v)]
    if bad:
        raise BundleError(f"{mf} is malformed: checksums[{bad[0]!r}] is not a sha256 hex digest")
    return manifest


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# -- the digest file ----------------------------------------------------------------------


def manifest_digest(path: str | Path) -> str:
    """The sha256 of a bundle's ``manifest.json``: the one number that pins the whole bundle."""
    return hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()


def verify_digest(path: Path, expected: str | None = None, *, format_version: int = FORMAT_VERSION) -> str:
    """Check ``bundle.sha256`` (and ``expected``, when given) against the manifest; return its digest.

    Bundles of format 1 predate the digest file: they load with a warning to re-save them.
    """
    digest = manifest_digest(path)
    if expected is not None and digest != expected.strip().lower():
        raise BundleError(
            f"bundle {path}: manifest sha256 is {digest}, expected {expected.strip()}; the bundle is not "
            "the one you pinned"
        )
    record = path / DIGEST_FILE
    if format_version < 2 and not record.exists():
        warnings.warn(
            f"bundle {path} was written by an older modelfusion (format {format_version}) and has no "
            f"{DIGEST_FILE}; re-save it (FusedModel.load(path).save(path)) to record the manifest's digest",
            ModelFusionWarning,
            stacklevel=3,
        )
        return digest
    if not record.is_file() or record.is_symlink():
        raise BundleError(
            f"bundle {path} has no {DIGEST_FILE} (the manifest's digest); it was written by an older "
            "modelfusion or tampered with. Re-save it with the current version"
        )
    recorded = {
        line.split()[0].lower() for line in record.read_text(errors="replace").splitlines() if line.strip()
    }
    if digest not in recorded:
        raise BundleError(
            f"bundle {path} failed verification: {MANIFEST} does not match {DIGEST_FILE} (the manifest was "
            "changed after it was written)"
        )
    return digest


def write_manifest(path: Path, manifest: dict[str, Any], *, default: Any = None) -> str:
    """Write ``manifest.json`` and ``bundle.sha256`` so that an interruption anywhere leaves a pair that verifies.

    The digest file first lists the new digest beside the current one, then the manifest is
    replaced, then the old digest is dropped. Returns the new digest.
    """
    text = json.dumps(manifest, indent=2, default=default)
    new = hashlib.sha256(text.encode("utf-8")).hexdigest()
    mf = path / MANIFEST
    old = hashlib.sha256(mf.read_bytes()).hexdigest() if mf.is_file() else None
    if old is not None and old != new:
        write_text_atomic(path / DIGEST_FILE, f"{new}  {MANIFEST}\n{old}  {MANIFEST}\n")
    write_text_atomic(mf, text)
    write_text_atomic(path / DIGEST_FILE, f"{new}  {MANIFEST}\n")
    return new


# -- paths ---------------------------------------------------------------------------------


def inside(root: Path, rel: Any, what: str) -> Path:
    """``root / rel`` when it resolves (symlinks followed) inside ``root``; BundleError otherwise."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise BundleError(f"bundle {root}: {what} must be a relative path, got {rel!r}")
    if os.path.isabs(rel) or rel.startswith("~"):
        raise BundleError(f"bundle {root}: {what} {rel!r} is an absolute path; bundle paths are relative")
    target = root / rel
    real_root = root.resolve()
    if not target.resolve().is_relative_to(real_root):
        raise BundleError(f"bundle {root}: {what} {rel!r} leads outside the bundle")
    return target


def bundle_files(root: Path) -> tuple[set[str], list[str]]:
    """Every file below ``root`` (relative POSIX paths), and the problems: links that leave it, linked folders.

    Leftovers of interrupted writes and the two bookkeeping files are not listed.
    """
    files: set[str] = set()
    problems: list[str] = []
    real_root = root.resolve()
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        for d in list(dirs):
            if (here / d).is_symlink():
                problems.append(f"{(here / d).relative_to(root).as_posix()}: a linked folder")
                dirs.remove(d)
        for name in names:
            f = here / name
            rel = f.relative_to(root).as_posix()
            if here == root and (name in (MANIFEST, DIGEST_FILE) or LEFTOVER.match(name)):
                continue
            if f.is_symlink() and not f.resolve().is_relative_to(real_root):
                problems.append(f"{rel}: a link leading outside the bundle")
            files.add(rel)
    return files, problems

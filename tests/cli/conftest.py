"""The CLI tests share the runtime tests' members and bundle (built once per package, in seconds)."""

from __future__ import annotations

from ..runtime.conftest import (  # noqa: F401  (fixtures, found by name)
    _one_thread_per_runtime,
    digits_bundle,
    digits_fused,
    digits_members,
    digits_val_preds,
)

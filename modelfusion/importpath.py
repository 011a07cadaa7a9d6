"""Import paths ``package.module:Name`` (and ``file.py:name``): one parser for configs, data and members.

A config, :func:`~modelfusion.data.load_dataset` and :func:`~modelfusion.load_member` all
accept factories written this way; they must agree on what one is, and factories named in a
config are found relative to the config's folder, as the scaffold's ``pipelines/`` suggests.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

_NAME = r"[A-Za-z_]\w*"
#: ``package.module:Outer.Inner`` or ``path/to/file.py:name``.
IMPORT_PATH = re.compile(rf"^(?P<module>{_NAME}(\.{_NAME})*|[\w./\\-]+\.py):(?P<attr>{_NAME}(\.{_NAME})*)$")


def is_import_path(text: object, *, allow_file: bool = True) -> bool:
    """Whether ``text`` is ``package.module:Name`` (or, with ``allow_file``, ``file.py:name``).

    Examples
    --------
    >>> is_import_path("mypkg.data:Loaders.digits"), is_import_path("data/train.csv")
    (True, False)
    """
    if not isinstance(text, str):
        return False
    match = IMPORT_PATH.match(text)
    return match is not None and (allow_file or not match.group("module").endswith(".py"))


@contextlib.contextmanager
def importable_from(folder: str | Path | None) -> Iterator[None]:
    """Inside the block, modules in ``folder`` (a config's folder) can be imported."""
    if folder is None:
        yield
        return
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)

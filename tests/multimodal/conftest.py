"""Fixtures of the multimodal tests: tiny models built from configs (nothing downloads)."""

from __future__ import annotations

import pytest

from tests.multimodal.tiny_text import tiny_bert


@pytest.fixture(scope="module")
def bert():
    return tiny_bert()

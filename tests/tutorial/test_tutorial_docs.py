"""Issue 6, item 12: every ```python block of docs/tutorial.md runs, in order, as one session.

The blocks share one namespace and run in an empty temporary folder, as a reader pasting
them into one Python session would, so the page cannot drift from the library.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of each ```python block, in page order."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_tutorial_has_a_block_for_each_snippet():
    text = TUTORIAL.read_text()
    code = "\n".join(block for _, block in python_blocks(text))
    for name in (
        "ModelLoader",
        "DataPipeline",
        "WeightedAverage",
        "DynamicWeighting",
        "MultimodalFusion",
        "Projection",
        "plot_fusion_comparison",
        'method="bayes"',
        "TensorRTConverter",
        "load_model_partition",
        "vit_pytorch:ViT",
    ):
        assert name in code, f"docs/tutorial.md has no code block using {name}"


def test_every_tutorial_block_runs_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "tutorial"}
    try:
        for line, code in python_blocks(TUTORIAL.read_text()):
            try:
                # Blank lines in front keep traceback line numbers equal to the page's.
                exec(compile("\n" * (line - 1) + code, str(TUTORIAL), "exec"), namespace)
            except Exception as err:
                pytest.fail(f"the block at docs/tutorial.md:{line} failed: {type(err).__name__}: {err}")
    finally:
        plt.close("all")

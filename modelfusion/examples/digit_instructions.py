"""A built-in multimodal task no single modality can solve: a digit image and an instruction.

Each sample pairs an 8x8 digit from scikit-learn's bundled digits with an instruction such as
"add three" or "minus seven"; the label is the result modulo 10. The image alone says nothing
about the instruction and the instruction nothing about the digit: either alone is at chance
(10%), a model that fuses them can reach the digit classifier's accuracy. It runs offline.

Examples
--------
>>> task = digit_instructions(per_image=4, seed=0)
>>> task["texts"][0], task["labels"][0]
('subtract eight', 2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
OPERATIONS = {"add": 1, "plus": 1, "minus": -1, "subtract": -1}


def digit_instructions(*, per_image: int = 4, seed: int = 0) -> dict[str, Any]:
    """``images`` [N, 1, 8, 8] float32 in [0, 1], ``texts`` (N instructions), ``labels`` (N ints),
    ``digits`` (each image's digit) and ``vocabulary``; each digit image appears ``per_image`` times."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(len(X)), per_image)
    operations = rng.choice(list(OPERATIONS), size=len(rows))
    amounts = rng.integers(0, 10, size=len(rows))
    texts = [f"{op} {NUMBERS[k]}" for op, k in zip(operations, amounts, strict=True)]
    signs = np.array([OPERATIONS[op] for op in operations])
    labels = (y[rows] + signs * amounts) % 10
    return {
        "images": (X[rows] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8),
        "texts": texts,
        "labels": labels.astype(np.int64),
        "digits": y[rows],
        "vocabulary": [*OPERATIONS, *NUMBERS],
    }


def split_by_image(task: dict[str, Any], *, per_image: int, test_fraction: float = 0.3, seed: int = 0):
    """``(train, test)`` ModalityDatasets ({"image", "text"} -> label), split by digit image so a
    test digit is never seen in training (with any instruction)."""
    from modelfusion.multimodal.data import ModalityDataset

    image = np.arange(len(task["labels"])) // per_image
    perm = np.random.default_rng(seed).permutation(image.max() + 1)
    test = np.isin(image, perm[int((1 - test_fraction) * len(perm)) :])
    data = ModalityDataset({"image": task["images"], "text": task["texts"]}, task["labels"])
    return data.subset(np.flatnonzero(~test)), data.subset(np.flatnonzero(test))


def instruction_model(
    vocabulary: list[str],
    *,
    modalities: tuple[str, ...] = ("image", "text"),
    fusion: str = "gated",
    dim: int = 64,
) -> Any:
    """The task's model: a small CNN for the image, a bag of words for the instruction, ``fusion``
    between them and a 128-unit MLP head (one modality alone: ``modalities=("image",)``)."""
    from modelfusion.multimodal import MultimodalFusion
    from modelfusion.multimodal.encoders import ModuleEncoder, WordEncoder

    encoders: dict[str, Any] = {}
    if "image" in modalities:
        encoders["image"] = ModuleEncoder.from_architecture(
            "modelfusion.examples.digit_instructions:digit_cnn", input_shape=(1, 8, 8)
        )
    if "text" in modalities:
        encoders["text"] = WordEncoder(vocabulary, width=32)
    return MultimodalFusion(encoders=encoders, fusion=fusion, dim=dim, num_classes=10, head={"hidden": [128]})


def digit_cnn(channels: int = 16) -> Any:
    """The task's image encoder: two convolutions over the 8x8 digit, pooled to 2x2 (width ``8 * channels``)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
    )


__all__ = ["digit_cnn", "digit_instructions", "instruction_model", "split_by_image"]

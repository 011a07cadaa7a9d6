"""Feature-level fusion on the built-in digit-instruction task (issue 15): every fusion operator
against each modality alone.

Each sample is an 8x8 digit and an instruction ("add three", "minus seven"); the label is the
result mod 10, so either modality alone is at chance (10%). Encoders: a small CNN for the image,
a bag of words for the text; every model is trained the same way (30 epochs, AdamW 3e-3, batch
64, seed 0) on 70% of the digit images (4 instructions each) and tested on the other 30%.

``python benchmarks/multimodal_digits.py``; about two minutes on 2 CPU cores.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from modelfusion.examples.digit_instructions import digit_instructions, instruction_model, split_by_image
from modelfusion.multimodal import FUSION_OPERATORS
from modelfusion.training import Trainer

EPOCHS, PER_IMAGE, SEED = 30, 4, 0


def split():
    t = digit_instructions(per_image=PER_IMAGE, seed=SEED)
    return (t, *split_by_image(t, per_image=PER_IMAGE, seed=SEED))


def accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    return float((out.argmax(1) == y).float().mean())


def run(t, train, test, modalities, fusion) -> dict:
    torch.manual_seed(SEED)
    model = instruction_model(t["vocabulary"], modalities=modalities, fusion=fusion)
    start = time.perf_counter()
    trainer = Trainer(
        model,
        nn.functional.cross_entropy,
        lr=3e-3,
        batch_size=64,
        max_epochs=EPOCHS,
        seed=SEED,
        device="cpu",
        progress=False,
        metrics={"accuracy": accuracy},
    ).fit(train, test)
    params = sum(p.numel() for p in model.parameters())
    return {
        "accuracy": trainer.history_[-1]["accuracy"],
        "nll": trainer.history_[-1]["val_loss"],
        "params": params,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    torch.set_num_threads(1)
    t, train, test = split()
    print(f"digit instructions: {len(train)} train / {len(test)} test samples, {EPOCHS} epochs")
    rows = [("image only", run(t, train, test, ("image",), "concat"))]
    rows.append(("text only", run(t, train, test, ("text",), "concat")))
    for name in FUSION_OPERATORS:
        rows.append((name, run(t, train, test, ("image", "text"), name)))
    print(f"{'model':16} {'test acc':>9} {'NLL':>7} {'params':>8} {'train s':>8}")
    for name, r in rows:
        print(f"{name:16} {100 * r['accuracy']:8.2f}% {r['nll']:7.4f} {r['params']:8,} {r['seconds']:8.1f}")
    best = max(rows[2:], key=lambda row: row[1]["accuracy"])
    single = max(rows[0][1]["accuracy"], rows[1][1]["accuracy"])
    print(
        f"best fusion {best[0]}: {100 * best[1]['accuracy']:.2f}% (target >= 95%); best single modality "
        f"{100 * single:.2f}% (target < 30%)"
    )


if __name__ == "__main__":
    main()

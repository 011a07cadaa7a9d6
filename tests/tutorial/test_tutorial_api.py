"""Issue 6: the ModelFusion tutorial's snippets run as written, through thin doors onto the library.

Items 2, 10 and 11 (ModelLoader, distributed, the ViT pool) are tested beside their code in
tests/members and tests/test_distributed.py.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import matplotlib.pyplot as plt  # the Agg backend: tests/conftest.py selects it
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from torch import nn

from modelfusion.errors import ModelFusionError, StrategyError
from modelfusion.predictions import PredictionSet

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL_RECORDS = [{"model": "resnet", "output": 0.85}, {"model": "bert", "output": 0.72}]


def _two_members(n: int = 600, k: int = 4, seed: int = 0) -> tuple[PredictionSet, np.ndarray]:
    """Two noisy probabilistic members of a known labelling; the best mix is strictly inside [0, 1]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)

    def member(noise: float) -> np.ndarray:
        logits = 1.5 * np.eye(k)[y] + rng.normal(scale=noise, size=(n, k))
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    return PredictionSet(np.stack([member(1.0), member(1.3)]), names=["resnet", "bert"], labels=y), y


# -- item 1: install names ----------------------------------------------------------------------


def test_multimodal_and_distributed_extras_are_declared():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {req.split(">")[0].split("=")[0].split("[")[0].strip().lower() for req in extras["multimodal"]}
    assert {"torchvision", "timm", "transformers", "vit-pytorch"} <= names
    assert "distributed" in extras
    assert "multimodal" in extras["all"][0] and "distributed" in extras["all"][0]


# -- item 3: DataPipeline -----------------------------------------------------------------------


def _tutorial_pipeline():
    from modelfusion.pipeline import DataPipeline

    def preprocess_image(image: np.ndarray) -> np.ndarray:
        return image.astype(np.float32) / 255.0

    def center(image: np.ndarray) -> np.ndarray:
        return image - 0.5

    def preprocess_text(text: str) -> list[str]:
        return text.lower().split()

    pipeline = DataPipeline()
    pipeline.add_stage("image", preprocess_image)
    pipeline.add_stage("image", center)
    pipeline.add_stage("text", preprocess_text)
    return pipeline


def test_pipeline_door_is_the_data_pipeline():
    from modelfusion.data import DataPipeline as Real
    from modelfusion.pipeline import DataPipeline

    assert DataPipeline is Real


def test_stages_of_one_modality_run_in_the_order_added():
    image = np.full((2, 2), 255, dtype=np.uint8)
    out = _tutorial_pipeline()({"image": image, "text": "A Photo of a CAT"})
    # scale then center: 255 -> 1.0 -> 0.5 (the other order would give 254.5 / 255)
    np.testing.assert_allclose(out["image"], np.full((2, 2), 0.5))
    assert out["text"] == ["a", "photo", "of", "a", "cat"]


def test_a_list_of_records_gives_a_list_of_processed_records():
    records = [{"image": np.zeros((2, 2), np.uint8), "text": "Hi"}, {"image": np.ones((2, 2)), "text": "YO"}]
    out = _tutorial_pipeline()(records)
    assert [r["text"] for r in out] == [["hi"], ["yo"]]
    np.testing.assert_allclose(out[0]["image"], -0.5)


def test_unknown_modality_in_a_record_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown modality 'audio'.*knows: image, text"):
        _tutorial_pipeline()({"image": np.zeros((2, 2)), "audio": np.zeros(16)})


# -- item 4: WeightedAverage on records ---------------------------------------------------------


def test_weighted_average_on_tutorial_records_gives_0_798():
    from modelfusion.strategy import WeightedAverage

    result = WeightedAverage({"resnet": 0.6, "bert": 0.4}).combine(TUTORIAL_RECORDS)
    assert result["fused_score"] == pytest.approx(0.798)
    assert isinstance(result["fused_score"], float)
    assert result["weights"] == pytest.approx({"resnet": 0.6, "bert": 0.4})


def test_weights_are_normalised():
    from modelfusion.strategy import WeightedAverage

    result = WeightedAverage({"resnet": 3, "bert": 2}).combine(TUTORIAL_RECORDS)
    assert result["weights"] == pytest.approx({"resnet": 0.6, "bert": 0.4})
    assert result["fused_score"] == pytest.approx(0.798)


def test_door_is_the_strategy_class_and_combine_leaves_it_unfitted():
    from modelfusion.strategies import WeightedAverage as Real
    from modelfusion.strategies import get_strategy
    from modelfusion.strategy import WeightedAverage

    assert issubclass(WeightedAverage, Real) and WeightedAverage.__name__ == "WeightedAverage"
    assert type(get_strategy("weighted")) is Real  # the door's class never replaces the real one
    strategy = WeightedAverage({"resnet": 0.6, "bert": 0.4})
    strategy.combine(TUTORIAL_RECORDS)
    assert not hasattr(strategy, "weights_")


def test_the_strategies_themselves_take_no_records_and_say_where_to_go():
    from modelfusion.errors import StrategyError
    from modelfusion.strategies import WeightedAverage
    from modelfusion.strategies.records import combine_records

    with pytest.raises(StrategyError, match="use modelfusion.strategy.WeightedAverage"):
        WeightedAverage({"resnet": 0.6, "bert": 0.4}).combine(TUTORIAL_RECORDS)
    result = combine_records(WeightedAverage({"resnet": 0.6, "bert": 0.4}), TUTORIAL_RECORDS)
    assert result["fused_score"] == pytest.approx(0.798)


def test_array_outputs_give_an_array_fused_score():
    from modelfusion.strategy import WeightedAverage

    a = np.array([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    b = np.array([[0.6, 0.4], [0.1, 0.9], [0.3, 0.7]])
    records = [{"model": "resnet", "output": a}, {"model": "bert", "output": b}]
    result = WeightedAverage({"resnet": 0.6, "bert": 0.4}).combine(records)
    np.testing.assert_allclose(result["fused_score"], 0.6 * a + 0.4 * b)
    one_per_sample = [{"model": "resnet", "output": a[:, 0]}, {"model": "bert", "output": b[:, 0]}]
    fused = WeightedAverage([0.6, 0.4]).combine(one_per_sample)["fused_score"]
    assert fused.shape == (3,)
    np.testing.assert_allclose(fused, 0.6 * a[:, 0] + 0.4 * b[:, 0])


def test_weighted_average_fitted_on_a_prediction_set_combines_records_by_name():
    from modelfusion.strategy import WeightedAverage

    preds, _ = _two_members()
    strategy = WeightedAverage({"resnet": 0.6, "bert": 0.4}).fit(preds)
    np.testing.assert_allclose(
        strategy.combine(preds), 0.6 * preds.proba[0] + 0.4 * preds.proba[1], atol=1e-6
    )
    records = [{"model": n, "output": preds.proba[i, :5]} for i, n in reversed(list(enumerate(preds.names)))]
    np.testing.assert_allclose(
        strategy.combine(records)["fused_score"], strategy.combine(preds)[:5], atol=1e-6
    )


def test_weights_and_outputs_with_different_model_names_list_both_sets():
    from modelfusion.strategy import WeightedAverage

    records = [{"model": "resnet", "output": 0.85}, {"model": "vit", "output": 0.72}]
    with pytest.raises(StrategyError, match=r"\['bert', 'resnet'\].*\['resnet', 'vit'\]"):
        WeightedAverage({"resnet": 0.6, "bert": 0.4}).combine(records)


def test_combine_on_an_empty_list_is_a_clear_error():
    from modelfusion.strategy import WeightedAverage

    with pytest.raises(StrategyError, match="empty list.*one record"):
        WeightedAverage({"resnet": 0.6, "bert": 0.4}).combine([])


def test_records_of_different_shapes_or_without_output_are_clear_errors():
    from modelfusion.strategy import WeightedAverage

    with pytest.raises(StrategyError, match="same shape"):
        WeightedAverage().combine([{"model": "a", "output": 0.5}, {"model": "b", "output": [0.1, 0.2]}])
    with pytest.raises(StrategyError, match="record 1 has no 'output'"):
        WeightedAverage().combine([{"model": "a", "output": 0.5}, {"model": "b", "score": 0.2}])


def test_validation_weights_on_records_ask_for_a_fit_first():
    from modelfusion.strategy import WeightedAverage

    with pytest.raises(StrategyError, match="learns from labels.*fit"):
        WeightedAverage(weights="validation").combine(TUTORIAL_RECORDS)


# -- item 5: DynamicWeighting on records --------------------------------------------------------


def test_dynamic_weighting_weights_each_model_by_confidence_over_the_sum():
    from modelfusion.strategy import DynamicWeighting

    records = [
        {"model": "resnet", "output": 0.85, "confidence": 0.9},
        {"model": "bert", "output": 0.72, "confidence": 0.6},
    ]
    result = DynamicWeighting().combine(records)
    assert result["weights"] == pytest.approx({"resnet": 0.6, "bert": 0.4})
    assert result["fused_score"] == pytest.approx(0.6 * 0.85 + 0.4 * 0.72)


def test_per_sample_confidences_give_per_sample_weights():
    from modelfusion.strategy import DynamicWeighting

    records = [
        {"model": "resnet", "output": np.array([1.0, 0.0]), "confidence": np.array([3.0, 1.0])},
        {"model": "bert", "output": np.array([0.0, 1.0]), "confidence": np.array([1.0, 1.0])},
    ]
    result = DynamicWeighting().combine(records)
    np.testing.assert_allclose(result["sample_weights"]["resnet"], [0.75, 0.5])
    np.testing.assert_allclose(result["fused_score"], [0.75, 0.5])


def test_without_confidences_uses_each_members_per_sample_confidence():
    from modelfusion.strategy import DynamicWeighting

    preds, _ = _two_members(n=20)
    records = [{"model": n, "output": preds.proba[i]} for i, n in enumerate(preds.names)]
    result = DynamicWeighting().combine(records)
    expected = DynamicWeighting().fit(preds)
    np.testing.assert_allclose(result["fused_score"], expected.combine(preds), atol=1e-6)
    np.testing.assert_allclose(
        np.stack([result["sample_weights"][n] for n in preds.names]),
        expected.sample_weights(preds),
        atol=1e-6,
    )


# -- item 6: MultimodalFusion as the tutorial writes it ----------------------------------------


def _tutorial_model_class():
    from modelfusion.multimodal import MultimodalFusion

    class MultimodalModel(MultimodalFusion):
        num_classes = 3

        def __init__(self):
            self.image_model = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
            )
            self.text_model = nn.EmbeddingBag(100, 16)

        def forward(self, image, text):
            fused_feat = torch.cat([self.image_model(image), self.text_model(text)], dim=1)
            return self.classifier(fused_feat)

    return MultimodalModel


def test_tutorial_multimodal_class_trains_two_steps_with_adam():
    torch.manual_seed(0)
    model = _tutorial_model_class()()  # no super().__init__() in the tutorial's __init__
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)  # before the first call, as the tutorial does
    images, tokens, y = torch.randn(6, 3, 16, 16), torch.randint(0, 100, (6, 5)), torch.randint(0, 3, (6,))
    before = [p.detach().clone() for p in model.image_model.parameters()]
    for _ in range(2):
        logits = model(images, tokens)
        loss = nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert logits.shape == (6, 3)
    assert model.classifier.in_features == 8 + 16  # inferred from the fused features
    assert all(p.grad is not None for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.image_model.parameters()))


def test_num_classes_from_the_constructor_argument():
    from modelfusion.multimodal import MultimodalFusion

    class TwoTower(MultimodalFusion):
        def __init__(self):
            self.a, self.b = nn.Linear(4, 5), nn.Linear(3, 2)

        def forward(self, x, z):
            return self.classifier(torch.cat([self.a(x), self.b(z)], dim=1))

    assert TwoTower(num_classes=7)(torch.randn(2, 4), torch.randn(2, 3)).shape == (2, 7)


def test_a_subclass_calling_super_init_works_too():
    from modelfusion.multimodal import MultimodalFusion

    class Polite(MultimodalFusion):
        def __init__(self, n):
            super().__init__(num_classes=n)
            self.encoder = nn.Linear(4, 6)

        def forward(self, x):
            return self.classifier(self.encoder(x))

    assert Polite(2)(torch.randn(3, 4)).shape == (3, 2)


def test_a_subclass_with_no_number_of_classes_says_how_to_set_it():
    from modelfusion.multimodal import MultimodalFusion, NumClassesError

    class Unsized(MultimodalFusion):
        def __init__(self):
            self.encoder = nn.Linear(4, 6)

        def forward(self, x):
            return self.classifier(self.encoder(x))

    model = Unsized()
    with pytest.raises(NumClassesError, match=r"num_classes = N.*Unsized\(num_classes=N\)"):
        model(torch.randn(2, 4))
    assert isinstance(NumClassesError("x"), ValueError)


def test_projection_brings_1024_features_to_512():
    from modelfusion.multimodal import FeatureWidthError, Projection

    project = Projection(1024, 512, norm=True, activation="gelu")
    assert project(torch.randn(4, 1024)).shape == (4, 512)
    with pytest.raises(FeatureWidthError, match=r"Projection\(1024 -> 512\) got features of width 768"):
        project(torch.randn(4, 768))


def test_expected_widths_name_the_encoder_that_does_not_match():
    from modelfusion.multimodal import FeatureWidthError, MultimodalFusion, Projection

    class Mismatched(MultimodalFusion):
        num_classes = 2
        expected_widths = {"image_model": 512, "text_model": 512}

        def __init__(self, project: bool):
            self.image_model = nn.Linear(10, 1024)
            if project:
                self.image_model = nn.Sequential(self.image_model, Projection(1024, 512))
            self.text_model = nn.Linear(10, 512)

        def forward(self, image, text):
            return self.classifier(torch.cat([self.image_model(image), self.text_model(text)], dim=1))

    x = torch.randn(2, 10)
    with pytest.raises(FeatureWidthError, match=r"encoder 'image_model' gives width 1024, expected 512"):
        Mismatched(project=False)(x, x)
    assert Mismatched(project=True)(x, x).shape == (2, 2)


def test_check_widths_helper_names_each_wrong_encoder():
    from modelfusion.multimodal import FeatureWidthError, check_widths

    feats = {"image": torch.zeros(2, 1024), "text": torch.zeros(2, 512)}
    check_widths(feats, expected={"image": 1024, "text": 512})
    with pytest.raises(FeatureWidthError, match=r"'image' gives width 1024, expected 512") as err:
        check_widths(feats, expected={"image": 512, "text": 512})
    assert "'text'" not in str(err.value)


# -- item 7: plot_fusion_comparison -------------------------------------------------------------


def test_plot_fusion_comparison_on_the_tutorial_dict(tmp_path):
    from modelfusion.eval import plot_fusion_comparison
    from modelfusion.report import plot_fusion_comparison as real

    assert plot_fusion_comparison is real
    plt.figure()
    try:
        ax = plot_fusion_comparison({"weighted_avg": [0.85, 0.88, 0.83], "voting": [0.82, 0.86, 0.84]})
        assert isinstance(ax, Axes) and ax is plt.gca()
        assert ax.get_ylabel() and [t.get_text() for t in ax.get_xticklabels()] == ["weighted_avg", "voting"]
        plt.savefig(tmp_path / "comparison.png")
    finally:
        plt.close("all")
    assert (tmp_path / "comparison.png").stat().st_size > 1000


def test_plot_fusion_comparison_on_a_search_strategies_result(tmp_path):
    from modelfusion.eval import plot_fusion_comparison
    from modelfusion.strategy import search_strategies

    preds, y = _two_members(n=120)
    result = search_strategies(preds, y, metric="accuracy", strategies=["mean", "weighted", "maxconf"], cv=3)
    plt.figure()
    try:
        ax = plot_fusion_comparison(result)
        assert ax.get_ylabel() == "accuracy"
        assert {t.get_text() for t in ax.get_xticklabels()} == set(result.fold_scores)
        ax.figure.savefig(tmp_path / "search.png")
    finally:
        plt.close("all")


# -- item 8: Bayesian weight search -------------------------------------------------------------


def test_bayes_weights_reach_a_validation_nll_no_worse_than_a_20_point_grid():
    pytest.importorskip("optuna")
    from modelfusion.evaluation import nll
    from modelfusion.strategy import OptimizedWeights

    preds, y = _two_members()
    p = preds.proba.astype(np.float64)
    grid = min(nll(y, w * p[0] + (1 - w) * p[1]) for w in np.linspace(0.0, 1.0, 20))
    bayes = OptimizedWeights(method="bayes", n_calls=20, sampler="gp", random_state=0).fit(preds, y)
    assert bayes.n_evaluations_ == 20
    assert bayes.loss_ <= grid + 1e-9
    assert nll(y, bayes.combine(preds)) <= grid + 1e-6


# -- item 9: TensorRTConverter (modelfusion.deploy comes with issue 4) ---------------------------

needs_deploy = pytest.mark.skipif(
    importlib.util.find_spec("modelfusion.deploy") is None,
    reason="modelfusion.deploy (issue 4) is not there yet",
)


@needs_deploy
def test_tensorrt_converter_without_tensorrt_names_what_is_missing(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are here: the engine is built by the runtime tests")
    from modelfusion.deploy import TensorRTConverter

    path = tmp_path / "fused_model.pth"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=-1))), str(path))
    converter = TensorRTConverter(
        model_path=path, output_path=tmp_path / "fused_model.engine", precision="fp16", input_shape=(4,)
    )
    with pytest.raises(ModelFusionError, match=r"(?i)tensorrt|cuda") as err:
        converter.convert()
    assert re.search(r"modelfusion export \S+ --format onnx", str(err.value))
    assert not (tmp_path / "fused_model.engine").exists()


@needs_deploy
def test_a_state_dict_pth_asks_for_the_architecture(tmp_path):
    from modelfusion.deploy import TensorRTConverter

    path = tmp_path / "fused_model.pth"
    torch.save(nn.Linear(4, 3).state_dict(), path)
    converter = TensorRTConverter(
        model_path=path, output_path=tmp_path / "fused_model.engine", precision="fp16"
    )
    with pytest.raises(ModelFusionError, match="architecture"):
        converter.convert()

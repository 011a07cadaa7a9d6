"""KerasMember: .keras and .h5 files on the torch backend, input-shape checks, safe mode."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from modelfusion.errors import MemberLoadError, MissingDependencyError, UnsafeFormatError
from modelfusion.members import KerasMember, ModelLoader, load_member

# Keras' torch backend converts tensors with np.array(x), which numpy 2 flags; not our code.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_keras_file_loads_and_matches_the_model(keras_path, keras_model, X):
    member = load_member(keras_path)
    assert isinstance(member, KerasMember) and member.name == "digits"
    np.testing.assert_allclose(member.predict(X), keras_model.predict(X, verbose=0), atol=1e-6)


def test_keras_h5_file_loads(h5_path, keras_model, X):
    np.testing.assert_allclose(load_member(h5_path).predict(X), keras_model.predict(X, verbose=0), atol=1e-6)


def test_keras_softmax_head_is_proba_and_linear_head_is_logits(keras_model):
    import keras

    linear = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    assert load_member(keras_model).output_kind == "proba"
    assert load_member(linear).output_kind == "logits"


def test_keras_matching_input_shape_is_accepted(keras_path):
    assert load_member(keras_path, input_shape=(64,)).input_shape == (64,)


def test_keras_input_shape_mismatch_names_both_shapes(keras_path):
    with pytest.raises(MemberLoadError, match=r"input_shape=\(8, 8\).*\(64,\)"):
        load_member(keras_path, input_shape=(8, 8))


def test_model_loader_checks_the_keras_input_shape(keras_path):
    loader = ModelLoader(framework="keras", model_path=keras_path, input_shape=(63,))
    with pytest.raises(MemberLoadError, match=r"\(63,\)"):
        loader.load()


def test_keras_lambda_layer_is_refused_without_trust(tmp_path):
    import keras

    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Lambda(lambda z: z * 2.0), keras.layers.Dense(2)]
    )
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(UnsafeFormatError, match="trust=True"):
        load_member(path)
    assert load_member(path, trust=True).predict(np.ones((1, 4), np.float32)).shape == (1, 2)


def test_keras_corrupt_file_raises_member_load_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a keras archive")
    with pytest.raises(MemberLoadError, match="broken.keras"):
        load_member(path)


def test_keras_save_round_trip_gives_identical_predictions(keras_path, X, tmp_path):
    member = load_member(keras_path, classes=list(range(10)))
    spec = member.save(tmp_path / "saved")
    restored = KerasMember.load_saved(tmp_path / "saved", spec)
    np.testing.assert_allclose(restored.predict(X), member.predict(X), atol=1e-6)
    assert restored.classes.tolist() == list(range(10))


def test_keras_fingerprint_is_stable_across_reloads_and_differs_for_other_weights(keras_path, h5_path):
    import keras

    first = load_member(keras_path).fingerprint()
    assert first == load_member(keras_path).fingerprint() == load_member(h5_path).fingerprint()
    keras.utils.set_random_seed(1)
    other = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16), keras.layers.Dense(10)])
    assert load_member(other).fingerprint() != first


def test_keras_n_parameters_is_count_params(keras_model):
    assert load_member(keras_model).n_parameters == 64 * 16 + 16 + 16 * 10 + 10


def test_keras_on_another_backend_is_refused(keras_model, monkeypatch):
    import keras

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(MemberLoadError, match="'jax' backend.*KERAS_BACKEND=torch"):
        load_member(keras_model)


def test_missing_keras_names_the_extra_to_install(keras_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(
        MissingDependencyError, match=r'a Keras member needs keras, .*pip install "modelfusion\[keras\]"'
    ):
        load_member(keras_path)

"""The prediction store: PredictionSet validation, score_members, the on-disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from modelfusion.errors import PredictionError
from modelfusion.members.base import Member, sha256_arrays
from modelfusion.predictions import PredictionSet, score_members


class CountingMember(Member):
    """A real fitted scikit-learn classifier that counts how often it is run."""

    framework = "sklearn"

    def __init__(self, estimator, name, classes=None, scale=1.0, kind="proba"):
        super().__init__(
            name=name, output_kind=kind, classes=estimator.classes_ if classes is None else classes
        )
        self.estimator, self.calls, self.scale = estimator, 0, scale

    def _predict(self, batch):
        self.calls += 1
        return self.estimator.predict_proba(batch) * self.scale

    def fingerprint(self) -> str:
        return sha256_arrays([self.estimator.coef_]) if hasattr(self.estimator, "coef_") else self.name

    def save(self, directory: Path) -> dict:  # pragma: no cover - not used here
        raise NotImplementedError

    @classmethod
    def load_saved(cls, directory, spec):  # pragma: no cover
        raise NotImplementedError


@pytest.fixture(scope="module")
def fitted(digits_split):
    d = digits_split
    return (
        LogisticRegression(max_iter=300).fit(d["X_train"], d["y_train"]),
        GaussianNB().fit(d["X_train"], d["y_train"]),
    )


def test_score_members_stacks_outputs_members_samples_classes(fitted, digits_split):
    preds = score_members(
        [CountingMember(fitted[0], "lr"), CountingMember(fitted[1], "nb")],
        digits_split["X_val"],
        y=digits_split["y_val"],
        batch_size=100,
    )
    assert preds.outputs.shape == (2, len(digits_split["X_val"]), 10)
    assert preds.names == ["lr", "nb"]
    np.testing.assert_allclose(preds.member("lr"), fitted[0].predict_proba(digits_split["X_val"]), atol=1e-6)
    assert preds.metadata["lr"]["latency_ms_per_sample"] > 0


def test_cache_hit_does_not_call_the_model(fitted, digits_split, tmp_path):
    first = CountingMember(fitted[0], "lr")
    a = score_members([first], digits_split["X_val"], cache_dir=tmp_path, batch_size=64)
    assert first.calls > 0
    second = CountingMember(fitted[0], "lr")
    b = score_members([second], digits_split["X_val"], cache_dir=tmp_path, batch_size=64)
    assert second.calls == 0
    assert b.metadata["lr"]["cached"] is True
    np.testing.assert_array_equal(a.outputs, b.outputs)


def test_cache_misses_when_the_data_changes(fitted, digits_split, tmp_path):
    score_members([CountingMember(fitted[0], "lr")], digits_split["X_val"], cache_dir=tmp_path)
    again = CountingMember(fitted[0], "lr")
    score_members([again], digits_split["X_test"], cache_dir=tmp_path)
    assert again.calls > 0


def test_cache_files_are_memory_mapped_npy(fitted, digits_split, tmp_path):
    score_members([CountingMember(fitted[0], "lr")], digits_split["X_val"], cache_dir=tmp_path)
    files = list(tmp_path.glob("lr-*.npy"))
    assert len(files) == 1
    assert isinstance(np.load(files[0], mmap_mode="r"), np.memmap)


def test_members_with_permuted_classes_are_aligned_by_label(fitted, digits_split):
    lr = fitted[0]
    perm = np.arange(10)[::-1]

    class Reversed(CountingMember):
        def _predict(self, batch):
            return lr.predict_proba(batch)[:, perm]

    preds = score_members(
        [CountingMember(lr, "a"), Reversed(lr, "b", classes=lr.classes_[perm])], digits_split["X_val"]
    )
    np.testing.assert_allclose(preds.outputs[0], preds.outputs[1], atol=1e-6)


def test_members_with_different_class_sets_name_both_members(fitted, digits_split):
    other = CountingMember(fitted[1], "nb", classes=np.arange(1, 11))
    with pytest.raises(PredictionError, match="'nb'.*'lr'"):
        score_members([CountingMember(fitted[0], "lr"), other], digits_split["X_val"])


def test_nan_outputs_name_the_member_and_sample_count(fitted, digits_split):
    class Broken(CountingMember):
        def _predict(self, batch):
            out = super()._predict(batch)
            out[:3] = np.nan
            return out

    with pytest.raises(PredictionError, match=r"broken \(3 of"):
        score_members([Broken(fitted[0], "broken")], digits_split["X_val"][:50], batch_size=64)


def test_duplicate_member_names_are_an_error():
    with pytest.raises(PredictionError, match="unique; repeated: a"):
        PredictionSet(np.full((2, 5, 3), 1 / 3), names=["a", "a"])


def test_output_widths_that_differ_are_an_error():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=5)
    with pytest.raises(ValueError):
        PredictionSet([p, p[:, :2]])


def test_probabilities_out_of_range_suggest_logits():
    with pytest.raises(PredictionError, match="output_kind='logits'"):
        PredictionSet(np.full((1, 4, 3), 2.0), names=["raw"], kind="proba")


def test_logits_convert_to_probabilities_that_sum_to_one():
    z = np.random.default_rng(0).normal(size=(2, 7, 4))
    preds = PredictionSet(z, kind="logits")
    np.testing.assert_allclose(preds.proba.sum(axis=2), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.exp(preds.log_proba), preds.proba, atol=1e-6)


def test_binary_single_column_is_expanded_to_two_classes():
    p = np.array([[[0.2], [0.9]]])
    preds = PredictionSet(p, kind="proba")
    np.testing.assert_allclose(preds.proba[0], [[0.8, 0.2], [0.1, 0.9]], atol=1e-7)


def test_encode_labels_rejects_unknown_labels():
    preds = PredictionSet(np.full((1, 2, 2), 0.5), classes=["cat", "dog"])
    np.testing.assert_array_equal(preds.encode_labels(["dog", "cat"]), [1, 0])
    with pytest.raises(PredictionError, match="emu"):
        preds.encode_labels(["emu", "cat"])


def test_prediction_set_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    preds = PredictionSet(
        rng.dirichlet(np.ones(3), size=(2, 6)),
        names=["x", "y"],
        classes=["a", "b", "c"],
        labels=np.array(["a", "b", "c", "a", "b", "c"]),
    )
    loaded = PredictionSet.load(preds.save(tmp_path / "p.npz"))
    np.testing.assert_array_equal(loaded.outputs, preds.outputs)
    assert loaded.names == ["x", "y"] and loaded.classes.tolist() == ["a", "b", "c"]
    assert loaded.labels.tolist() == preds.labels.tolist()


def test_take_keeps_labels_and_cached_views_in_step():
    rng = np.random.default_rng(1)
    preds = PredictionSet(rng.dirichlet(np.ones(3), size=(2, 10)), labels=rng.integers(0, 3, 10))
    _ = preds.proba
    part = preds.take([1, 3, 5])
    np.testing.assert_array_equal(part.labels, preds.labels[[1, 3, 5]])
    np.testing.assert_allclose(part.proba, preds.proba[:, [1, 3, 5]])


def test_a_dict_keyed_by_member_names_gives_each_member_its_own_input(fitted, digits_split):
    X = digits_split["X_val"]
    preds = score_members(
        [CountingMember(fitted[0], "lr"), CountingMember(fitted[1], "nb")], {"lr": X, "nb": X[::-1].copy()}
    )
    np.testing.assert_allclose(preds.member("nb"), fitted[1].predict_proba(X[::-1]), atol=1e-6)


def test_cache_key_changes_with_the_members_preprocessing(fitted, digits_split, tmp_path):
    X = digits_split["X_val"]
    plain = CountingMember(fitted[0], "lr")
    score_members([plain], X, cache_dir=tmp_path)
    scaled = CountingMember(fitted[0], "lr")
    scaled.preprocess, scaled.preprocess_spec = (lambda b: b * 2.0), {"scale": 2.0}
    out = score_members([scaled], X, cache_dir=tmp_path)
    assert scaled.calls > 0
    np.testing.assert_allclose(out.member("lr"), fitted[0].predict_proba(X * 2.0), atol=1e-6)


def test_member_with_an_unhashable_preprocess_callable_is_not_cached(fitted, digits_split, tmp_path):
    member = CountingMember(fitted[0], "lr")
    member.preprocess = lambda b: b
    score_members([member], digits_split["X_val"], cache_dir=tmp_path)
    score_members([member], digits_split["X_val"], cache_dir=tmp_path)
    assert member.calls == 2 * int(np.ceil(len(digits_split["X_val"]) / 256))
    assert not list(tmp_path.glob("lr-*.npy"))


def test_validation_and_test_memmap_stacks_do_not_share_a_file(fitted, digits_split, tmp_path, monkeypatch):
    import modelfusion.predictions as predictions

    monkeypatch.setattr(predictions, "_MEMMAP_THRESHOLD", 0)
    members = [CountingMember(fitted[0], "lr")]
    n = min(len(digits_split["X_val"]), len(digits_split["X_test"]))
    val = score_members(members, digits_split["X_val"][:n], cache_dir=tmp_path)
    test = score_members(members, digits_split["X_test"][:n], cache_dir=tmp_path)
    assert isinstance(val.outputs, np.memmap)
    assert not np.allclose(val.outputs, test.outputs)


def test_object_labels_save_without_pickle(tmp_path):
    preds = PredictionSet(
        np.full((1, 2, 2), 0.5),
        classes=np.array(["a", "b"], dtype=object),
        labels=np.array(["b", "a"], dtype=object),
    )
    loaded = PredictionSet.load(preds.save(tmp_path / "p.npz"))
    assert loaded.labels.tolist() == ["b", "a"] and loaded.classes.tolist() == ["a", "b"]


@pytest.mark.parametrize("tamper", ["shuffle_rows", "roll_columns", "uniform", "truncate", "no_digest"])
def test_a_tampered_cache_entry_is_a_miss_that_is_scored_again_and_rewritten(
    fitted, digits_split, tmp_path, tamper
):
    X = digits_split["X_val"]
    fresh = score_members([CountingMember(fitted[0], "lr")], X, cache_dir=tmp_path).outputs.copy()
    (entry,) = tmp_path.glob("lr-*.npy")
    arr = np.load(entry)
    if tamper == "shuffle_rows":
        np.save(entry, arr[np.random.default_rng(0).permutation(len(arr))])
    elif tamper == "roll_columns":
        np.save(entry, np.roll(arr, 1, axis=1))
    elif tamper == "uniform":
        np.save(entry, np.full_like(arr, 1.0 / arr.shape[1]))
    elif tamper == "truncate":
        entry.write_bytes(entry.read_bytes()[:100])
    else:
        entry.with_suffix(".json").unlink()  # a writer killed between the two renames
    again = CountingMember(fitted[0], "lr")
    with pytest.warns(UserWarning, match="does not match its recorded digest.*scoring the member again"):
        out = score_members([again], X, cache_dir=tmp_path)
    assert again.calls > 0
    np.testing.assert_array_equal(out.outputs, fresh)
    third = CountingMember(fitted[0], "lr")
    score_members([third], X, cache_dir=tmp_path)  # rewritten: a clean hit now
    assert third.calls == 0


def test_concurrent_runs_sharing_a_cache_never_read_a_half_written_entry(fitted, digits_split, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    X = digits_split["X_val"]
    expected = fitted[0].predict_proba(X)

    def run(_):
        return score_members([CountingMember(fitted[0], "lr")], X, cache_dir=tmp_path).outputs[0]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(16)))
    for out in results:
        np.testing.assert_allclose(out, expected, atol=1e-6)
    assert not list(tmp_path.glob(".*tmp*"))  # every write was renamed into place


class _Fixed(Member):
    """A member that returns given outputs, with or without declared classes."""

    framework = "sklearn"

    def __init__(self, name, outputs, classes=None, kind="proba"):
        super().__init__(name=name, output_kind=kind, classes=classes)
        self.outputs = np.asarray(outputs, dtype=np.float32)

    def _predict(self, batch):
        return self.outputs[: len(batch)]

    def fingerprint(self) -> str:
        return sha256_arrays([self.outputs])

    def save(self, directory):  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def load_saved(cls, directory, spec, *, trust=False):  # pragma: no cover
        raise NotImplementedError


def test_a_member_without_classes_is_read_in_label_order_not_in_another_members_declared_order():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=50).astype(np.float32)  # columns = classes 0, 1, 2, 3
    permuted = _Fixed("declares", p[:, [2, 0, 3, 1]], classes=[2, 0, 3, 1])
    plain = _Fixed("plain", p)  # torch/ONNX-like: no class information, index order
    for members in ([permuted, plain], [plain, permuted]):  # the order they are listed in does not matter
        preds = score_members(members, np.zeros((50, 3)))
        assert preds.classes.tolist() == [0, 1, 2, 3]
        np.testing.assert_allclose(preds.member("declares"), p, atol=1e-6)
        np.testing.assert_allclose(preds.member("plain"), p, atol=1e-6)


def test_members_whose_classes_share_nothing_are_an_error_naming_both():
    a = _Fixed("a", np.full((5, 2), 0.5), classes=["cat", "dog"])
    b = _Fixed("b", np.full((5, 2), 0.5), classes=["car", "bus"])
    with pytest.raises(
        PredictionError, match=r"'b' predicts classes \['car', 'bus'\] but 'a' predicts.*no member covers"
    ):
        score_members([a, b], np.zeros((5, 1)))


def test_a_member_trained_on_fewer_classes_gets_zero_probability_for_the_others(fitted, digits_split):
    d = digits_split
    keep = d["y_train"] != 7
    partial = LogisticRegression(max_iter=300).fit(d["X_train"][keep], d["y_train"][keep])
    with pytest.warns(UserWarning, match=r"member 'partial' was trained without class\(es\) \[7\]"):
        preds = score_members(
            [CountingMember(fitted[0], "full"), CountingMember(partial, "partial")], d["X_val"], y=d["y_val"]
        )
    assert preds.outputs.shape == (2, len(d["X_val"]), 10)
    np.testing.assert_array_equal(preds.member("partial")[:, 7], 0.0)
    np.testing.assert_allclose(preds.member("partial").sum(axis=1), 1.0, atol=1e-5)


def test_probabilities_declared_as_logits_are_warned_about_naming_the_member():
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=20)
    with pytest.warns(
        UserWarning, match=r"member 'soft' is declared with output_kind 'logits'.*softmaxed twice"
    ):
        score_members([_Fixed("soft", p, kind="logits")], np.zeros((20, 2)))


def test_nan_in_the_inputs_is_named_by_row_and_column_before_any_member_runs(fitted, digits_split):
    X = digits_split["X_val"].copy()
    X[17, 5] = np.nan
    member = CountingMember(fitted[0], "lr")
    with pytest.raises(PredictionError, match=r"1 NaN or infinite value\(s\), the first in row 17, column 5"):
        score_members([member], X)
    assert member.calls == 0


def test_splits_too_small_to_rank_strategies_are_warned_about():
    from modelfusion.stages import small_split_warnings as _small_split_warnings

    (val, test) = _small_split_warnings(4, 4, cv=5)
    assert "4 rows: 5-fold cross-validation needs at least 50" in val and "test split has 4 rows" in test
    assert _small_split_warnings(500, 500, cv=5) == []

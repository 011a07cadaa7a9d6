"""load_dataset on real files written to tmp_path, and its errors."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest
from PIL import Image

from modelfusion.data import DataError, DataFileNotFoundError, Dataset, load_dataset
from modelfusion.errors import MissingDependencyError, ModelFusionError

# -- tables ---------------------------------------------------------------------------------


def _write_csv(path, header, rows, delimiter=","):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_csv_uses_the_label_column_and_every_other_numeric_column(tmp_path):
    rows = [[0.5, 1, "red", 0], [1.5, 2, "blue", 1], [2.5, 3, "red", 2]]
    path = _write_csv(tmp_path / "train.csv", ["a", "b", "colour", "label"], rows)
    ds = load_dataset(path)
    assert ds.X.dtype == np.float32 and ds.X.shape == (3, 2)
    np.testing.assert_allclose(ds.X[:, 0], [0.5, 1.5, 2.5])
    assert ds.y.tolist() == [0, 1, 2] and ds.y.dtype == np.int64
    assert ds.feature_names == ["a", "b"]
    assert ds.meta["dropped_columns"] == ["colour"]
    assert ds.name == "train"


def test_csv_relative_path_resolves_against_base_dir(tmp_path):
    _write_csv(tmp_path / "t.csv", ["x", "target"], [[1, 0], [2, 1]])
    ds = load_dataset("t.csv", base_dir=tmp_path, features=["x"])
    assert ds.meta["label_column"] == "target"
    assert ds.X.shape == (2, 1)


def test_tsv_keeps_string_labels_as_strings(tmp_path):
    rows = [["good film", "pos"], ["bad film", "neg"], ["fine", "pos"]]
    path = _write_csv(tmp_path / "reviews.tsv", ["text", "sentiment"], rows, delimiter="\t")
    ds = load_dataset(path, label="sentiment", text_column="text")
    assert ds.X == ["good film", "bad film", "fine"]
    assert ds.y.tolist() == ["pos", "neg", "pos"] and ds.y.dtype.kind == "U"
    assert ds.class_names == ["neg", "pos"]


def test_csv_missing_values_become_nan(tmp_path):
    path = _write_csv(tmp_path / "m.csv", ["x", "y"], [["1", "0"], ["", "1"], ["NA", "0"]])
    ds = load_dataset(path)
    assert np.isnan(ds.X[1:, 0]).all() and ds.X[0, 0] == 1


def test_missing_label_column_names_file_columns_and_close_match(tmp_path):
    path = _write_csv(tmp_path / "d.csv", ["f1", "f2", "Labels"], [[1, 2, 0]])
    with pytest.raises(
        DataError, match=r"d\.csv.*no label column 'label'.*did you mean 'Labels'.*f1, f2, Labels"
    ):
        load_dataset(path)
    with pytest.raises(ValueError, match=r"no label column 'clas'.*did you mean 'class'"):
        load_dataset(_write_csv(tmp_path / "e.csv", ["f1", "class"], [[1, 0]]), label="clas")


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(
        MissingDependencyError, match=r'needs pyarrow, .*pip install "modelfusion\[parquet\]"'
    ):
        load_dataset(path)


# -- numpy files ----------------------------------------------------------------------------


def test_npz_finds_inputs_and_labels_by_conventional_keys(tmp_path):
    X, y = np.arange(12, dtype=np.float32).reshape(6, 2), np.array([0, 1, 0, 1, 0, 1])
    np.savez(tmp_path / "d.npz", features=X, labels=y)
    ds = load_dataset(tmp_path / "d.npz")
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.meta["input_key"] == "features" and ds.meta["label_key"] == "labels"


def test_npz_label_option_picks_the_label_key(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((3, 2)), y=np.zeros(3), truth=np.array([2, 1, 0]))
    assert load_dataset(tmp_path / "d.npz", label="truth").y.tolist() == [2, 1, 0]


def test_npz_without_recognisable_keys_lists_the_keys_found(tmp_path):
    np.savez(tmp_path / "odd.npz", pixels=np.zeros((3, 2)), answers=np.zeros(3))
    with pytest.raises(DataError, match=r"odd\.npz.*no inputs array.*keys found: pixels, answers.*input_key"):
        load_dataset(tmp_path / "odd.npz")


def test_npz_with_pickled_objects_is_refused_without_trust(tmp_path):
    np.savez(tmp_path / "p.npz", X=np.array([{"a": 1}, {"b": 2}], dtype=object))
    with pytest.raises(DataError, match="trust=True"):
        load_dataset(tmp_path / "p.npz")
    assert len(load_dataset(tmp_path / "p.npz", trust=True)) == 2


def test_npy_with_labels_from_a_sibling_file(tmp_path):
    X = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", np.array([1, 0, 1, 0, 1]))
    (tmp_path / "y.txt").write_text("cat\ndog\ncat\ndog\ncat\n")
    ds = load_dataset(tmp_path / "X.npy", labels="y.npy")
    np.testing.assert_array_equal(ds.X, X)
    assert ds.y.tolist() == [1, 0, 1, 0, 1]
    assert load_dataset(tmp_path / "X.npy", labels=tmp_path / "y.txt").y.tolist()[:2] == ["cat", "dog"]
    assert load_dataset(tmp_path / "X.npy").y is None


# -- image folders --------------------------------------------------------------------------


def _image_folder(root, size=(6, 5), classes=("cat", "dog", "owl"), per_class=4, mode="RGB"):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (*size, 3) if mode == "RGB" else size
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_image_folder_gives_float_nchw_in_unit_range_and_class_indices(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    ds = load_dataset(root)
    assert ds.X.shape == (12, 3, 6, 5) and ds.X.dtype == np.float32
    assert ds.X.min() >= 0.0 and ds.X.max() <= 1.0
    assert ds.class_names == ["cat", "dog", "owl"]
    assert ds.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ds.meta["image_shape"] == (3, 6, 5)
    expected = np.asarray(Image.open(root / "dog" / "0.png"), dtype=np.float32).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(ds.X[4], expected)


def test_image_folder_of_grey_images_has_one_channel_and_resizes(tmp_path):
    root = _image_folder(tmp_path / "grey", mode="L")
    ds = load_dataset(root, image_size=(4, 7))
    assert ds.X.shape == (12, 1, 4, 7)


def test_image_folder_with_mixed_sizes_names_two_sizes_and_suggests_image_size(tmp_path):
    root = _image_folder(tmp_path / "mixed", size=(6, 5))
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "owl" / "9.png")
    with pytest.raises(DataError, match=r"different sizes.*6x5.*owl/9\.png is 9x9.*image_size"):
        load_dataset(root)
    assert load_dataset(root, image_size=8).X.shape == (13, 3, 8, 8)


# -- factories ------------------------------------------------------------------------------


def test_factory_in_a_module_next_to_the_config(tmp_path):
    (tmp_path / "mf_test_factory_mod.py").write_text(
        "import numpy as np\n"
        "def make(n=4):\n"
        "    return np.ones((n, 2), np.float32), np.arange(n) % 2\n"
        "def as_dict():\n"
        "    return {'X': ['a', 'b'], 'y': [0, 1], 'class_names': ['no', 'yes']}\n"
    )
    ds = load_dataset("mf_test_factory_mod:make", base_dir=tmp_path, n=6)
    assert ds.X.shape == (6, 2) and ds.y.tolist() == [0, 1, 0, 1, 0, 1]
    assert str(tmp_path) not in sys.path
    ds = load_dataset("mf_test_factory_mod:as_dict", base_dir=tmp_path)
    assert ds.X == ["a", "b"] and ds.class_names == ["no", "yes"]


def test_factory_errors_are_clear(tmp_path):
    (tmp_path / "mf_test_factory_bad.py").write_text("def make():\n    return 3\n")
    with pytest.raises(DataError, match="cannot import module 'mf_no_such_module'"):
        load_dataset("mf_no_such_module:make", base_dir=tmp_path)
    with pytest.raises(DataError, match="has no function 'mak'.*did you mean 'make'"):
        load_dataset("mf_test_factory_bad:mak", base_dir=tmp_path)
    with pytest.raises(DataError, match=r"returned int; return \(X, y\)"):
        load_dataset("mf_test_factory_bad:make", base_dir=tmp_path)


# -- bad sources ----------------------------------------------------------------------------


def test_missing_file_raises_file_not_found_with_resolved_path(tmp_path):
    with pytest.raises(DataFileNotFoundError, match=r"'data/nope\.csv' does not exist.*relative to") as info:
        load_dataset("data/nope.csv", base_dir=tmp_path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ModelFusionError)
    assert str(tmp_path / "data" / "nope.csv") in str(info.value)


def test_unknown_extension_lists_supported_formats(tmp_path):
    (tmp_path / "table.xlsx").write_bytes(b"x")
    with pytest.raises(DataError, match=r"'\.xlsx'.*supported: \.csv, \.npy, \.npz"):
        load_dataset(tmp_path / "table.xlsx")
    with pytest.raises(DataError, match="unknown data format 'excel'"):
        load_dataset(tmp_path / "table.xlsx", format="excel")


def test_unknown_option_is_reported(tmp_path):
    path = _write_csv(tmp_path / "t.csv", ["x", "label"], [[1, 0]])
    with pytest.raises(DataError, match=r"unknown option\(s\) 'image_size' for csv data; valid: text_column"):
        load_dataset(path, image_size=4)


# -- the Dataset object ---------------------------------------------------------------------


def test_dataset_indexing_works_for_every_input_form():
    y = np.array([0, 1, 2, 3])
    images = [np.zeros((1, 2, 2)), np.ones((1, 3, 3)), np.zeros((1, 2, 2)), np.ones((1, 2, 2))]
    for X in (
        np.arange(8).reshape(4, 2),
        ["a", "b", "c", "d"],
        images,
        {"t": ["a", "b", "c", "d"], "v": np.eye(4)},
    ):
        ds = Dataset(X, y, name="d")
        sub = ds[np.array([3, 1])]
        assert len(sub) == 2 and sub.y.tolist() == [3, 1]
        assert len(ds[1:3]) == 2 and len(ds[y > 1]) == 2
    assert ds[np.array([2])].X["t"] == ["c"]


def test_dataset_rejects_modalities_of_different_lengths():
    with pytest.raises(DataError, match="every modality must have one length"):
        Dataset({"image": np.zeros((3, 2)), "text": ["a", "b"]})


def test_fingerprint_is_stable_and_changes_with_labels():
    X = np.arange(6, dtype=np.float32).reshape(3, 2)
    a, b = Dataset(X, np.array([0, 1, 0])), Dataset(X.copy(), np.array([0, 1, 0]))
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != Dataset(X, np.array([0, 1, 1])).fingerprint()
    assert Dataset(["a", "b"], np.array(["x", "y"], dtype=object)).fingerprint()
    assert Dataset([np.zeros((2, 2)), np.zeros((3, 3))]).fingerprint()


def test_a_parquet_table_loads_with_the_parquet_extra(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"a": [0.1, 0.2, 0.3], "b": [1.0, 2.0, 3.0], "label": ["x", "y", "x"]}),
        tmp_path / "t.parquet",
    )
    ds = load_dataset(tmp_path / "t.parquet")
    assert ds.X.shape == (3, 2) and ds.y.tolist() == ["x", "y", "x"] and ds.feature_names == ["a", "b"]

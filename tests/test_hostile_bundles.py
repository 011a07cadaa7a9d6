"""Hostile and damaged bundles: nothing runs without trust, no path leaves the bundle, no tampering goes unseen.

Each test builds the hostile file itself. Where a payload could run code, it would write a
marker file; the test checks that the marker never appears.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from modelfusion import FusedModel, load_member, score_members
from modelfusion.errors import BundleError, MemberLoadError, StrategyError, UnsafeFormatError
from modelfusion.examples.digits import MLP
from modelfusion.manifest import manifest_digest
from modelfusion.strategies import Mean

SAFE_MLP = "modelfusion.examples.digits:MLP"


@pytest.fixture(scope="module")
def members(digits_split):
    d = digits_split
    torch.manual_seed(0)
    net = load_member(
        MLP(hidden=8),
        name="net",
        output_kind="logits",
        architecture=SAFE_MLP,
        architecture_kwargs={"hidden": 8},
    )
    lr = load_member(LogisticRegression(max_iter=200).fit(d["X_train"], d["y_train"]), name="lr")
    return [net, lr]


@pytest.fixture(scope="module")
def saved(members, digits_split, tmp_path_factory) -> Path:
    preds = score_members(members, digits_split["X_val"], y=digits_split["y_val"])
    return FusedModel(members, Mean().fit(preds)).save(tmp_path_factory.mktemp("saved") / "bundle")


@pytest.fixture
def bundle(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "bundle"))


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _rewrite(path: Path, manifest: dict, *, resign: bool = True) -> None:
    """Write a manifest as an attacker who rewrites the whole bundle would: digest file updated too."""
    text = json.dumps(manifest, indent=2)
    (path / "manifest.json").write_text(text)
    if resign:
        (path / "bundle.sha256").write_text(f"{hashlib.sha256(text.encode()).hexdigest()}  manifest.json\n")


def _add_file(path: Path, rel: str, data: bytes, manifest: dict) -> None:
    (path / rel).parent.mkdir(parents=True, exist_ok=True)
    (path / rel).write_bytes(data)
    manifest["checksums"][rel] = hashlib.sha256(data).hexdigest()


class _Payload:
    """Unpickling this writes the marker file: what a malicious pickle would do instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"with open({self.marker!r}, 'w') as f: f.write('ran')",))


def _mlp_onnx(path: Path) -> Path:
    """A small MLP for 64 features exported to ONNX with a dynamic batch."""
    torch.onnx.export(
        MLP(hidden=8).eval(),
        (torch.zeros(2, 64),),
        str(path),
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
    )
    return path


# -- code runs without trust ----------------------------------------------------------------


@pytest.mark.parametrize(
    "architecture, kwargs",
    [
        ("modelfusion.examples.digits:torch.os.system", {"command": "touch {marker}"}),
        ("modelfusion.examples.digits:torch.load", {"f": "{payload}", "weights_only": False}),
        ("modelfusion.examples.digits:load_dataset", {"source": "{payload}"}),
        ("os:system", {"command": "touch {marker}"}),
    ],
)
def test_a_manifest_architecture_outside_the_exact_list_never_runs(bundle, tmp_path, architecture, kwargs):
    marker = tmp_path / "marker"
    manifest = _manifest(bundle)
    payload = bundle / manifest["members"][0]["dir"] / "payload.pt"
    torch.save(_Payload(marker), payload)
    manifest["checksums"][payload.relative_to(bundle).as_posix()] = hashlib.sha256(
        payload.read_bytes()
    ).hexdigest()
    manifest["members"][0]["architecture"] = architecture
    manifest["members"][0]["architecture_kwargs"] = {
        k: v.format(marker=marker, payload=payload) if isinstance(v, str) else v for k, v in kwargs.items()
    }
    _rewrite(bundle, manifest)
    with pytest.raises(
        UnsafeFormatError, match=rf"{architecture.replace('.', '[.]')}.*not a known network.*trust"
    ):
        FusedModel.load(bundle)
    assert not marker.exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden": 8, "checkpoint_path": "x.pt"}, "could load files or code"),
        ({"hidden": 8, "weights_only": False}, "could load files or code"),
        ({"hidden": 8, "n_layers": 3}, "takes no argument 'n_layers'"),
        ({"hidden": {"__class__": "os.system"}}, "must be a number, string, boolean"),
    ],
)
def test_a_listed_architecture_refuses_arguments_that_load_files_or_it_does_not_declare(
    bundle, kwargs, message
):
    manifest = _manifest(bundle)
    manifest["members"][0]["architecture_kwargs"] = kwargs
    _rewrite(bundle, manifest)
    with pytest.raises(UnsafeFormatError, match=message):
        FusedModel.load(bundle)


def test_a_named_architecture_refuses_a_checkpoint_argument(bundle):
    manifest = _manifest(bundle)
    manifest["members"][0]["architecture"] = "resnet18"
    manifest["members"][0]["architecture_kwargs"] = {"pretrained_cfg_overlay": "evil"}
    _rewrite(bundle, manifest)
    with pytest.raises(UnsafeFormatError, match="pretrained_cfg_overlay.*could load files or code"):
        FusedModel.load(bundle)


def test_a_listed_architecture_loads_and_register_architecture_extends_the_list(saved, digits_split, members):
    from modelfusion import register_architecture
    from modelfusion.members.architectures import SAFE_FACTORIES
    from tests.members.architectures import make_mlp

    model = FusedModel.load(saved)  # modelfusion.examples.digits:MLP is on the list
    np.testing.assert_allclose(model.predict_proba(digits_split["X_test"][:8]).sum(axis=1), 1.0, atol=1e-5)
    member = load_member(
        make_mlp(), name="m", output_kind="logits", architecture="tests.members.architectures:make_mlp"
    )
    preds = score_members([member], digits_split["X_val"], y=digits_split["y_val"])
    path = FusedModel([member], Mean().fit(preds)).save(saved.parent / "registered")
    with pytest.raises(UnsafeFormatError):
        FusedModel.load(path)
    register_architecture("tests.members.architectures:make_mlp")
    try:
        assert FusedModel.load(path).names == ["m"]
    finally:
        SAFE_FACTORIES.discard("tests.members.architectures:make_mlp")


def _exported_program(tmp_path: Path) -> Path:
    net = torch.nn.Sequential(torch.nn.Linear(64, 10))
    program = torch.export.export(
        net, (torch.zeros(2, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    path = tmp_path / "model.pt2"
    torch.export.save(program, path)
    return path


def _poison_pt2(path: Path, marker: Path) -> None:
    """Replace the archive's sample inputs with a pickle that writes ``marker`` when torch unpickles it."""
    import io
    import zipfile

    evil = io.BytesIO()
    torch.save(_Payload(marker), evil)
    with zipfile.ZipFile(path) as src:
        entries = {info.filename: src.read(info) for info in src.infolist()}
    name = next(n for n in entries if n.endswith("sample_inputs/model.pt"))
    entries[name] = evil.getvalue()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for n, data in entries.items():
            dst.writestr(n, data)


def test_a_pt2_archive_with_a_pickle_is_refused_before_torch_reads_it(tmp_path):
    marker = tmp_path / "marker"
    path = _exported_program(tmp_path)
    assert load_member(path, name="ok").predict(np.zeros((3, 64), np.float32)).shape == (3, 10)
    _poison_pt2(path, marker)
    with pytest.raises(UnsafeFormatError, match=r"sample_inputs/model.pt.*unpickle.*trust"):
        load_member(path, name="evil")
    assert not marker.exists()
    with contextlib.suppress(Exception):  # the payload is live: trusted, torch unpickles it
        load_member(path, name="trusted", trust=True)
    assert marker.exists()


def test_a_bundle_member_pt2_with_a_pickle_is_refused(digits_split, tmp_path):
    marker = tmp_path / "marker"
    member = load_member(torch.nn.Sequential(torch.nn.Linear(64, 10)), name="plain", input_shape=(64,))
    preds = score_members([member], digits_split["X_val"], y=digits_split["y_val"])
    path = FusedModel([member], Mean().fit(preds)).save(tmp_path / "bundle")
    manifest = _manifest(path)
    rel = next(k for k in manifest["checksums"] if k.endswith("model.pt2"))
    _poison_pt2(path / rel, marker)
    manifest["checksums"][rel] = hashlib.sha256((path / rel).read_bytes()).hexdigest()
    _rewrite(path, manifest)
    with pytest.raises(UnsafeFormatError, match="unpickle"):
        FusedModel.load(path)
    assert not marker.exists()


def test_onnx_session_settings_that_name_a_file_are_never_applied(tmp_path, digits_split):
    import onnx

    from modelfusion.runtime.session import SETTINGS_KEY

    target = tmp_path / "bashrc"
    path = _mlp_onnx(tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key = SETTINGS_KEY
    entry.value = json.dumps(
        {
            "config": {
                "session.collect_node_memory_stats_to_file": str(target),
                "session.disable_quant_qdq": "1",
            },
            "disabled_optimizers": ["../x"],
        }
    )
    onnx.save(proto, str(path))
    with pytest.warns(UserWarning, match="session.collect_node_memory_stats_to_file.*ignored"):
        member = load_member(path, name="m")
    member.predict(digits_split["X_test"][:16])
    assert not target.exists()


def test_a_declared_subarray_dtype_in_the_strategy_state_is_refused(bundle):
    manifest = _manifest(bundle)
    manifest["strategy"]["state"]["evil_"] = {"__list__": [0.0], "dtype": "(10000,20000)f8"}
    _rewrite(bundle, manifest)
    with pytest.raises(BundleError, match=r"dtype '\(10000,20000\)f8'"):
        FusedModel.load(bundle)


def test_a_strategy_state_naming_an_absent_array_is_a_bundle_error(bundle):
    manifest = _manifest(bundle)
    manifest["strategy"]["state"]["evil_"] = {"__array__": "nowhere"}
    _rewrite(bundle, manifest)
    with pytest.raises(BundleError, match="array 'nowhere'"):
        FusedModel.load(bundle)


# -- paths and tampering -------------------------------------------------------------------


def test_a_member_folder_outside_the_bundle_is_refused(bundle, saved, tmp_path):
    outside = Path(shutil.copytree(saved / "members" / "01-lr", tmp_path / "outside"))
    manifest = _manifest(bundle)
    for value in ("../outside", str(outside)):
        manifest["members"][1]["dir"] = value
        _rewrite(bundle, manifest)
        with pytest.raises(BundleError, match="outside the bundle|absolute path|not a folder under members"):
            FusedModel.load(bundle)


def test_a_symlink_leading_outside_the_bundle_is_refused(bundle, tmp_path):
    other = tmp_path / "other.skops"
    shutil.copy(next((bundle / "members" / "01-lr").iterdir()), other)
    target = next((bundle / "members" / "01-lr").iterdir())
    target.unlink()
    target.symlink_to(other)  # same bytes, so the checksum alone would pass
    with pytest.raises(BundleError, match="leads? outside the bundle|leading outside the bundle"):
        FusedModel.load(bundle)


def test_a_file_the_manifest_does_not_cover_is_refused(bundle):
    (bundle / "members" / "01-lr" / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"members/01-lr/extra.bin: not covered by a checksum"):
        FusedModel.load(bundle)


@pytest.mark.parametrize("damage", ["delete", "empty", "drop_member"])
def test_a_manifest_without_complete_checksums_is_refused(bundle, damage):
    manifest = _manifest(bundle)
    if damage == "delete":
        del manifest["checksums"]
    elif damage == "empty":
        manifest["checksums"] = {}
    else:
        manifest["checksums"] = {
            k: v for k, v in manifest["checksums"].items() if not k.startswith("members/01-lr/")
        }
    _rewrite(bundle, manifest)
    with pytest.raises(BundleError, match="checksums|not covered|no checksum covers"):
        FusedModel.load(bundle)


def test_a_manifest_changed_after_it_was_written_fails_its_digest(bundle):
    manifest = _manifest(bundle)
    manifest["metadata"] = {"edited": True}
    _rewrite(bundle, manifest, resign=False)
    with pytest.raises(BundleError, match="does not match bundle.sha256"):
        FusedModel.load(bundle)
    (bundle / "bundle.sha256").unlink()
    with pytest.raises(BundleError, match="no bundle.sha256"):
        FusedModel.load(bundle)


def test_expected_digest_pins_the_bundle(bundle, saved):
    digest = manifest_digest(saved)
    assert FusedModel.load(bundle, expected_digest=digest).names == ["net", "lr"]
    manifest = _manifest(bundle)
    manifest["metadata"] = {"rewritten": "whole"}
    _rewrite(bundle, manifest)  # an attacker who rewrites everything passes bundle.sha256 ...
    FusedModel.load(bundle)
    with pytest.raises(BundleError, match="not the one you pinned"):  # ... but not the pinned digest
        FusedModel.load(bundle, expected_digest=digest)


@pytest.mark.parametrize(
    "content, field",
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"[1, 2]", "JSON object, got list"),
        (b"members-string", "not valid JSON"),
        ("members", "members"),
        ("checksums", "checksums"),
        ("format_version", "format_version"),
    ],
)
def test_a_malformed_manifest_names_the_field(bundle, content, field):
    if isinstance(content, bytes):
        (bundle / "manifest.json").write_bytes(content)
    else:
        manifest = _manifest(bundle)
        manifest[content] = {"members": "a string", "checksums": ["a", "list"], "format_version": "2"}[
            content
        ]
        _rewrite(bundle, manifest)
    with pytest.raises(BundleError, match=field):
        FusedModel.load(bundle)


# -- crash recovery ----------------------------------------------------------------------------


def _exported(bundle: Path, X: np.ndarray) -> bytes:
    from modelfusion.bundle import record_bundle_graph
    from modelfusion.runtime.onnx_export import build_fused_onnx

    proto = build_fused_onnx(FusedModel.load(bundle), example_input=X[:8])
    record_bundle_graph(bundle, proto.SerializeToString(), proto)
    return (bundle / "fused.onnx").read_bytes()


def test_a_kill_between_renaming_a_graph_and_recording_it_leaves_a_loadable_bundle(bundle, digits_split):
    from modelfusion.recovery import recover_bundle

    X = digits_split["X_test"][:16]
    recorded = _exported(bundle, X)
    (bundle / ".fused.onnx.old-0123456789ab").write_bytes(recorded)  # the state a SIGKILL leaves
    (bundle / "fused.onnx").write_bytes(recorded[:-4] + b"new!")
    with pytest.warns(UserWarning, match="fused.onnx fails its checksum and is ignored"):
        model = FusedModel.load(bundle)
    np.testing.assert_allclose(model.predict_proba(X), model.predict_proba(X, engine="members"), atol=1e-5)
    assert any("restored fused.onnx" in a for a in recover_bundle(bundle))
    assert (bundle / "fused.onnx").read_bytes() == recorded
    assert not list(bundle.glob(".fused.onnx.old-*"))


def test_a_real_sigkill_while_a_bundle_is_replaced_is_recovered_by_the_next_writer(
    saved, tmp_path, members, digits_split
):
    import subprocess
    import sys

    out = tmp_path / "out"
    shutil.copytree(saved, out / "bundle")
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path.cwd())!r})
import modelfusion.files as files
real = os.replace
def replace(src, dst):
    real(src, dst)
    if os.path.basename(dst).startswith(".bundle.old-"):
        os.kill(os.getpid(), signal.SIGKILL)  # after "old bundle moved aside", before "new moved in"
files.os.replace = replace
from modelfusion import FusedModel
model = FusedModel.load({str(saved)!r})
model.save({str(out / "bundle")!r})
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr
    assert not (out / "bundle").exists() and list(out.glob(".bundle.old-*"))
    preds = score_members(members, digits_split["X_val"], y=digits_split["y_val"])
    with pytest.warns(UserWarning, match="restored"):
        FusedModel(members, Mean().fit(preds)).save(out / "bundle")
    assert FusedModel.load(out / "bundle").names == ["net", "lr"]
    assert sorted(p.name for p in out.iterdir()) == ["bundle"]


def test_a_second_writer_of_the_same_bundle_is_refused_while_one_holds_it(bundle, digits_split):
    from modelfusion.recovery import bundle_lock
    from modelfusion.runtime.quantize import quantize_bundle

    _exported(bundle, digits_split["X_test"])
    with (
        bundle_lock(bundle),
        pytest.raises(BundleError, match="being written by another modelfusion command"),
    ):
        quantize_bundle(bundle, mode="dynamic", data=(digits_split["X_val"], digits_split["y_val"]))
    assert not list(bundle.parent.glob(".bundle.lock"))


def test_sigterm_is_held_like_ctrl_c_while_a_bundle_file_is_recorded():
    import signal

    from modelfusion.files import defer_interrupts, terminate_as_interrupt

    previous = signal.getsignal(signal.SIGTERM)
    terminate_as_interrupt()
    try:
        reached_end = False
        with pytest.raises(KeyboardInterrupt), defer_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            reached_end = True  # the signal waits for the block
        assert reached_end
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_predicting_with_a_saved_bundle_writes_nothing_into_it(bundle, digits_split):
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    FusedModel.load(bundle).predict(digits_split["X_test"])
    assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before


# -- ONNX external data --------------------------------------------------------------------


def test_an_onnx_member_with_external_weights_is_saved_whole(tmp_path, digits_split):
    import onnx

    source = tmp_path / "source"
    source.mkdir()
    path = _mlp_onnx(source / "m.onnx")
    proto = onnx.load(str(path))
    onnx.save_model(proto, str(path), save_as_external_data=True, location="m.weights", size_threshold=0)
    member = load_member(path, name="m", output_kind="logits")
    X = digits_split["X_val"]
    expected = member.predict(X[:16])
    preds = score_members([member], X, y=digits_split["y_val"])
    bundle = FusedModel([member], Mean().fit(preds)).save(tmp_path / "bundle")
    shutil.rmtree(source)  # the bundle must not need the original folder
    np.testing.assert_allclose(
        FusedModel.load(bundle).member_predictions(X[:16]).outputs[0], expected, atol=1e-6
    )


def test_an_onnx_member_reading_weights_outside_its_folder_is_refused(tmp_path):
    import onnx

    from modelfusion.members.onnx import OnnxMember

    folder = tmp_path / "member"
    folder.mkdir()
    path = _mlp_onnx(folder / "model.onnx")
    onnx.save_model(
        onnx.load(str(path)), str(path), save_as_external_data=True, location="w.bin", size_threshold=0
    )
    proto = onnx.load(str(path), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../../secret.bin"
    onnx.save_model(proto, str(path))
    with pytest.raises(MemberLoadError, match="outside its bundle folder"):
        OnnxMember.load_saved(folder, {"name": "m", "file": "model.onnx"})


def test_a_tampered_member_is_still_caught_by_its_checksum(bundle):
    target = next((bundle / "members" / "01-lr").iterdir())
    target.write_bytes(target.read_bytes()[:-8] + b"tampered")
    with pytest.raises(BundleError, match="checksum mismatch"):
        FusedModel.load(bundle)


def test_json_default_and_manifest_digest_agree(saved):
    recorded = (saved / "bundle.sha256").read_text().split()[0]
    assert (
        recorded
        == manifest_digest(saved)
        == hashlib.sha256((saved / "manifest.json").read_bytes()).hexdigest()
    )


def test_a_format_1_bundle_without_a_digest_loads_with_a_warning_to_resave(bundle):
    manifest = _manifest(bundle)
    manifest["format_version"] = 1
    _rewrite(bundle, manifest)
    (bundle / "bundle.sha256").unlink()
    with pytest.warns(UserWarning, match=r"older modelfusion \(format 1\).*re-save"):
        assert FusedModel.load(bundle).names == ["net", "lr"]


class _Bag(torch.nn.Module):
    """Token ids -> 2 logits: a tiny text classifier fed by a text preprocessor."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(8, 4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((self.embed(input_ids) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0))


def _text_bundle(tmp_path: Path) -> tuple[Path, list[str], np.ndarray]:
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from modelfusion.data import build_preprocessor

    vocab = {"[PAD]": 0, "[UNK]": 1, "a": 2, "great": 3, "film": 4, "dull": 5}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    source = tmp_path / "tok"
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
        source
    )
    spec = {"text": {"tokenizer": str(source / "tokenizer.json"), "max_length": 6, "padding": "max_length"}}
    ids = torch.zeros(2, 6, dtype=torch.long)
    torch.onnx.export(
        _Bag().eval(),
        (ids, torch.ones_like(ids)),
        str(tmp_path / "bag.onnx"),
        dynamo=False,
        input_names=["input_ids", "attention_mask"],
        dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}},
    )
    member = load_member(
        tmp_path / "bag.onnx", name="bag", output_kind="logits", preprocess=build_preprocessor(spec)
    )
    member.preprocess_spec = spec
    texts = ["a great film", "dull", "a dull film", "great great"]
    preds = score_members([member], texts, y=np.array([1, 0, 0, 1]))
    expected = member.predict(texts)
    bundle = FusedModel([member], Mean().fit(preds)).save(tmp_path / "bundle")
    shutil.rmtree(source)
    return bundle, texts, expected


def test_a_text_members_tokenizer_travels_inside_the_bundle(tmp_path):
    bundle, texts, expected = _text_bundle(tmp_path)
    spec = _manifest(bundle)["members"][0]["preprocess"]
    assert spec["text"]["tokenizer"] == "preprocess-tokenizer.json"
    model = FusedModel.load(bundle)
    np.testing.assert_allclose(model.members[0].predict(texts), expected, atol=1e-6)


@pytest.mark.parametrize("tokenizer", ["../../tok/tokenizer.json", "/etc/hostname"])
def test_a_preprocess_tokenizer_outside_the_bundle_is_refused(tmp_path, tokenizer):
    bundle, _, _ = _text_bundle(tmp_path)
    manifest = _manifest(bundle)
    manifest["members"][0]["preprocess"]["text"]["tokenizer"] = tokenizer
    _rewrite(bundle, manifest)
    with pytest.raises(
        BundleError, match=r"members\[0\].preprocess tokenizer .*(outside the bundle|absolute path)"
    ):
        FusedModel.load(bundle)


# -- found by a second read: programs and constructors inside member files -------------------


def _file_writing_torchscript(victim: Path, path: Path) -> Path:
    """A scripted module whose forward overwrites ``victim`` in place through torch.from_file."""

    class Overwrite(torch.nn.Module):
        def __init__(self, target: str, size: int):
            super().__init__()
            self.target, self.size = target, size

        def forward(self, x):
            w = torch.from_file(self.target, shared=True, size=self.size, dtype=torch.uint8)
            w.fill_(35)
            return torch.zeros(x.shape[0], 10) + w[:1].float() * 0

    scripted = torch.jit.script(Overwrite(str(victim), victim.stat().st_size))
    scripted.save(str(path))
    return path


def test_torchscript_needs_trust_because_it_can_write_files(bundle, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's data\n")
    path = _file_writing_torchscript(victim, tmp_path / "evil.torchscript.pt")
    with pytest.raises(UnsafeFormatError, match="TorchScript, a program"):
        load_member(path, name="evil")
    manifest = _manifest(bundle)
    member = manifest["members"][0]
    del manifest["checksums"][f"{member['dir']}/weights.safetensors"]
    (bundle / member["dir"] / "weights.safetensors").unlink()
    _add_file(bundle, f"{member['dir']}/model.torchscript.pt", path.read_bytes(), manifest)
    member.update(file="model.torchscript.pt", architecture=None, architecture_kwargs=None)
    _rewrite(bundle, manifest)
    with pytest.raises(UnsafeFormatError, match="TorchScript, a program"):
        FusedModel.load(bundle)
    assert victim.read_text() == "the user's data\n"


def test_a_skops_file_that_builds_a_memmap_is_refused(bundle, tmp_path):
    import io
    import zipfile

    victim = tmp_path / "victim.txt"
    victim.write_text("the user's data\n")

    def text(v):
        return {
            "__class__": "str",
            "__module__": "builtins",
            "__loader__": "JsonNode",
            "content": json.dumps(v),
            "is_json": True,
        }

    memmap = {
        "__class__": "memmap",
        "__module__": "numpy",
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [text(str(victim)), text("uint8"), text("w+"), text(0)],
        },
    }
    rel = "members/01-lr/model.skops"
    with zipfile.ZipFile(bundle / rel) as src:
        entries = {n: src.read(n) for n in src.namelist()}
    schema = json.loads(entries["schema.json"])
    schema["content"]["content"]["clobber_"] = memmap
    schema["content"]["key_types"]["content"].append(dict(schema["content"]["key_types"]["content"][0]))
    entries["schema.json"] = json.dumps(schema).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for n, data in entries.items():
            dst.writestr(n, data)
    manifest = _manifest(bundle)
    _add_file(bundle, rel, out.getvalue(), manifest)
    _rewrite(bundle, manifest)
    with pytest.raises(UnsafeFormatError, match="numpy.memmap"):
        FusedModel.load(bundle)
    assert victim.read_text() == "the user's data\n"


def test_architecture_arguments_that_would_take_gigabytes_fail_before_allocating(bundle):
    manifest = _manifest(bundle)
    manifest["members"][0]["architecture_kwargs"] = {"hidden": 20_000_000}  # 5 GB of weights if built
    _rewrite(bundle, manifest)
    with pytest.raises(
        MemberLoadError, match=r"do not fit architecture .*\[8\] in the file but \[20000000\]"
    ):
        FusedModel.load(bundle)


def test_a_gating_state_whose_sizes_disagree_is_refused_before_building(digits_split, tmp_path):
    from modelfusion.strategies import Gating

    d = digits_split
    lr = load_member(LogisticRegression(max_iter=200).fit(d["X_train"], d["y_train"]), name="lr")
    preds = score_members([lr], d["X_val"], y=d["y_val"])
    path = FusedModel([lr], Gating(hidden=4, epochs=2, random_state=0).fit(preds)).save(tmp_path / "bundle")
    assert FusedModel.load(path).names == ["lr"]
    manifest = _manifest(path)
    manifest["strategy"]["params"]["hidden"] = 10_000_000
    _rewrite(path, manifest)
    with pytest.raises(StrategyError, match="Gating state holds .* need"):
        FusedModel.load(path)


def test_a_huge_declared_list_is_refused(bundle):
    manifest = _manifest(bundle)
    manifest["strategy"]["state"]["evil_"] = {"__list__": [""] * 100_000, "dtype": "<U1024"}
    _rewrite(bundle, manifest)
    with pytest.raises(BundleError, match="would take over 16,777,216 bytes"):
        FusedModel.load(bundle)


@pytest.mark.parametrize("folder", [".", "members", "members/../strategy", "elsewhere/00-lr"])
def test_a_member_folder_must_lie_under_members(bundle, folder):
    manifest = _manifest(bundle)
    manifest["members"][1]["dir"] = folder
    _rewrite(bundle, manifest)
    with pytest.raises(BundleError, match="is not a folder under members/"):
        FusedModel.load(bundle)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("output_kind", "bogus", "output_kind"),
        ("classes", [[1, 2], [3]], "classes"),
        ("task", "regression", "regression member emits 'values'"),
        ("method", "fit", "method must be one of predict_proba"),
    ],
)
def test_member_fields_of_the_wrong_kind_are_bundle_errors(bundle, field, value, message):
    manifest = _manifest(bundle)
    manifest["members"][1][field] = value
    _rewrite(bundle, manifest)
    with pytest.raises((BundleError, MemberLoadError), match=message):
        FusedModel.load(bundle)


@pytest.mark.parametrize(
    "target", ["torch.os.system", "torch.save", "torch.ops.aten.from_file.default", "#evil"]
)
def test_a_pt2_graph_calling_anything_but_aten_operators_is_refused(tmp_path, target):
    import zipfile

    path = _exported_program(tmp_path)
    with zipfile.ZipFile(path) as src:
        entries = {info.filename: src.read(info) for info in src.infolist()}
    name = next(n for n in entries if n.endswith("models/model.json"))
    entries[name] = entries[name].replace(b"torch.ops.aten.linear.default", target.encode())
    with zipfile.ZipFile(path, "w") as dst:
        for n, data in entries.items():
            dst.writestr(n, data)
    with pytest.raises(UnsafeFormatError, match=rf"calls '{target}', which is not an ATen operator"):
        load_member(path, name="evil")


# -- found by a third read: effects in .pt2 graphs, tokenizer files, allocation bombs ----------


def test_a_pt2_graph_using_side_effecting_higher_order_ops_is_refused(tmp_path):
    from modelfusion.members.torch import _check_op

    with pytest.raises(UnsafeFormatError, match="'with_effects', which is not a plain ATen operator"):
        _check_op(torch.ops.higher_order.with_effects, tmp_path / "m.pt2")
    with pytest.raises(UnsafeFormatError, match="aten::from_file"):
        _check_op(torch.ops.aten.from_file.default, tmp_path / "m.pt2")
    assert _check_op(torch.ops.aten.linear.default, tmp_path / "m.pt2") is torch.ops.aten.linear.default
    path = _exported_program(tmp_path)
    assert load_member(path, name="ok").predict(np.zeros((2, 64), np.float32)).shape == (2, 10)


def test_a_tokenizer_config_naming_another_tokenizer_file_is_refused(tmp_path):
    bundle, _, _ = _text_bundle(tmp_path)
    manifest = _manifest(bundle)
    member = manifest["members"][0]
    folder = f"{member['dir']}/preprocess-tokenizer"
    for rel in [k for k in manifest["checksums"] if k.startswith(f"{member['dir']}/preprocess-tokenizer")]:
        del manifest["checksums"][rel]
        (bundle / rel).unlink()
    _add_file(bundle, f"{folder}/tokenizer.json", b"{}", manifest)
    config = {"fast_tokenizer_files": ["../../../../outside/tokenizer.1.0.json"]}
    _add_file(bundle, f"{folder}/tokenizer_config.json", json.dumps(config).encode(), manifest)
    member["preprocess"]["text"]["tokenizer"] = "preprocess-tokenizer"
    _rewrite(bundle, manifest)
    with pytest.raises(UnsafeFormatError, match="sets 'fast_tokenizer_files'"):
        FusedModel.load(bundle)


def test_a_tiny_onnx_graph_that_allocates_gigabytes_is_refused(bundle):
    from onnx import TensorProto
    from onnx import helper as h

    nodes = [
        h.make_node(
            "ConstantOfShape", ["shape"], ["big"], value=h.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
        ),
        h.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
        h.make_node("Add", ["x", "total"], ["y"]),
    ]
    graph = h.make_graph(
        nodes,
        "bomb",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=[h.make_tensor("shape", TensorProto.INT64, [1], [1 << 30])],
    )
    data = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]).SerializeToString()
    assert len(data) < 400
    manifest = _manifest(bundle)
    member = manifest["members"][0]
    del manifest["checksums"][f"{member['dir']}/weights.safetensors"]
    (bundle / member["dir"] / "weights.safetensors").unlink()
    _add_file(bundle, f"{member['dir']}/model.onnx", data, manifest)
    for key in ("architecture", "architecture_kwargs"):
        member.pop(key)
    member.update(framework="onnx", file="model.onnx")
    _rewrite(bundle, manifest)
    with pytest.raises(UnsafeFormatError, match=r"builds tensor 'big' of shape \[1073741824\]"):
        FusedModel.load(bundle)


def test_a_text_spec_padding_to_millions_of_tokens_is_refused():
    from modelfusion.data import build_preprocessor
    from modelfusion.data.datasets import DataError

    with pytest.raises(DataError, match="max_length must be 1 to 65536 tokens, got 40000000"):
        build_preprocessor({"text": {"tokenizer": "t.json", "max_length": 40_000_000}})

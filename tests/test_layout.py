"""Layout contracts: every exception the package raises on purpose is ours (so the CLI can tell a user
error from a bug), and no two modules import each other."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import modelfusion
from modelfusion import errors
from modelfusion.dependencies import require
from modelfusion.errors import MissingDependencyError, ModelFusionError, UnknownNameError

PACKAGE = Path(modelfusion.__file__).parent
#: AttributeError stays: hasattr() and module __getattr__ (PEP 562) rely on it.
BUILTIN = {"ValueError", "TypeError", "KeyError", "RuntimeError", "ImportError", "IndexError"}
#: pydantic turns a ValueError raised in a validator into a ConfigError entry: these must stay ValueError.
VALIDATORS = {"field_validator", "model_validator"}


def _builtin_raises(tree: ast.AST) -> list[int]:
    found = []
    # functions handed to pydantic as validators: field_validator("x")(check)
    wrapped = {
        arg.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Call)
        and getattr(node.func.func, "id", None) in VALIDATORS
        for arg in node.args
        if isinstance(arg, ast.Name)
    }

    def visit(node: ast.AST, in_validator: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = {
                getattr(getattr(d, "func", d), "id", getattr(getattr(d, "func", d), "attr", None))
                for d in node.decorator_list
            }
            in_validator = in_validator or bool(names & VALIDATORS) or node.name in wrapped
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func = node.exc.func
            if isinstance(func, ast.Name) and func.id in BUILTIN and not in_validator:
                found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, in_validator)

    visit(tree, False)
    return found


def test_the_package_raises_only_its_own_errors_outside_pydantic_validators():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line in _builtin_raises(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert not offenders, "raise a modelfusion.errors class instead of a built-in: " + ", ".join(offenders)


def test_every_error_is_ours_and_a_builtin_type_and_exported_from_the_package():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    for cls in classes:
        assert getattr(modelfusion, cls.__name__) is cls, cls.__name__
        if not issubclass(cls, Warning) and cls is not ModelFusionError:
            assert issubclass(cls, ModelFusionError), cls.__name__
            assert any(b.__module__ == "builtins" and b is not Exception for b in cls.__mro__[1:]), (
                cls.__name__
            )


def test_an_unknown_name_reads_as_a_sentence_not_a_quoted_key():
    assert str(UnknownNameError("no member 'x'; members are a, b")) == "no member 'x'; members are a, b"


def test_require_returns_the_module_or_names_the_purpose_and_the_extra():
    assert require("json", purpose="reading") is __import__("json")
    with pytest.raises(
        MissingDependencyError, match=r'scoring needs nopkg_x, .*pip install "modelfusion\[hf\]"'
    ):
        require("nopkg_x", purpose="scoring", extra="hf")
    with pytest.raises(MissingDependencyError, match=r"pip install no-pkg \(or use method='softmax'\)"):
        require("nopkg_y", purpose="x", package="no-pkg", alternative="or use method='softmax'")


def test_no_import_cycle_between_modules_counting_imports_inside_functions():
    """scripts/import_cycles.py: every import counts, even one inside a function (that is how cycles hide)."""
    import subprocess
    import sys

    script = PACKAGE.parent / "scripts" / "import_cycles.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout
    assert "no import cycle" in done.stdout


def test_the_main_job_is_stages_of_a_screen_each():
    """workflow.py orchestrates and stages.py holds the stages: no function there over 50 lines."""
    long = []
    for name in ("workflow.py", "stages.py", "plan.py", "publish.py"):
        tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 50:
                    long.append(f"{name}:{node.name} ({lines} lines)")
    assert not long, long


def test_the_shared_member_options_are_declared_once():
    """Every adapter takes the seven shared options through **options (MemberOptions), none on its own."""
    from modelfusion.members.base import Member, MemberOptions
    from modelfusion.members.hf import HFMember
    from modelfusion.members.keras import KerasMember, SavedModelMember
    from modelfusion.members.onnx import OnnxMember
    from modelfusion.members.sklearn import SklearnMember
    from modelfusion.members.torch import TorchMember

    shared = set(MemberOptions.__annotations__)
    assert shared == set(inspect.signature(Member.__init__).parameters) - {"self"}
    for adapter in (TorchMember, OnnxMember, SklearnMember, HFMember, KerasMember, SavedModelMember):
        params = inspect.signature(adapter.__init__).parameters
        assert not shared & set(params), (adapter.__name__, shared & set(params))
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), adapter.__name__

"""Kernels are plain numba functions on arrays: no classes, no I/O, no logging."""

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest
from numba.core.registry import CPUDispatcher

import molpipe.kernels as K

MODULES = [m.name for m in pkgutil.iter_modules(K.__path__)]
ALLOWED_IMPORTS = {"numpy", "numba"}
FORBIDDEN_CALLS = {"print", "open", "input", "exec", "eval"}


def test_every_kernel_family_present():
    assert {"dense", "activations", "typed_message", "gru", "rings", "pool", "loss",
            "optim"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_is_pure(name):
    tree = ast.parse(Path(K.__path__[0], f"{name}.py").read_text())
    for node in ast.walk(tree):
        assert not isinstance(node, ast.ClassDef), f"class in kernels/{name}.py"
        if isinstance(node, ast.Import):
            assert {a.name.split(".")[0] for a in node.names} <= ALLOWED_IMPORTS
        if isinstance(node, ast.ImportFrom):
            assert (node.module.split(".")[0] in ALLOWED_IMPORTS
                    or node.module.startswith("molpipe.kernels"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS


@pytest.mark.parametrize("name", [m for m in MODULES if not m.startswith("_")])
def test_functions_are_jitted_nogil_cached(name):
    mod = importlib.import_module(f"molpipe.kernels.{name}")
    funcs = [v for k, v in vars(mod).items() if not k.startswith("__")
             and getattr(v, "__module__", None) == mod.__name__]
    assert funcs
    for f in funcs:
        assert isinstance(f, CPUDispatcher), f"{name}.{f} is not jitted"
        assert f.targetoptions.get("nogil"), f"{name}.{f} lacks nogil=True"
        assert type(f._cache).__name__ != "NullCache", f"{name}.{f} lacks cache=True"

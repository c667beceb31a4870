"""The package reads like its diagram (docs/architecture.md): each wing imports only its own
modules and the wings below it, never one above; no module is longer than 400 lines."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: wing -> layer; a wing may import its own modules and those of lower layers. io/safenpz.py
#: (the safe npz reader and file checksums, importing nothing of molpipe) is the floor every
#: layer reads files with.
LAYERS = {"molpipe": 0, "safenpz": 0, "kernels": 0, "chem": 1, "runtime": 1, "data": 2,
          "nn": 3, "io": 4, "training": 5, "inference": 6, "measure": 7, "serve": 8,
          "cli": 9}
MAX_LINES = 400


def wing(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "cli":
        return "cli"
    if module == "molpipe.io.safenpz":
        return "safenpz"
    return parts[1] if len(parts) > 1 else "molpipe"


def modules():
    for path in sorted((ROOT / "molpipe").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        yield name, path
    yield "cli", ROOT / "cli.py"


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "molpipe":          # from molpipe import kernels
                yield from (f"molpipe.{a.name}" for a in node.names)
            else:
                yield node.module


def test_every_wing_has_a_layer():
    assert {wing(name) for name, _ in modules()} <= set(LAYERS)
    top = [p.name for p in (ROOT / "molpipe").glob("*.py") if p.name != "__init__.py"]
    assert top == [], f"flat modules at the top of molpipe/: {top}"


@pytest.mark.parametrize("name,path", list(modules()), ids=[n for n, _ in modules()])
def test_no_import_upward(name, path):
    own = wing(name)
    for target in imports(path):
        if not (target == "molpipe" or target.startswith("molpipe.")):
            continue
        other = wing(target)
        assert other == own or LAYERS[other] < LAYERS[own], \
            f"{name} ({own}, layer {LAYERS[own]}) imports {target} ({other}, layer {LAYERS[other]})"


@pytest.mark.parametrize("name,path", list(modules()), ids=[n for n, _ in modules()])
def test_no_module_over_400_lines(name, path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{name}: {n} lines"

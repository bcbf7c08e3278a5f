"""The package's import graph is honest (docs/architecture.md): every module imports in a fresh
interpreter, no two modules import each other (directly or round a longer circle), and no
layer imports one above it.

The graph is read from the source with ``ast``: every import, at the top of a file and inside
functions, of a ``camclone_jax`` module (``from camclone_jax.x import y`` is an edge to module
``x.y`` when that is a module, else to ``x``). The layer rules follow these explicit edges
transitively; a package's ``__init__`` re-exports (``camclone_jax.models`` offers ``DiT``) are
conveniences for users and are not followed through.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "camclone_jax"

# (layer, packages it must not reach); "camclone_jax.models.dit" is the DiT itself
FORBIDDEN = {
    "camclone_jax.models": ("camclone_jax.training", "camclone_jax.inference",
                            "camclone_jax.data", "camclone_jax.convert"),
    "camclone_jax.data": ("camclone_jax.training", "camclone_jax.inference"),
    "camclone_jax.eval": ("camclone_jax.models.dit", "camclone_jax.training",
                          "camclone_jax.inference"),
    "camclone_jax.diffusion": ("camclone_jax.training", "camclone_jax.inference",
                               "camclone_jax.data", "camclone_jax.convert"),
    "camclone_jax.convert": ("camclone_jax.data", "camclone_jax.training",
                             "camclone_jax.inference"),
    "camclone_jax.inference": ("camclone_jax.training",),
    "camclone_jax.utils": ("camclone_jax.",),
    "camclone_jax.sharding": ("camclone_jax.",),
    "camclone_jax.distributed": ("camclone_jax.",),
    "camclone_jax.errors": ("camclone_jax.",),
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: pathlib.Path) -> set[str]:
    """The package modules ``path`` imports (anywhere in the file)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("camclone_jax"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.startswith("camclone_jax"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in MODULES else node.module)
    return out


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _reach(start: str) -> set[str]:
    """Modules reachable from ``start`` through explicit imports."""
    seen, todo = set(), [start]
    while todo:
        for dep in GRAPH.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _cycle_from(start: str) -> list[str] | None:
    """One import circle through ``start`` (module names), or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for dep in GRAPH.get(node, ()):
            if dep == start:
                return path + [start]
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, path + [dep]))
    return None


def test_every_import_names_a_module_that_exists():
    missing = {f"{m} -> {d}" for m, deps in GRAPH.items() for d in deps if d not in MODULES}
    assert not missing, sorted(missing)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_circular_import(module):
    cycle = _cycle_from(module)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_import_from_a_layer_above(layer):
    bad = []
    for module in MODULES:
        if module != layer and not module.startswith(layer + "."):
            continue
        for dep in sorted(_reach(module)):
            if any(dep == f or dep.startswith(f.rstrip(".") + ".") or
                   (f.endswith(".") and dep.startswith(f)) for f in FORBIDDEN[layer]):
                bad.append(f"{module} -> {dep}")
    assert not bad, "\n".join(bad)


def test_every_module_imports_in_a_fresh_interpreter():
    """One subprocess imports every module, each in a clean ``sys.modules`` of the package, so
    an import that only works after another module was loaded first (a hidden circle) fails."""
    code = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {sorted(MODULES)!r}:\n"
        "    for m in [m for m in sys.modules if m == 'camclone_jax' or m.startswith('camclone_jax.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        failed.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]

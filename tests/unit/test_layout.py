"""The package layout that CONTRIBUTING.md describes (issue 14): no two modules share a name,
the NumPyro models use only the numerical core of the package, and only the drivers compile."""

from __future__ import annotations

import ast

import pytest

from conftest import REPO

PACKAGE, MODELS = REPO / "transst_bayes", REPO / "models"
CORE = {"priors", "factor", "mrf"}  # what models/ may import from the package
DRIVERS = {"em/driver.py", "svi/runner.py", "simulate.py", "devprep.py"}  # where jax.jit may appear (devprep: the data boundary's own programs)


def _modules():
    for root in (PACKAGE, MODELS):
        for path in sorted(root.rglob("*.py")):
            if path.name not in ("__init__.py", "__main__.py"):
                yield root, path


def test_no_two_modules_share_a_name():
    seen: dict[str, list[str]] = {}
    for root, path in _modules():
        seen.setdefault(path.stem, []).append(str(path.relative_to(REPO)))
    clashes = {k: v for k, v in seen.items() if len(v) > 1}
    assert not clashes, f"modules that share a name: {clashes}"


def test_models_import_only_the_numerical_core():
    bad = []
    for path in sorted(MODELS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transst_bayes"):
                parts = node.module.split(".")[1:]
                names = parts[:1] if parts else [a.name for a in node.names]
                bad += [f"{path.name}: {node.module} {n}" for n in names if n not in CORE]
            elif isinstance(node, ast.Import):
                bad += [f"{path.name}: {a.name}" for a in node.names
                        if a.name.startswith("transst_bayes.") and a.name.split(".")[1] not in CORE]
    assert not bad, f"models/ imports beyond {sorted(CORE)}: {bad}"


def _module_imports(path) -> set[str]:
    """The package modules `path` imports (relative imports anywhere in it, inside functions
    too, but not under `if TYPE_CHECKING:`), as paths relative to the package without ".py"."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    found = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", "") == "TYPE_CHECKING" for b in node.body for n in ast.walk(b)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0 and id(node) not in typing_only:
            base = list(rel.parts[:-1])[: len(rel.parts) - node.level]
            mod = base + (node.module.split(".") if node.module else [])
            if node.module:
                found.add("/".join(mod))
            for a in node.names:  # `from . import x` / `from .em import driver`: submodules
                cand = mod + [a.name]
                if (PACKAGE / ("/".join(cand) + ".py")).exists():
                    found.add("/".join(cand))
    return {m for m in found if (PACKAGE / (m + ".py")).exists()}


def test_no_import_circles_and_the_svi_path_uses_only_the_em_kernels():
    graph = {str(p.relative_to(PACKAGE).with_suffix("")): _module_imports(p)
             for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    circles = []

    def visit(m, stack):
        for d in graph.get(m, ()):
            if d in stack:
                circles.append(stack[stack.index(d):] + [d])
            elif d not in done:
                visit(d, stack + [d])
        done.add(m)

    done: set = set()
    for m in sorted(graph):
        if m not in done:
            visit(m, [m])
    assert not circles, f"import circles: {circles}"
    kernels = {"em/cluster", "em/loadings", "em/source", "em/loop"}
    bad = {m: sorted(d for d in deps if d.startswith("em/") and d not in kernels)
           for m, deps in graph.items() if m.startswith("svi/")}
    assert not any(bad.values()), f"svi/ imports from em/ beyond its kernels: {bad}"


def test_only_the_drivers_compile():
    jitting = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "jit" and getattr(node.value, "id", "") == "jax":
                if rel not in DRIVERS:
                    jitting.append(f"{rel}:{node.lineno}")
    assert not jitting, f"jax.jit outside the drivers {sorted(DRIVERS)}: {jitting}"


def test_fit_signatures_agree_with_their_settings():
    """fit_em / fit_svi build their settings from their arguments (`job.settings_from`): every
    argument that is a settings field has the field's default."""
    import inspect
    from dataclasses import MISSING, fields

    import transst_bayes as tb

    for fit, cls in ((tb.fit_em, tb.EMSettings), (tb.fit_svi, tb.SVISettings)):
        params = inspect.signature(fit).parameters
        shared = [f for f in fields(cls) if f.name in params]
        assert len(shared) >= 8, [f.name for f in shared]
        differ = {f.name: (params[f.name].default, f.default) for f in shared
                  if f.default is not MISSING and params[f.name].default != f.default}
        assert not differ, f"{fit.__name__} defaults differ from {cls.__name__}: {differ}"


def test_no_module_imports_another_modules_private_names():
    """A name with a leading underscore stays in its module: what another module needs is public
    (pp.py once imported five private helpers of data.py)."""
    bad = []
    for root, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("transst_bayes")):
                bad += [f"{path.relative_to(REPO)}: {node.module} {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, f"private names imported across modules: {bad}"


@pytest.mark.parametrize("module", ["transst_bayes", "transst_bayes.tl", "transst_bayes.pp",
                                    "transst_bayes.pl"])
def test_dir_shows_the_public_api_only(module):
    """dir() of the package and of tl / pp / pl lists `__all__` (what a user may call), not the
    modules' imports (np, V, keys) nor the package's internal submodules (job, shard, em, ...);
    every name of `__all__` exists."""
    import importlib

    mod = importlib.import_module(module)
    public = {n for n in mod.__all__ if not n.startswith("__")}  # __version__ too
    assert all(hasattr(mod, n) for n in public)
    shown = {n for n in dir(mod) if not n.startswith("__")}
    assert shown == public, sorted(shown ^ public)

"""Shared fixtures: simulated data sets (small, built once per session)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

# The tests compile many small programs, where XLA's compile time dominates: LLVM's optimisation
# of the generated CPU code off cuts the suite's CPU time by ~30% (1,890 -> 1,310 s on 2 cores)
# and changes no result (the optimisations keep IEEE semantics; same labels in
# benchmarks/speed.py). Inherited by the subprocesses (notebooks, CLI). TRANSST_TEST_XLA_OPT=1
# tests with XLA's default instead. Set before JAX starts its CPU backend (it reads XLA_FLAGS once).
if os.environ.get("TRANSST_TEST_XLA_OPT") != "1" and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
# and XLA's older CPU emitters, the package's default at a process's first fit (transst_bayes.compiler):
# set here already, for every test's process and subprocess: half the backend compile time
if os.environ.get("TRANSST_TEST_XLA_OPT") != "1":
    from transst_bayes.compiler import quick_cpu_compilation  # noqa: E402

    quick_cpu_compilation()
else:  # XLA's defaults throughout: the package's first fit leaves its emitters alone too
    os.environ["TRANSST_QUICK_COMPILE"] = "off"

# The fits' default persistent compilation cache (transst_bayes.cache) stays off in the tests and
# their subprocesses: tests/unit/test_cache.py turns it on in processes of its own.
os.environ["TRANSST_CACHE_DIR"] = "off"

import transst_bayes as tb  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def benchmark(name: str):
    """A module of benchmarks/ (its own computation, so that a test checks what the README's
    table reports). The folder goes to the end of sys.path: its modules never shadow an
    installed package."""
    import importlib
    import sys

    folder = str(REPO / "benchmarks")
    if folder not in sys.path:
        sys.path.append(folder)
    return importlib.import_module(name)


def data_dir() -> Path | None:
    d = Path(os.environ.get("TRANSST_DATA", REPO.parent / "shared" / "data"))
    return d if d.exists() else None


@pytest.fixture(scope="session")
def small_pair():
    """A 20 x 20 lattice, p = 200, q = 5, K = 3: fast enough for many tests."""
    return tb.simulate(0, height=20, width=20, n_genes=200, n_factors=5, n_domains=3)


@pytest.fixture(scope="session")
def paper_pair():
    """The paper's setting: 50 x 50, p = 1000, q = 10, K = 4, beta = 1."""
    return tb.simulate(0)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. Each compiled CPU program holds
    memory mappings; the full suite grew past the kernel's vm.max_map_count (65,530: about
    5,000 mappings per module) and XLA's compiler segfaulted late in the run (CI exit 139)."""
    yield
    import jax

    jax.clear_caches()


@pytest.fixture(autouse=True)
def _fresh_held_out_fits():
    """Each test starts without the held-out fits of earlier tests (`heldout._memo`: a second
    call with the same source and settings reuses them), as a new process would."""
    from transst_bayes import heldout

    heldout._memo.clear()
    yield


@pytest.fixture(autouse=True)
def _no_persistent_cache():
    """No test may leave JAX's persistent compilation cache on: the CLI switches it on
    process-wide, and XLA's compiler segfaulted writing to it later in the suite (CI, twice).
    In-process CLI calls pass --no-cache; the demo test runs in a subprocess."""
    yield
    import jax

    assert jax.config.jax_compilation_cache_dir is None, "a test left the persistent compilation cache on"


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        yield


def ari(a, b) -> float:
    return tb.adjusted_rand_index(np.asarray(a), np.asarray(b))

"""Quicker XLA compilation on the CPU, on by default like the compilation cache (`cache.py`).

A fit's first call in a new process is mostly XLA compiling its programs. XLA's CPU backend
generates code with its newer "fusion emitters" by default; its older elemental emitters
compile in about half the time with the same numbers and no slower programs: HER2ST H1's
default `fit_em` call in a new process took 112 s against 71 s, DLPFC 151676's 42 s against
32 s (identical labels; `benchmarks/speed.py --default-call`), a 10,000-spot warm fit 2.7 s
against 2.4 s (2 CPU cores).

The choice is an XLA flag (`--xla_cpu_use_fusion_emitters=false` in `XLA_FLAGS`), read once,
when JAX starts its backend, for every program of the process. Importing this package changes
nothing; the first fit (or `simulate`) adds the flag when JAX has not started yet, the caller
has not set it, and the installed jaxlib knows it (`ensure_default`). `TRANSST_QUICK_COMPILE=off`
in the environment keeps XLA's default emitters.
"""

from __future__ import annotations

import glob
import importlib.util
import mmap
import os

from .cache import OFF

FLAG = "xla_cpu_use_fusion_emitters"
ENV = "TRANSST_QUICK_COMPILE"
ON = ("", "on", "1", "true", "yes")

_decided: dict = {}  # {"quick": bool} once the first fit of this process has decided


def xla_knows(flag: str) -> bool:
    """Whether the installed jaxlib's XLA has the flag `flag` (its name is in jaxlib's shared
    libraries): XLA stops the process at a flag in XLA_FLAGS that it does not know."""
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return False
    for folder in spec.submodule_search_locations:
        for lib in glob.glob(os.path.join(folder, "*.so")):
            if not os.path.getsize(lib):
                continue
            with open(lib, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(flag.encode()) >= 0:
                    return True
    return False


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return True if started is None else bool(started())  # unknown: leave XLA_FLAGS alone


def quick_cpu_compilation() -> bool:
    """Add `--xla_cpu_use_fusion_emitters=false` to `$XLA_FLAGS` for this process (and the
    processes it starts), unless XLA_FLAGS names that flag already, JAX's backend has started
    (the flag would change nothing), or this jaxlib does not know it. Returns whether it did."""
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags or _backend_started() or not xla_knows(FLAG):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} --{FLAG}=false".strip()
    return True


def ensure_default() -> None:
    """At the start of every fit and simulation: `quick_cpu_compilation` once per process,
    unless `$TRANSST_QUICK_COMPILE` is off; a value that is neither on nor off raises
    ValueError naming the variable."""
    if _decided:
        return
    value = os.environ.get(ENV, "").strip().lower()
    if value not in OFF + ON:
        raise ValueError(f"${ENV}={os.environ[ENV]!r}: set it to 'off' (XLA's default CPU emitters) or "
                         "'on' (the quicker ones, the default), or unset it")
    _decided["quick"] = False if value in OFF else quick_cpu_compilation()

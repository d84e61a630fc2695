"""JAX's persistent compilation cache, on by default for every caller.

A fit compiles its programs once per process and set of shapes (tens of seconds on a CPU). With
the cache on, the compiled programs are written to disk and a new process reads them back
instead of compiling again.

Where: `$TRANSST_CACHE_DIR` when set, else `$XDG_CACHE_HOME/transst_bayes/jax`, else
`~/.cache/transst_bayes/jax`. Off: `TRANSST_CACHE_DIR=off` in the environment, or
`transst_bayes.compilation_cache(False)`; moved: `transst_bayes.compilation_cache("/some/folder")`.
A cache the caller set up in JAX itself (`jax_compilation_cache_dir`) is left as it is. As JAX
warns, a cache folder is trusted: whoever can write to it can run code in the processes that
read it, so keep it in a folder only you can write to.

JAX's cache is one per process, so the choice here is too: `_choice` holds what the caller said
(None: nothing yet), and the first fit applies the default when nothing was said.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

from .validate import user_level

ENV = "TRANSST_CACHE_DIR"
OFF = ("off", "0", "none", "false", "no")

_choice: dict = {}  # {"folder": Path | None} once decided in this process


def default_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "transst_bayes" / "jax"


def _usable(path: Path, origin: str) -> Path:
    """Create `path` and write a file there; a ValueError that names `origin` if either fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as err:
        raise ValueError(
            f"the compilation cache folder {str(path)!r} (from {origin}) cannot be used: "
            f"{err.strerror or err}. Point {origin} at a writable folder, or turn the cache off "
            f"with {ENV}=off or transst_bayes.compilation_cache(False)") from None
    return path.resolve()


def _apply(folder: Path | None) -> None:
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    jax.config.update("jax_compilation_cache_dir", None if folder is None else str(folder))
    # every program, however quick to compile, so that a second process compiles nothing
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    cc.reset_cache()  # JAX opens its cache once; a new folder needs a fresh start
    _choice["folder"] = folder


def compilation_cache(folder: str | os.PathLike | bool | None = True) -> Path | None:
    """Turn JAX's persistent compilation cache on, move it, or turn it off, for this process.

    Parameters
    ----------
    folder
        True: the default folder (`$TRANSST_CACHE_DIR`, else `$XDG_CACHE_HOME/transst_bayes/jax`,
        else `~/.cache/transst_bayes/jax`); a path: that folder (created if missing); False or
        None: off.

    Returns
    -------
    The folder in use, or None when off. A folder that cannot be created or written to raises
    ValueError before anything is compiled.
    """
    if folder is False or folder is None:
        _apply(None)
        return None
    if folder is True:
        env = os.environ.get(ENV, "").strip()
        if env.lower() in OFF:
            _apply(None)
            return None
        path = _usable(Path(env).expanduser(), f"${ENV}") if env else _usable(default_folder(), "the default")
    elif isinstance(folder, (str, os.PathLike)):
        path = _usable(Path(folder).expanduser(), "compilation_cache(folder=...)")
    else:
        raise TypeError(f"compilation_cache(folder=...) takes True, False or a path, got {type(folder).__name__}")
    _apply(path)
    return path


def ensure_default() -> None:
    """At the start of every fit: apply the default unless this process has decided already
    (by `compilation_cache`, or by setting JAX's own cache folder). A `$TRANSST_CACHE_DIR` that
    cannot be used raises ValueError; the default folder that cannot be used warns once and the
    fit goes on without the cache."""
    if _choice:
        return
    import jax

    if jax.config.jax_compilation_cache_dir is not None:  # the caller's own JAX set-up
        _choice["folder"] = Path(jax.config.jax_compilation_cache_dir)
        return
    if os.environ.get(ENV, "").strip():
        compilation_cache(True)
        return
    try:
        compilation_cache(True)
    except ValueError as err:
        warnings.warn(f"{err}; fitting without it (every new process compiles again)", UserWarning,
                      stacklevel=user_level())
        _apply(None)

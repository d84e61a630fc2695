"""The persistent compilation cache: on by default for every caller, so that a second new
process compiles nothing; moved or turned off by the environment or `compilation_cache`; a
folder that cannot be used is a clear error before any fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import jax
import pytest

import transst_bayes as tb
from transst_bayes import cache

# A default-style call on a small simulated pair, in a new process; prints how many programs
# were compiled (cache requests that were not hits) and the labels.
FIT = r"""
import json, jax.monitoring as m
import transst_bayes as tb
n = {"requests": 0, "hits": 0}
def count(event, **kw):
    if event == "/jax/compilation_cache/compile_requests_use_cache": n["requests"] += 1
    if event == "/jax/compilation_cache/cache_hits": n["hits"] += 1
m.register_event_listener(count)
src, tgt = tb.simulate(0, height=14, width=14, n_genes=60, n_factors=3, n_domains=3)
res = tb.fit_em(tgt, src, label_key="label", n_domains=3, n_factors=3, calibrate="none",
                transfer="eb", n_restarts=1, max_iter=20)
print(json.dumps({"compiled": n["requests"] - n["hits"], "hits": n["hits"],
                  "labels": res.labels.tolist()}))
"""


def _new_process(env_cache: str) -> dict:
    env = dict(os.environ, TRANSST_CACHE_DIR=env_cache)
    out = subprocess.run([sys.executable, "-c", FIT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_second_new_process_compiles_nothing(tmp_path):
    folder = tmp_path / "jax-cache"
    first = _new_process(str(folder))
    assert first["compiled"] > 10  # the fit's programs, compiled and written
    assert len(list(folder.iterdir())) >= first["compiled"] // 2
    second = _new_process(str(folder))
    assert second["compiled"] == 0, second["compiled"]
    assert second["hits"] >= first["compiled"]
    assert second["labels"] == first["labels"]
    off = _new_process("off")  # the switch: nothing read from the cache
    assert off["hits"] == 0 and off["labels"] == first["labels"]


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not decided about the cache yet; JAX's own setting restored after."""
    monkeypatch.setattr(cache, "_choice", {})
    yield
    jax.config.update("jax_compilation_cache_dir", None)
    cache._apply(None)


def test_unusable_folder_from_environment_is_an_error_before_the_fit(fresh, monkeypatch, tmp_path, small_pair):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TRANSST_CACHE_DIR", str(blocker / "jax"))
    src, tgt = small_pair
    with pytest.raises(ValueError, match=r"TRANSST_CACHE_DIR.*writable folder.*=off"):
        tb.fit_em(tgt, src, label_key="label", n_domains=3)
    assert jax.config.jax_compilation_cache_dir is None


def test_unusable_folder_given_is_an_error(fresh, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"compilation_cache\(folder=\.\.\.\)"):
        tb.compilation_cache(blocker / "jax")
    with pytest.raises(TypeError, match="True, False or a path"):
        tb.compilation_cache(3)


def test_unusable_default_folder_warns_and_fits_without(fresh, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.delenv("TRANSST_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.warns(UserWarning, match="fitting without it"):
        cache.ensure_default()
    assert jax.config.jax_compilation_cache_dir is None


def test_move_and_turn_off(fresh, monkeypatch, tmp_path):
    monkeypatch.delenv("TRANSST_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.ensure_default()  # the default folder, under XDG_CACHE_HOME
    assert jax.config.jax_compilation_cache_dir == str((tmp_path / "xdg" / "transst_bayes" / "jax").resolve())
    assert tb.compilation_cache(tmp_path / "elsewhere") == (tmp_path / "elsewhere").resolve()
    assert jax.config.jax_compilation_cache_dir == str((tmp_path / "elsewhere").resolve())
    assert tb.compilation_cache(False) is None
    assert jax.config.jax_compilation_cache_dir is None
    cache.ensure_default()  # decided: off stays off
    assert jax.config.jax_compilation_cache_dir is None


def test_callers_own_jax_cache_is_left_alone(fresh, tmp_path):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    cache.ensure_default()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")

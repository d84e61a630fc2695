"""Nothing lost: every file the package writes replaces the previous one only when complete
(files.py). A file-size limit (RLIMIT_FSIZE, as a full disk: the write fails with EFBIG midway)
and an interrupt during the write must leave the earlier file readable and no partial file
behind; the CLI's Ctrl-C ends with exit status 130 and one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import transst_bayes as tb
from transst_bayes import files

resource = pytest.importorskip("resource")  # POSIX only


@contextmanager
def file_size_limit(n_bytes: int):
    """Writes past `n_bytes` fail with OSError (EFBIG) in this process, as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the signal kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial" in p.name]


@pytest.fixture(scope="module")
def fitted(small_pair):
    src, tgt = small_pair
    return tgt, tb.fit_em(tgt, src, n_domains=3, n_factors=5, graph="st", n_restarts=1)


def test_a_save_that_fails_midway_leaves_the_previous_file_readable(fitted, tmp_path):
    _, res = fitted
    path = tmp_path / "fit.npz"
    res.save(path)
    size = path.stat().st_size
    with file_size_limit(size // 2), pytest.raises(OSError):
        res.save(path)
    assert path.stat().st_size == size
    back = tb.load_result(path)
    np.testing.assert_array_equal(back.labels, res.labels)
    assert _leftovers(tmp_path) == []


def test_an_interrupted_save_leaves_the_previous_file_readable(fitted, tmp_path, monkeypatch):
    _, res = fitted
    path = tmp_path / "fit.npz"
    res.save(path)
    before = path.read_bytes()

    def interrupted(file, **arrays):  # half a file written, then Ctrl-C
        Path(file).write_bytes(before[: len(before) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        res.save(path)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def test_cli_h5ad_figures_and_tables_survive_a_failed_write(fitted, tmp_path):
    from transst_bayes.cli import _write_h5ad

    tgt, res = fitted
    a = tgt.copy()
    res.to_anndata(a)
    h5 = tmp_path / "out.h5ad"
    _write_h5ad(a, h5)
    size = h5.stat().st_size
    with file_size_limit(size // 2), pytest.raises(OSError, match="could not write .*out.h5ad .*unchanged"):
        _write_h5ad(a, h5)  # h5py's RuntimeError as the OSError the CLI prints in one line
    assert ad.read_h5ad(h5).n_obs == a.n_obs

    png = tmp_path / "domains.png"
    tb.pl.domains(a, save=png, show=False)
    size = png.stat().st_size
    with file_size_limit(size // 2), pytest.raises(OSError):
        tb.pl.domains(a, save=png, show=False)
    assert png.stat().st_size == size and png.read_bytes()[:4] == b"\x89PNG"

    tsv = tmp_path / "k_table.tsv"
    files.write_text(tsv, "K\tloglik\n" + "3\t-1.0\n" * 100)
    with file_size_limit(100), pytest.raises(OSError):
        files.write_text(tsv, "other\n" * 100)
    assert tsv.read_text().startswith("K\tloglik") and _leftovers(tmp_path) == []


def test_figure_without_extension_is_written_as_matplotlib_would(fitted, tmp_path):
    tgt, res = fitted
    a = tgt.copy()
    res.to_anndata(a)
    tb.pl.domains(a, save=tmp_path / "plot", show=False)
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_out_path_is_checked_by_a_test_write_before_any_fit(tmp_path, capsys, monkeypatch):
    """os.access answers for permission bits only: a folder that refuses every write (here a
    zero file-size limit; in practice a full disk, a read-only mount, a quota) passed it, and
    the whole fit ran before the write failed."""
    from transst_bayes.cli import EXIT_BAD_INPUT, main

    def no_fit(*a, **k):
        raise AssertionError("the fit started before the unwritable --out was reported")

    monkeypatch.setattr("transst_bayes.tl.transst", no_fit)
    src, tgt = tb.simulate(seed=0, height=6, width=6, n_genes=30)
    t = tmp_path / "t.h5ad"
    tgt.write_h5ad(t)
    with file_size_limit(0):
        rc = main(["--no-cache", "fit", "--target", str(t), "--n-domains", "2",
                   "--out", str(tmp_path / "o.h5ad")])
        rc_demo = main(["--no-cache", "demo", "--out", str(tmp_path / "demo")])
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT and rc_demo == EXIT_BAD_INPUT
    assert "--out" in err and "cannot be written (File too large)" in err
    assert not (tmp_path / "o.h5ad").exists()


@pytest.mark.slow
def test_ctrl_c_in_the_cli_exits_130_with_one_line(tmp_path):
    """Ctrl-C while the fit compiles: exit status 130, one line on stderr (no traceback), no
    partial output (it printed a 52-line traceback and crashed in half the tries)."""
    # 1,600 source spots: the held-out fits of the default keep the fit going for tens of seconds
    # (a 400-spot fit ended within the 8 s once XLA compiled with its quicker emitters)
    src, tgt = tb.simulate(seed=0, height=40, width=40, n_genes=100)
    t, s = tmp_path / "t.h5ad", tmp_path / "s.h5ad"
    tgt.write_h5ad(t)
    src.write_h5ad(s)
    out = tmp_path / "o.h5ad"
    p = subprocess.Popen([sys.executable, "-m", "transst_bayes", "--quiet", "--no-cache", "fit",
                          "--target", str(t), "--source", str(s), "--n-domains", "3", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # inside the fit (reading, preparing or compiling)
    assert p.poll() is None, "the fit ended before it could be interrupted"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == ["transst-bayes fit: interrupted; no output written"]
    assert not out.exists() and _leftovers(tmp_path) == []


def test_cli_write_failure_is_one_line_and_exit_1(tmp_path, capsys):
    """A full disk while the CLI writes its .h5ad: one line naming the file, exit status 1, the
    earlier file intact (before: a traceback, then a segmentation fault)."""
    from transst_bayes.cli import EXIT_WRITE_FAILED, main

    out = tmp_path / "sim"
    args = ["--no-cache", "simulate", "--out", str(out), "--size", "6", "--genes", "20", "--factors", "2"]
    assert main(args) == 0
    before = (out / "source.h5ad").read_bytes()
    capsys.readouterr()
    with file_size_limit(2000):  # the test write of --out passes, the .h5ad does not fit
        rc = main(args + ["--seed", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == EXIT_WRITE_FAILED and len(err) == 1
    assert "could not write" in err[0] and "source.h5ad" in err[0]
    assert (out / "source.h5ad").read_bytes() == before and _leftovers(out) == []

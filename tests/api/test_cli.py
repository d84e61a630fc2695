"""The `transst-bayes` command: demo (README's main command), fit, simulate, and the message and
exit code for each bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from transst_bayes.cli import EXIT_BAD_INPUT, main


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRANSST_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "jax_cache"))


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    rc = main(["--quiet", "--no-cache", "simulate", "--out", str(out), "--size", "14", "--genes", "80",
               "--factors", "4", "--domains", "3"])
    assert rc == 0
    return out


@pytest.mark.slow
def test_demo_writes_outputs(tmp_path):
    """README's main command, in its own process: the CLI switches on JAX's persistent
    compilation cache, process-wide, which must not leak into the rest of the suite (XLA's
    compiler segfaulted in later tests when it did)."""
    r = subprocess.run([sys.executable, "-c", "import sys; from transst_bayes.cli import main; "
                        "sys.exit(main(sys.argv[1:]))", "--quiet", "demo", "--out", str(tmp_path),
                        "--size", "30", "--k-min", "3", "--k-max", "5"],
                       capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "ARI vs truth" in out and "hbic" in out
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["ari"] >= 0.8 and summary["chosen_K"] in (3, 4, 5)
    a = ad.read_h5ad(tmp_path / "demo_target.h5ad")
    assert "transst" in a.obs and "transst_proba" in a.obsm and "transst_markers" in a.uns
    figs = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert figs == {"domains.png", "uncertainty.png", "markers.png", "k_selection.png",
                    "embedding.png", "transfer_breaking.png"}
    assert all((tmp_path / "figures" / f).stat().st_size > 5000 for f in figs)
    k = (tmp_path / "k_table.tsv").read_text().splitlines()
    assert len(k) == 1 + 3 and k[0].startswith("K\t")
    # the compilation cache was written (a second run reuses it)
    cache = Path(os.environ["TRANSST_CACHE_DIR"])
    assert cache.is_dir() and any(cache.iterdir())


@pytest.mark.slow
def test_simulate_then_fit(sim_files, tmp_path, capsys):
    src = ad.read_h5ad(sim_files / "source.h5ad")
    assert "label" in src.obs and src.n_vars == 80
    out = tmp_path / "fit.h5ad"
    rc = main(["--quiet", "--no-cache", "fit", "--target", str(sim_files / "target.h5ad"), "--source",
               str(sim_files / "source.h5ad"), "--label-key", "label", "--k-range", "2:4",
               "--n-factors", "4", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "spots per domain" in text and "hbic" in text
    assert "transfer: eb\n" in text  # a one-section source: transfer="auto" keeps the source
    stages = text.split("seconds by stage (first calls compile): ")[1].splitlines()[0]
    assert [w.split()[0] for w in stages.split(", ")] == ["prepare", "graph", "held_out", "source", "transfer",
                                                          "cluster", "assemble", "calibration", "total"]
    a = ad.read_h5ad(out)
    from transst_bayes.metrics import adjusted_rand_index

    assert adjusted_rand_index(a.obs["transst"].astype(str).to_numpy(), a.obs["truth"].astype(str).to_numpy()) > 0.8
    assert {"transst_markers", "transst_transfer_breaking"} <= set(a.uns)


def _bad(args, capsys):
    rc = main(["--quiet", "--no-cache"] + args)
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT, err
    return err


def test_fit_bad_inputs(sim_files, tmp_path, capsys):
    t, s = str(sim_files / "target.h5ad"), str(sim_files / "source.h5ad")
    base = ["fit", "--target", t, "--source", s, "--n-factors", "4", "--n-domains", "3",
            "--out", str(tmp_path / "o.h5ad")]
    assert "does not exist" in _bad(["fit", "--target", "nope.h5ad", "--out", "o.h5ad"], capsys)
    junk = tmp_path / "junk.h5ad"
    junk.write_text("not hdf5")
    assert "not a readable .h5ad" in _bad(["fit", "--target", str(junk), "--out", "o.h5ad"], capsys)
    assert "--label-key 'cell'" in _bad(base + ["--label-key", "cell"], capsys)
    assert "--layer 'raw'" in _bad(base + ["--layer", "raw"], capsys)
    assert "--spatial-key 'xy'" in _bad(base + ["--spatial-key", "xy"], capsys)
    assert "--k-range must look like" in _bad(base[:-4] + ["--k-range", "2-5", "--out", "o.h5ad"], capsys)
    assert "not both" in _bad(base + ["--k-range", "2:4"], capsys)
    # mismatched genes: a source with other gene names
    src = ad.read_h5ad(s)
    src.var_names = [f"other{i}" for i in range(src.n_vars)]
    other = tmp_path / "other.h5ad"
    src.write_h5ad(other)
    err = _bad(["fit", "--target", t, "--source", str(other), "--n-factors", "4", "--n-domains", "3",
                "--out", str(tmp_path / "o.h5ad")], capsys)
    assert "share 0 genes" in err
    # bad values inside the data: NaN in the target
    tgt = ad.read_h5ad(t)
    X = np.asarray(tgt.X, dtype=np.float32).copy()
    X[0, 0] = np.nan
    tgt.X = X
    tgt.write_h5ad(tmp_path / "nan.h5ad")
    assert "NaN" in _bad(["fit", "--target", str(tmp_path / "nan.h5ad"), "--out", "o.h5ad",
                          "--n-factors", "4", "--n-domains", "3"], capsys)
    assert not (tmp_path / "o.h5ad").exists()
    assert "--shift" in _bad(["simulate", "--shift", "huge", "--out", str(tmp_path)], capsys)


def test_console_script_entry_point_runs():
    """`python -m transst_bayes.cli --help` (what the console script calls) lists the commands."""
    r = subprocess.run([sys.executable, "-m", "transst_bayes.cli", "--help"], capture_output=True,
                       text=True, check=True)
    assert all(c in r.stdout for c in ("demo", "fit", "simulate"))


def test_output_paths_and_sizes_are_checked_before_any_work(sim_files, tmp_path, capsys, monkeypatch):
    t, s = str(sim_files / "target.h5ad"), str(sim_files / "source.h5ad")

    def no_fit(*a, **k):
        raise AssertionError("the fit started before the bad output path was reported")

    monkeypatch.setattr("transst_bayes.tl.transst", no_fit)
    base = ["fit", "--target", t, "--source", s, "--n-domains", "3", "--out"]
    assert "is a directory" in _bad(base + [str(tmp_path)], capsys)
    assert "does not exist" in _bad(base + [str(tmp_path / "absent" / "o.h5ad")], capsys)
    for args, msg in ((["--size", "0"], "--size must be >= 2"), (["--genes", "0"], "--genes must be >= 2"),
                      (["--size", "-3"], "--size must be >= 2"), (["--domains", "0"], "--domains must be >= 2"),
                      (["--factors", "10", "--genes", "10"], "must be smaller than --genes")):
        assert msg in _bad(["simulate", "--out", str(tmp_path / "sim")] + args, capsys)
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in _bad(["simulate", "--out", str(tmp_path / "file")], capsys)
    assert "--k-min and --k-max" in _bad(["demo", "--out", str(tmp_path / "d"), "--k-min", "5", "--k-max", "3"],
                                         capsys)


def test_transfer_line_says_how_the_source_was_used():
    import json

    from transst_bayes.cli import _transfer_line

    choice = {"chosen": "none", "held_out_ari": {"eb": 0.19, "none": 0.21}, "n_sections": 7}
    uns = {"settings": json.dumps({"transfer_used": "none"}),
           "meta": json.dumps({"info": {"transfer_choice": choice}})}
    assert _transfer_line(uns) == ("transfer: none (chosen on 7 held-out source sections: mean ARI 0.190 "
                                   "with the source, 0.210 without)")
    uns = {"settings": json.dumps({"transfer_used": "eb"}), "meta": json.dumps({"info": {}})}
    assert _transfer_line(uns) == "transfer: eb"


def _her2st():
    from conftest import benchmark, data_dir

    if data_dir() is None or not (data_dir() / "her2st").exists():
        pytest.skip("HER2ST data not found: set TRANSST_DATA to the folder holding her2st/")
    return benchmark("real_data").her2st_protocol("H1")


@pytest.mark.slow
def test_fit_finishes_when_the_default_sets_the_source_aside(tmp_path, capsys):
    """Regression: on HER2ST transfer="auto" chose "none", and `fit` then died asking for
    transfer-breaking genes ("the fit has no source loadings"), exit 2, nothing written. Target
    H1, source E1 + F1 (measured held-out ARI 0.02 with the source, 0.14 without)."""
    target, source, _ = _her2st()
    source = source[source.obs["section"].isin(["E1", "F1"]).to_numpy()].copy()
    target.write_h5ad(tmp_path / "t.h5ad")
    source.write_h5ad(tmp_path / "s.h5ad")
    out = tmp_path / "out.h5ad"
    rc = main(["--quiet", "--no-cache", "fit", "--target", str(tmp_path / "t.h5ad"), "--source",
               str(tmp_path / "s.h5ad"), "--label-key", "label", "--n-domains", "6", "--n-genes", "500",
               "--out", str(out)])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "transfer: none" in text.out and "transfer-breaking genes: none computed" in text.out
    a = ad.read_h5ad(out)
    assert a.obs["transst"].nunique() >= 4 and "transst_markers" in a.uns
    assert json.loads(str(a.uns["transst"]["settings"]))["transfer_used"] == "none"
    # the options the warning points to are there: --transfer eb uses the source anyway
    rc = main(["--quiet", "--no-cache", "fit", "--target", str(tmp_path / "t.h5ad"), "--source",
               str(tmp_path / "s.h5ad"), "--label-key", "label", "--n-domains", "6", "--n-genes", "500",
               "--transfer", "eb", "--calibrate", "none", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    a = ad.read_h5ad(out)
    assert json.loads(str(a.uns["transst"]["settings"]))["transfer_used"] == "eb"
    assert "transst_transfer_breaking" in a.uns and a.uns["transst"]["temperature"] == 1.0


def test_fit_options_are_checked_before_the_fit(sim_files, tmp_path, capsys):
    base = ["--quiet", "--no-cache", "fit", "--target", str(sim_files / "target.h5ad"), "--out",
            str(tmp_path / "o.h5ad")]
    for extra, msg in ((["--calibrate", "warm"], "--calibrate"), (["--calibrate", "-1"], "--calibrate"),
                       (["--transfer", "eb"], "needs a labeled --source"),
                       (["--guide", "normal"], "--method svi"),
                       (["--classifier", "0"], "needs a labeled --source")):
        assert main(base + extra) == EXIT_BAD_INPUT
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "o.h5ad").exists()


def test_fit_passes_its_options(sim_files, tmp_path, capsys):
    out = tmp_path / "o.h5ad"
    rc = main(["--quiet", "--no-cache", "fit", "--target", str(sim_files / "target.h5ad"), "--source",
               str(sim_files / "source.h5ad"), "--n-domains", "3", "--n-factors", "4", "--transfer", "eb",
               "--calibrate", "2.5", "--domains", "free", "--n-restarts", "1", "--classifier", "0.5",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    a = ad.read_h5ad(out)
    st = json.loads(str(a.uns["transst"]["settings"]))
    assert st["transfer_used"] == "eb" and st["domains_used"] == "free" and st["n_restarts"] == 1
    assert st["classifier"] == 0.5
    assert a.uns["transst"]["temperature"] == 2.5

"""The `transst-bayes demo` command (README's main command) on a small lattice."""

from __future__ import annotations

import json

import anndata as ad

from transst_bayes.cli import main


def test_demo_writes_outputs(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--size", "30", "--k-min", "3", "--k-max", "5"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "ARI vs truth" in out and "hbic" in out
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["ari"] >= 0.8 and summary["chosen_K"] in (3, 4, 5)
    a = ad.read_h5ad(tmp_path / "demo_target.h5ad")
    assert "transst" in a.obs and "transst_proba" in a.obsm
    assert (tmp_path / "demo_result.npz").exists()

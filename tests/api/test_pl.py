"""transst_bayes.pl: each plot draws what its docstring says (headless, Agg backend)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402

import transst_bayes as tb  # noqa: E402
from transst_bayes import pl  # noqa: E402

MISSING_KEY = "no domains under obs['nope']; run transst_bayes.tl.transst"


@pytest.fixture(scope="module")
def fitted():
    src, tgt = tb.simulate(0, height=12, width=12, n_genes=60, n_factors=4, n_domains=3)
    res = tb.fit_em(tgt, src, n_domains=[2, 3], n_factors=4, n_restarts=1, max_iter=30)
    res.to_anndata(tgt)
    tgt.uns["transst_markers"] = tb.summary.marker_genes(res)
    tgt.uns["transst_transfer_breaking"] = tb.summary.transfer_breaking_genes(res)
    return tgt


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _K(ad):
    return len(ad.obs["transst"].cat.categories)


def _legend(ax) -> Legend:
    leg = ax.get_legend()
    assert leg is not None
    return leg


def _facecolors(ax) -> set[str]:
    return {to_hex(c) for coll in ax.collections for c in coll.get_facecolors()}


def test_domains_colours_and_legend(fitted):
    ax = pl.domains(fitted)
    K = _K(fitted)
    assert K == fitted.uns["transst"]["n_domains"]
    cols = fitted.uns["transst_colors"]
    assert _facecolors(ax) == {to_hex(c) for c in cols}
    assert len(_facecolors(ax)) == K
    # each spot has its own domain's colour
    fc = [to_hex(c) for c in ax.collections[0].get_facecolors()]
    codes = fitted.obs["transst"].cat.codes.to_numpy()
    assert fc == [to_hex(cols[k]) for k in codes]
    leg = _legend(ax)
    assert [t.get_text() for t in leg.get_texts()] == list(map(str, fitted.obs["transst"].cat.categories))
    assert ax.get_aspect() == 1.0
    lo, hi = ax.get_ylim()
    assert lo < hi  # not inverted
    # the colours come from uns: changing them changes the plot
    plt.close("all")
    ad = fitted.copy()
    ad.uns["transst_colors"] = ["#000000", "#ff00ff", "#00ffff"][:K]
    assert _facecolors(pl.domains(ad, title="x")) == set(ad.uns["transst_colors"])


def test_domains_reference_panel(fitted):
    axs = pl.domains(fitted, reference="truth", size=5)
    assert len(axs) == 2 and axs[0].figure is axs[1].figure
    ref_cats = [str(c) for c in fitted.obs["truth"].cat.categories]
    assert [t.get_text() for t in _legend(axs[0]).get_texts()] == ref_cats
    assert axs[0].get_title() == "truth"
    assert len(_facecolors(axs[0])) == len(ref_cats)
    # a domain named like a reference category wears its colour (named anchored domains here)
    ref_col = {t.get_text(): to_hex(h.get_markerfacecolor())
               for t, h in zip(_legend(axs[0]).get_texts(), _legend(axs[0]).legend_handles)}
    dom_col = {t.get_text(): to_hex(h.get_markerfacecolor())
               for t, h in zip(_legend(axs[1]).get_texts(), _legend(axs[1]).legend_handles)}
    shared = set(ref_col) & set(dom_col)
    assert shared and all(dom_col[n] == ref_col[n] for n in shared)
    assert len(set(dom_col.values())) == len(dom_col)  # still one colour per domain
    # reference colours from uns when they fit, else the palette
    ad = fitted.copy()
    ad.uns["truth_colors"] = ["#111111", "#222222", "#333333", "#444444"][: len(ref_cats)]
    axs = pl.domains(ad, reference="truth")
    assert _facecolors(axs[0]) == set(ad.uns["truth_colors"])
    ad.uns["truth_colors"] = ["#111111"]  # wrong length: ignored
    axs = pl.domains(ad, reference="truth")
    assert "#111111" not in _facecolors(axs[0]) and len(_facecolors(axs[0])) == len(ref_cats)
    # given axes are used
    fig, given = plt.subplots(1, 2)
    out = pl.domains(fitted, reference="truth", ax=given)
    assert out[0] is given[0] and out[1] is given[1]
    with pytest.raises(ValueError, match="2 panel"):
        pl.domains(fitted, reference="truth", ax=given[0])


@pytest.mark.parametrize("which", ["maxprob", "entropy"])
def test_uncertainty_colourbar(fitted, which):
    fig, ax = plt.subplots()
    out = pl.uncertainty(fitted, which=which, ax=ax)
    assert out is ax
    v = fitted.obs[f"transst_{which}"].to_numpy()
    sc = ax.collections[0]
    np.testing.assert_allclose(sc.get_array(), v)
    assert sc.get_clim() == pytest.approx((v.min(), v.max()))
    assert len(fig.axes) == 2  # the colourbar
    cbar = sc.colorbar
    assert cbar is not None
    assert cbar.norm.vmin == pytest.approx(v.min()) and cbar.norm.vmax == pytest.approx(v.max())


def test_uncertainty_bad_which(fitted):
    with pytest.raises(ValueError, match="which"):
        pl.uncertainty(fitted, which="bad")


@pytest.mark.parametrize("n_top", [2, 5])
def test_marker_heatmap(fitted, n_top):
    ax = pl.marker_heatmap(fitted, n_top=n_top)
    K = _K(fitted)
    Z = np.asarray(ax.images[0].get_array())
    m = fitted.uns["transst_markers"]
    expect = []
    for k in map(str, fitted.obs["transst"].cat.categories):
        expect += list(m[m["domain"] == k].sort_values("contrast", ascending=False)["gene"].head(n_top))
    assert Z.shape == (len(expect), K) and len(expect) == n_top * K
    assert [t.get_text() for t in ax.get_yticklabels()] == expect
    np.testing.assert_allclose(Z.mean(axis=1), 0, atol=1e-9)
    np.testing.assert_allclose(Z.std(axis=1), 1, atol=1e-9)
    # z-score of the expected expression of the first gene
    e = m[m["gene"] == expect[0]].sort_values("domain")["expression"].to_numpy()
    np.testing.assert_allclose(Z[0], (e - e.mean()) / e.std(), atol=1e-9)
    # the first gene marks domain 0: its label and its strip have domain 0's colour
    c0 = fitted.uns["transst_colors"][0]
    assert to_hex(ax.get_yticklabels()[0].get_color()) == c0
    strip = [p for p in ax.patches]
    assert len(strip) == len(expect) and to_hex(strip[0].get_facecolor()) == c0
    assert {to_hex(p.get_facecolor()) for p in strip} == set(fitted.uns["transst_colors"])


def test_marker_heatmap_blocks_keep_a_gene_two_domains_rank(fitted):
    """Regression: a gene among the top of two domains was shown only in the first block (ERBB2
    on HER2ST H1); each block shows its own top genes."""
    ad = fitted.copy()
    m = ad.uns["transst_markers"].copy()
    cats = list(map(str, ad.obs["transst"].cat.categories))
    shared = str(m[m["domain"] == cats[0]].sort_values("contrast", ascending=False)["gene"].iloc[0])
    top = m["contrast"].max() + 1.0
    m.loc[(m["domain"] == cats[1]) & (m["gene"] == shared), "contrast"] = top  # first of domain 1 too
    ad.uns["transst_markers"] = m
    ax = pl.marker_heatmap(ad, n_top=2)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == shared and labels[2] == shared and len(labels) == 2 * _K(ad)


def test_marker_heatmap_missing_table(fitted):
    ad = fitted.copy()
    del ad.uns["transst_markers"]
    with pytest.raises(ValueError, match=r"transst_bayes\.tl\.markers\(adata\)"):
        pl.marker_heatmap(ad)


def _ridge_fills(ax):
    return [c for c in ax.collections if len(c.get_paths())]


def test_ridge(fitted):
    gene = str(fitted.var_names[0])
    ax = pl.ridge(fitted, gene)
    K = _K(fitted)
    cols = [to_hex(c) for c in fitted.uns["transst_colors"]]
    fills = _ridge_fills(ax)
    assert len(fills) == K
    assert [to_hex(f.get_facecolor()[0]) for f in fills] == cols
    assert [to_hex(line.get_color()) for line in ax.lines] == cols
    # domain 0 on top: labels by decreasing tick position
    pos = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    names = list(map(str, fitted.obs["transst"].cat.categories))
    assert sorted(pos, key=pos.get, reverse=True) == names
    # each fill sits on its domain's row
    for k, f in enumerate(fills):
        assert f.get_paths()[0].vertices[:, 1].min() == pytest.approx(pos[names[k]])
    # continuous data are used as is: the curves span the data range
    x = fitted[:, gene].X.ravel()
    xs = np.concatenate([line.get_xdata() for line in ax.lines])
    assert xs.min() < x.min() and xs.max() > x.max()
    with pytest.raises(ValueError, match="not_a_gene"):
        pl.ridge(fitted, "not_a_gene")
    with pytest.raises(ValueError, match="layer"):
        pl.ridge(fitted, gene, layer="nope")


def test_ridge_counts_sparse_and_histogram(fitted):
    ad = fitted.copy()
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=ad.shape).astype(float)
    gene = str(ad.var_names[1])
    counts[ad.obs["transst"].cat.codes.to_numpy() == 0, 1] = 0  # one value only in domain 0
    ad.layers["counts"] = sp.csr_matrix(counts)
    ax = pl.ridge(ad, gene, layer="counts")
    assert len(_ridge_fills(ax)) == _K(ad)
    # log-normalised: the x range is that of log1p(1e4 x / total), not of the counts
    lognorm = np.log1p(1e4 * counts[:, 1] / counts.sum(1))
    xs = np.concatenate([line.get_xdata() for line in ax.lines])
    assert xs.max() == pytest.approx(lognorm.max() + 0.1 * (lognorm.max() - lognorm.min()))
    assert xs.min() == pytest.approx(lognorm.min() - 0.1 * (lognorm.max() - lognorm.min()))


def test_embedding_pca_with_library(fitted):
    ad = fitted.copy()
    ad.obs["section"] = np.where(np.arange(ad.n_obs) % 2 == 0, "A", "B")
    axs = pl.embedding(ad, library_key="section", basis="pca")
    assert len(axs) == 2
    assert axs[0].get_xlabel() == "PC1" and axs[0].get_ylabel() == "PC2"
    assert axs[1].get_xlabel() == "PC1"
    assert _facecolors(axs[0]) == set(ad.uns["transst_colors"])
    assert [t.get_text() for t in _legend(axs[1]).get_texts()] == ["A", "B"]
    assert len(_facecolors(axs[1])) == 2
    # the points are the first two principal components of the factors
    X = np.asarray(ad.obsm["X_transst"], dtype=float)
    X = X - X.mean(0)
    U, S, _ = np.linalg.svd(X, full_matrices=False)
    off = axs[0].collections[0].get_offsets()
    np.testing.assert_allclose(np.abs(off), np.abs(U[:, :2] * S[:2]), rtol=1e-5, atol=1e-6)


def test_embedding_basis(fitted):
    ax = pl.embedding(fitted, basis="auto")
    try:
        import umap  # noqa: F401
        has_umap = True
    except ImportError:
        has_umap = False
    assert ax.get_xlabel() == ("UMAP1" if has_umap else "PC1")
    if not has_umap:
        with pytest.raises(ValueError, match="umap-learn"):
            pl.embedding(fitted, basis="umap")
    with pytest.raises(ValueError, match="basis"):
        pl.embedding(fitted, basis="tsne")


def _k_frame(ad):
    import pandas as pd

    return pd.DataFrame(json.loads(ad.uns["transst"]["k_table"])).sort_values("K")


def _chosen_lines(ax):
    return [line for line in ax.lines if line.get_label().startswith("chosen")]


def test_k_selection_draws_the_real_values_one_panel_per_criterion(fitted):
    axs = pl.k_selection(fitted)
    t = _k_frame(fitted)
    names = ["sbic", "bic", "mbic", "hbic", "icl"]
    assert isinstance(axs, list) and len(axs) == len(names)
    assert len({a.figure for a in axs}) == 1
    chosen = int(t.loc[t["chosen"], "K"].iloc[0])
    for ax, c in zip(axs, names):
        line = ax.lines[0]
        assert line.get_label() == c and ax.get_ylabel() == c and c in ax.get_title()
        assert list(line.get_xdata()) == list(t["K"])
        np.testing.assert_allclose(line.get_ydata(), t[c])  # the criterion itself, not rescaled
        # the chosen K: a dashed vertical line in every panel
        (vline,) = _chosen_lines(ax)
        assert list(vline.get_xdata()) == [chosen, chosen] and vline.get_linestyle() == "--"
        # the criterion's minimum is marked
        (best,) = [line for line in ax.lines if line.get_label().startswith("minimum")]
        i = int(np.argmin(t[c].to_numpy()))
        assert list(best.get_xdata()) == [t["K"].iloc[i]]
        assert best.get_ydata()[0] == pytest.approx(t[c].iloc[i])
        assert [tk.get_text() for tk in ax.get_xticklabels()] == [str(k) for k in t["K"]]
    # hbic (the default) chose K: its minimum is at the chosen K
    assert axs[3].lines[1].get_xdata()[0] == chosen
    with pytest.raises(ValueError, match="nonsense"):
        pl.k_selection(fitted, criteria=["nonsense"])


def test_k_selection_axes_and_deviance_scale(fitted):
    ad = fitted.copy()
    rows = json.loads(ad.uns["transst"]["k_table"])
    for r, loo in zip(rows, [-700.0, -650.0]):
        r.update(elpd_loo=loo, elpd_waic=float("nan"))
    ad.uns["transst"] = dict(ad.uns["transst"], k_table=json.dumps(rows))
    axs = pl.k_selection(ad)
    assert [a.lines[0].get_label() for a in axs] == ["sbic", "bic", "mbic", "hbic", "icl", "loo"]
    # loo on the deviance scale, -2 elpd, and labelled so
    np.testing.assert_allclose(axs[-1].lines[0].get_ydata(), [1400.0, 1300.0])
    assert "-2 elpd" in axs[-1].get_ylabel()
    plt.close("all")
    # given axes: as many as criteria, else a ValueError
    fig, given = plt.subplots(1, 2)
    out = pl.k_selection(ad, criteria=["bic", "waic"], ax=given)
    assert out == list(given)
    assert np.isnan(out[1].lines[0].get_ydata()).all() and len(_chosen_lines(out[1])) == 1
    with pytest.raises(ValueError, match="2 panel"):
        pl.k_selection(ad, criteria=["bic", "icl"], ax=given[0])
    with pytest.raises(ValueError, match="1 panel"):
        pl.k_selection(ad, criteria="bic", ax=given)
    # one criterion: still a list, of one Axes
    _, one = plt.subplots()
    assert pl.k_selection(ad, criteria="bic", ax=one) == [one]


def test_k_selection_single_k(fitted):
    ad = fitted.copy()
    rows = json.loads(ad.uns["transst"]["k_table"])
    row = dict(rows[-1], chosen=True, elpd_loo=-100.0, elpd_waic=float("nan"))
    ad.uns["transst"] = dict(ad.uns["transst"], k_table=json.dumps([row]))
    axs = pl.k_selection(ad)
    assert [a.lines[0].get_label() for a in axs] == ["sbic", "bic", "mbic", "hbic", "icl", "loo"]
    for a in axs:
        assert a.lines[0].get_marker() == "o" and list(a.lines[0].get_xdata()) == [row["K"]]
    np.testing.assert_allclose(axs[-1].lines[0].get_ydata(), [200.0])


def test_transfer_breaking(fitted):
    n_top = 7
    ax = pl.transfer_breaking(fitted, n_top=n_top)
    df = fitted.uns["transst_transfer_breaking"]
    top = df.sort_values("score", ascending=False).head(n_top)
    assert len(ax.patches) == n_top
    np.testing.assert_allclose([p.get_width() for p in ax.patches], top["score"])
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == list(top["gene"])
    # largest on top: the y axis is inverted, so the first bar is drawn at the top
    lo, hi = ax.get_ylim()
    assert lo > hi
    ad = fitted.copy()
    del ad.uns["transst_transfer_breaking"]
    with pytest.raises(ValueError, match=r"transst_bayes\.tl\.transfer_breaking_genes\(adata\)"):
        pl.transfer_breaking(ad)


@pytest.mark.parametrize("call", [
    lambda ad: pl.domains(ad, key="nope"),
    lambda ad: pl.uncertainty(ad, key="nope"),
    lambda ad: pl.marker_heatmap(ad, key="nope"),
    lambda ad: pl.ridge(ad, str(ad.var_names[0]), key="nope"),
    lambda ad: pl.embedding(ad, key="nope"),
    lambda ad: pl.k_selection(ad, key="nope"),
    lambda ad: pl.transfer_breaking(ad, key="nope"),
])
def test_missing_key(fitted, call):
    with pytest.raises(ValueError) as e:
        call(fitted)
    assert str(e.value).startswith(MISSING_KEY)
    assert "TransSTResult.to_anndata first" in str(e.value)


def test_calibration_diagram_draws_the_reliability_of_a_hand_made_fit():
    """Two domains named after annotation labels: spots with p = 0.95 of which 3 of 4 are right,
    spots with p = 0.65 of which 1 of 2 is right. The observed points are (0.95, 0.75) and
    (0.65, 0.5); the bars the shares 4/6 and 2/6; the title's ECE the hand value."""
    import anndata as ad
    import pandas as pd

    proba = np.array([[0.95, 0.05]] * 4 + [[0.35, 0.65]] * 2)
    truth = ["a", "a", "a", "b", "b", "a"]
    a = ad.AnnData(np.zeros((6, 1)), obs=pd.DataFrame({"truth": truth}, index=[str(i) for i in range(6)]))
    a.obs["transst"] = pd.Categorical.from_codes(proba.argmax(1), categories=["a", "b"])
    a.obsm["transst_proba"] = proba
    ax = pl.calibration(a, "truth")
    x, y = ax.lines[-1].get_data()
    np.testing.assert_allclose(x, [0.65, 0.95])
    np.testing.assert_allclose(y, [0.5, 0.75])
    heights = sorted(p.get_height() for p in ax.patches if p.get_height() > 0)
    np.testing.assert_allclose(heights, [2 / 6, 4 / 6])
    assert f"ECE {4 / 6 * 0.2 + 2 / 6 * 0.15:.3f}" in ax.get_title()
    with pytest.raises(ValueError, match="reference='nope'"):
        pl.calibration(a, "nope")
    with pytest.raises(ValueError, match="bins"):
        pl.calibration(a, "truth", bins=1)


def test_calibration_diagram_on_a_fit(fitted):
    ax = pl.calibration(fitted, "truth")
    assert "Brier" in ax.get_title() and len(ax.lines) == 2


def test_reference_colours_match_free_domains_by_overlap():
    """Free domains '0', '1' whose spots are reference 'b' and 'a' take b's and a's colours."""
    import anndata as ad
    import pandas as pd

    ref = ["a"] * 5 + ["b"] * 5
    dom = ["1"] * 5 + ["0"] * 5
    a = ad.AnnData(np.zeros((10, 1)), obs=pd.DataFrame({"ref": pd.Categorical(ref)}, index=[str(i) for i in range(10)]))
    a.obs["transst"] = pd.Categorical(dom, categories=["0", "1"])
    a.obsm["spatial"] = np.c_[np.arange(10.0), np.zeros(10)]
    a.uns["ref_colors"] = ["#ff0000", "#0000ff"]
    axs = pl.domains(a, reference="ref")
    fc = [to_hex(c) for c in axs[1].collections[0].get_facecolors()]
    assert fc == ["#ff0000"] * 5 + ["#0000ff"] * 5


def test_match_colors_makes_every_plot_use_the_reference_matched_colours(fitted):
    ad = fitted.copy()
    axs = pl.domains(ad, reference="truth")
    shown = {t.get_text(): to_hex(h.get_markerfacecolor())
             for t, h in zip(_legend(axs[1]).get_texts(), _legend(axs[1]).legend_handles)}
    plt.close("all")
    colors = pl.match_colors(ad, "truth")
    names = [str(c) for c in ad.obs["transst"].cat.categories]
    assert dict(zip(names, colors)) == shown
    assert list(ad.uns["transst_colors"]) == colors
    assert _facecolors(pl.domains(ad)) == set(colors)  # the plain map now uses them too
    with pytest.raises(ValueError, match="reference='nope'"):
        pl.match_colors(ad, "nope")


# ------------------------------------------------------------------ save=, show=, titles, legends
PLOTS = {
    "domains": lambda ad, **kw: pl.domains(ad, **kw),
    "domains_reference": lambda ad, **kw: pl.domains(ad, reference="truth", **kw),
    "uncertainty": lambda ad, **kw: pl.uncertainty(ad, which="entropy", **kw),
    "marker_heatmap": lambda ad, **kw: pl.marker_heatmap(ad, n_top=2, **kw),
    "ridge": lambda ad, **kw: pl.ridge(ad, str(ad.var_names[0]), **kw),
    "embedding": lambda ad, **kw: pl.embedding(ad, basis="pca", **kw),
    "k_selection": lambda ad, **kw: pl.k_selection(ad, **kw),
    "transfer_breaking": lambda ad, **kw: pl.transfer_breaking(ad, n_top=5, **kw),
    "calibration": lambda ad, **kw: pl.calibration(ad, "truth", **kw),
}


def _first_axes(out):
    return out[0] if isinstance(out, list) else out


@pytest.mark.parametrize("name", PLOTS)
def test_save_writes_the_figure(fitted, tmp_path, name):
    path = tmp_path / f"{name}.png"
    out = PLOTS[name](fitted, save=path)  # a pathlib.Path
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert _first_axes(out).figure.axes  # still returns its Axes
    PLOTS[name](fitted, save=str(tmp_path / f"{name}.pdf"))  # a str, format from the extension
    assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("name", PLOTS)
def test_bad_save_is_refused_before_drawing(fitted, tmp_path, name):
    with pytest.raises(TypeError, match="save must be a str or os.PathLike"):
        PLOTS[name](fitted, save=3)
    with pytest.raises(ValueError, match=r"save=.*folder .* does not exist"):
        PLOTS[name](fitted, save=tmp_path / "no_such_folder" / "plot.png")
    assert plt.get_fignums() == []  # nothing was drawn
    assert not (tmp_path / "no_such_folder").exists()


def test_save_names_other_bad_paths(fitted, tmp_path):
    with pytest.raises(ValueError, match="save=.* is a folder"):
        pl.domains(fitted, save=tmp_path)
    with pytest.raises(ValueError, match=r"save=.*cannot write \.xyz"):
        pl.domains(fitted, save=tmp_path / "plot.xyz")
    with pytest.raises(TypeError, match="save must be"):
        pl.domains(fitted, save=b"plot.png")
    with pytest.raises(TypeError, match="show must be True, False or None"):
        pl.domains(fitted, show="yes")
    assert plt.get_fignums() == []


@pytest.mark.parametrize("name", PLOTS)
def test_show(fitted, monkeypatch, name):
    calls = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: calls.append(a))
    PLOTS[name](fitted)
    PLOTS[name](fitted, show=None)
    PLOTS[name](fitted, show=False)
    assert calls == []
    out = PLOTS[name](fitted, show=True)
    assert len(calls) == 1
    assert _first_axes(out).figure is not None  # the Axes come back with show=True too


def test_readable_titles(fitted):
    ax = pl.domains(fitted)
    assert ax.get_title() == "domains" and _legend(ax).get_title().get_text() == "domain"
    assert pl.domains(fitted, title="my map").get_title() == "my map"
    ref, dom = pl.domains(fitted, reference="truth")
    assert ref.get_title() == "truth" and dom.get_title() == "domains"
    assert _legend(ref).get_title().get_text() == "truth"
    assert _legend(dom).get_title().get_text() == "domain"
    for which, words in [("maxprob", "maximum domain probability"), ("entropy", "domain entropy")]:
        ax = pl.uncertainty(fitted, which=which)
        assert ax.get_title() == words
        assert ax.collections[0].colorbar.ax.get_ylabel() == words
        assert ":" not in ax.get_title()
    assert pl.uncertainty(fitted, title="spot certainty").get_title() == "spot certainty"
    assert pl.marker_heatmap(fitted, n_top=2).get_title() == "top 2 marker genes per domain"
    assert pl.marker_heatmap(fitted, title="m").get_title() == "m"
    gene = str(fitted.var_names[0])
    assert pl.ridge(fitted, gene).get_title() == f"{gene} expression per domain"
    assert pl.ridge(fitted, gene, title="r").get_title() == "r"
    assert pl.embedding(fitted, basis="pca").get_title() == "domains"
    assert pl.embedding(fitted, basis="pca", title="e").get_title() == "e"
    assert pl.transfer_breaking(fitted, n_top=4).get_title() == "top 4 transfer-breaking genes"
    assert pl.transfer_breaking(fitted, title="t").get_title() == "t"
    ax = pl.calibration(fitted, "truth")
    assert ax.get_title().startswith("calibration against truth\n") and "ECE" in ax.get_title()
    ax = pl.calibration(fitted, "truth", title="c")
    assert ax.get_title().split("\n")[0] == "c" and "Brier" in ax.get_title()


def _legend_entries(ax) -> dict[str, str]:
    leg = _legend(ax)
    return {t.get_text(): to_hex(h.get_markerfacecolor()) for t, h in zip(leg.get_texts(), leg.legend_handles)}


def _toy(domains, **obs):
    import anndata as ad
    import pandas as pd

    n = len(domains)
    a = ad.AnnData(np.zeros((n, 1)), obs=pd.DataFrame(obs, index=[str(i) for i in range(n)]))
    a.obs["transst"] = domains
    a.obsm["spatial"] = np.c_[np.arange(float(n)), np.zeros(n)]
    a.obsm["X_transst"] = np.c_[np.arange(float(n)), np.arange(float(n)) ** 2]
    return a


def test_legends_list_names_in_natural_order():
    import pandas as pd

    names = ["10", "2", "1", "2", "10", "1"]
    # strings, and a Categorical in pandas' default (sorted) order: natural order
    for dom in (names, pd.Categorical(names)):
        a = _toy(dom, section=["s10", "s9", "s1", "s9", "s10", "s1"])
        ax = pl.domains(a)
        assert list(_legend_entries(ax)) == ["1", "2", "10"]
        # each legend entry wears the colour of its domain's spots
        fc = [to_hex(c) for c in ax.collections[0].get_facecolors()]
        shown = _legend_entries(ax)
        assert all(fc[i] == shown[n] for i, n in enumerate(names))
        _, lib = pl.embedding(a, basis="pca", library_key="section")
        assert list(_legend_entries(lib)) == ["s1", "s9", "s10"]
        assert _legend(lib).get_title().get_text() == "section" and lib.get_title() == "section"
        plt.close("all")
    # an order someone chose is kept: an ordered Categorical, or categories not in sorted order
    for cats, ordered in [(["10", "2", "1"], True), (["2", "10", "1"], False)]:
        a = _toy(pd.Categorical(names, categories=cats, ordered=ordered))
        assert list(_legend_entries(pl.domains(a))) == cats
    # the reference panel too
    a = _toy(pd.Categorical(["0", "1"] * 3), layer=["L10", "L2", "L1", "L2", "L10", "L1"])
    ref, _ = pl.domains(a, reference="layer")
    assert list(_legend_entries(ref)) == ["L1", "L2", "L10"]
    assert _legend(ref).get_title().get_text() == "layer"


def test_fit_domain_order_is_kept_in_legends(fitted):
    """The fit's domains beyond 10 ("0" ... "11") keep their order ("2" before "10")."""
    import pandas as pd

    names = [str(k) for k in range(12)]
    a = _toy(pd.Categorical.from_codes(np.arange(24) % 12, categories=names))
    assert list(_legend_entries(pl.domains(a))) == names
    assert list(_legend_entries(pl.domains(fitted))) == list(fitted.obs["transst"].cat.categories)


@pytest.mark.parametrize("name", pl.__all__)
def test_docstrings_are_numpydoc_with_every_parameter(name):
    import inspect
    import re

    f = getattr(pl, name)
    doc = inspect.getdoc(f)
    summary, _, rest = doc.partition("\n\n")
    assert "\n" not in summary and summary.endswith(".")
    sections = {}
    for m in re.finditer(r"^(\w+)\n-+\n(.*?)(?=^\w+\n-+\n|\Z)", rest, re.S | re.M):
        sections[m.group(1)] = m.group(2)
    assert list(sections) == ["Parameters", "Returns", "Examples"]
    documented = re.findall(r"^(\w+) : \S", sections["Parameters"], re.M)
    assert documented == list(inspect.signature(f).parameters)
    assert sections["Returns"].strip() and ">>> import transst_bayes as tb" in sections["Examples"]
    assert f">>> tb.pl.{name}(adata" in sections["Examples"]
    if name != "match_colors":
        assert {"show", "save"} <= set(inspect.signature(f).parameters)
        assert inspect.signature(f).parameters["show"].default is None

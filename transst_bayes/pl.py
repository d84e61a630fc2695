"""Plots of a TransST fit written into AnnData (scanpy style, matplotlib only).

Every function reads what `TransSTResult.to_anndata(adata, key_added=key)` (or
`transst_bayes.tl`) wrote under `key`, draws on a given `ax=` or on a new figure, never calls
`plt.show()`, and returns the Axes it drew on (a list of Axes for two-panel plots; the Figure
is `ax.figure`). Domain colours always come from `adata.uns[f"{key}_colors"]`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from . import keys
from . import validate as V
from .result import PALETTE

__all__ = ["domains", "match_colors", "uncertainty", "marker_heatmap", "ridge", "embedding", "k_selection",
           "transfer_breaking", "calibration"]

_MISSING = "#d3d3d3"  # spots without a category (NaN)


# ------------------------------------------------------------------ shared helpers
def _plt():
    import matplotlib.pyplot as plt

    return plt


def _check_key(adata, key: str) -> None:
    V.anndata("adata", adata)
    V.key("key", key)
    if key not in adata.obs:
        raise ValueError(f"no domains under obs['{key}']; run transst_bayes.tl.transst(adata, ...) "
                         "or TransSTResult.to_anndata first")


def _categorical(adata, column: str):
    """obs[column] as a pandas Categorical (non-categorical columns: sorted unique values)."""
    import pandas as pd

    if column not in adata.obs:
        raise ValueError(f"obs has no column {column!r}")
    v = adata.obs[column]
    if isinstance(v.dtype, pd.CategoricalDtype):
        return v.values
    return pd.Categorical(v)


def _colors(adata, column: str, n: int) -> list[str]:
    """uns[f"{column}_colors"] when it has one colour per category, else the tab20 palette."""
    cols = adata.uns.get(keys.colors(column))
    if cols is not None and len(cols) == n:
        return [str(c) for c in cols]
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def _domain_colors(adata, key: str) -> list[str]:
    return _colors(adata, key, len(_categorical(adata, key).categories))


def _coords(adata, spatial_key: str) -> np.ndarray:
    if spatial_key not in adata.obsm:
        raise ValueError(f"no coordinates under obsm['{spatial_key}']")
    xy = np.asarray(adata.obsm[spatial_key], dtype=float)
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise ValueError(f"obsm['{spatial_key}'] must have at least 2 columns, got shape {xy.shape}")
    return xy[:, :2]


def _axes(ax, n: int, size: tuple[float, float] = (5.0, 4.5)) -> list:
    """`n` Axes: the given one(s) or a new figure with n panels side by side."""
    if ax is None:  # constrained layout keeps each panel's outside legend clear of the next panel
        _, axs = _plt().subplots(1, n, figsize=((size[0] + 1.5) * n, size[1]), squeeze=False,
                                 layout="constrained")
        return list(axs[0])
    axs = list(np.ravel(ax)) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
    if len(axs) != n:
        raise ValueError(f"this plot draws {n} panel(s); pass ax= as {n} Axes (got {len(axs)})")
    return axs


def _scatter_categories(ax, xy: np.ndarray, cat, colors: Sequence[str], size: float,
                        title: str | None, legend_title: str | None = None):
    codes = np.asarray(cat.codes)
    pal = np.asarray(list(colors) + [_MISSING], dtype=object)
    ax.scatter(xy[:, 0], xy[:, 1], c=list(pal[codes]), s=size, linewidths=0)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor=c, markeredgewidth=0,
                      color=c, label=str(lab)) for lab, c in zip(cat.categories, colors)]
    ax.legend(handles=handles, title=legend_title, loc="center left", bbox_to_anchor=(1.0, 0.5),
              frameon=False, fontsize="small")
    if title is not None:
        ax.set_title(title)


def _colors_matching(cat, ref, ref_colors: Sequence[str], own: Sequence[str]) -> list[str]:
    """Domain colours that agree with a reference panel: a domain named like a reference
    category takes its colour; the other domains are matched to the remaining categories by
    Hungarian matching on their overlap and take those colours; the rest keep colours not used
    by the reference."""
    from scipy.optimize import linear_sum_assignment

    d, r = [str(c) for c in cat.categories], [str(c) for c in ref.categories]
    out: list = [None] * len(d)
    for i, name in enumerate(d):
        if name in r:
            out[i] = ref_colors[r.index(name)]
    free = [i for i in range(len(d)) if out[i] is None]
    left = [j for j in range(len(r)) if r[j] not in d]
    if free and left:
        dc, rc = np.asarray(cat.codes), np.asarray(ref.codes)
        M = np.array([[np.sum((dc == i) & (rc == j)) for j in left] for i in free])
        rows, cols = linear_sum_assignment(-M)
        for a, b in zip(rows, cols):
            out[free[a]] = ref_colors[left[b]]
    spare = [c for c in list(own) + list(PALETTE) if c not in out and c not in ref_colors]
    return [c if c is not None else spare.pop(0) for c in out]


def _check_reference(adata, reference: str) -> None:
    V.key("reference", reference)
    if reference not in adata.obs:
        raise ValueError(f"reference={reference!r} is not a column of adata.obs; pass the obs column "
                         "that holds the annotation to compare with")


def _reference_matched(adata, reference: str, key: str) -> list[str]:
    _check_reference(adata, reference)
    ref = _categorical(adata, reference)
    return _colors_matching(_categorical(adata, key), ref, _colors(adata, reference, len(ref.categories)),
                            _domain_colors(adata, key))


def match_colors(adata, reference: str, *, key: str = keys.DEFAULT) -> list[str]:
    """Colour the domains after a reference annotation in every later plot: writes the colours
    `domains(adata, reference=reference)` uses (a domain named like a reference category takes
    its colour, the others the colour of the category they overlap most, by Hungarian matching)
    to `uns[f"{key}_colors"]`, which `domains`, `embedding` and `marker_heatmap` read. Returns
    the colours."""
    _check_key(adata, key)
    colors = _reference_matched(adata, reference, key)
    adata.uns[keys.colors(key)] = colors
    return colors


def _spatial_style(ax, spatial_key: str) -> None:
    ax.set_aspect("equal")
    ax.set_xlabel(f"{spatial_key}1")
    ax.set_ylabel(f"{spatial_key}2")
    ax.set_xticks([])
    ax.set_yticks([])


def _default_size(n: int) -> float:
    return float(np.clip(20000.0 / max(n, 1), 1.0, 60.0))


def _table(adata, name: str, hint: str):
    import pandas as pd

    df = adata.uns.get(name)
    if df is None:
        raise ValueError(f"no table under uns['{name}']; run {hint} first")
    return df if isinstance(df, pd.DataFrame) else pd.DataFrame(df)


# ------------------------------------------------------------------ plots
def domains(adata, *, key: str = keys.DEFAULT, spatial_key: str = "spatial",
            reference: str | None = None, size: float | None = None, ax=None,
            title: str | None = None):
    """Spatial map of the domains in `obs[key]`, coloured by `uns[f"{key}_colors"]`, with a
    legend. The axes have equal aspect and the y axis is NOT inverted (image-coordinate data
    appear upside down; call `ax.invert_yaxis()` for them).

    reference : an obs column (e.g. a manual annotation) drawn in a second panel on the left of
        the domains; its colours come from `uns[f"{reference}_colors"]` when that has one colour
        per category, else from tab20, and the domains take the colours of the categories they
        match (by name, else by Hungarian matching on their overlap). Then `ax` may be a pair of
        Axes.

    Returns the Axes, or [reference Axes, domain Axes] with `reference`.
    """
    _check_key(adata, key)
    xy = _coords(adata, spatial_key)
    size = _default_size(adata.n_obs) if size is None else size
    axs = _axes(ax, 2 if reference is not None else 1)
    if reference is not None:
        ref = _categorical(adata, reference)
        _scatter_categories(axs[0], xy, ref, _colors(adata, reference, len(ref.categories)), size,
                            reference, legend_title=None)
        _spatial_style(axs[0], spatial_key)
    cat = _categorical(adata, key)
    colors = _domain_colors(adata, key) if reference is None else _reference_matched(adata, reference, key)
    _scatter_categories(axs[-1], xy, cat, colors, size,
                        title if title is not None else "TransST domains", legend_title="domain")
    _spatial_style(axs[-1], spatial_key)
    return axs if reference is not None else axs[0]


def uncertainty(adata, *, key: str = keys.DEFAULT, which: str = "maxprob",
                spatial_key: str = "spatial", cmap: str | None = None, size: float | None = None,
                ax=None):
    """Spatial map of the domain uncertainty with a colourbar: which="maxprob" (largest
    posterior domain probability, `obs[f"{key}_maxprob"]`) or "entropy" (`obs[f"{key}_entropy"]`).
    Default cmap: "viridis" for maxprob, "magma_r" for entropy (dark = uncertain in both).
    Colour limits are the data range. Returns the Axes."""
    if which not in ("maxprob", "entropy"):
        raise ValueError(f"which must be 'maxprob' or 'entropy', got {which!r}")
    _check_key(adata, key)
    col = {"maxprob": keys.maxprob, "entropy": keys.entropy}[which](key)
    if col not in adata.obs:
        raise ValueError(f"no obs['{col}']; run TransSTResult.to_anndata first")
    v = np.asarray(adata.obs[col], dtype=float)
    xy = _coords(adata, spatial_key)
    (ax,) = _axes(ax, 1)
    cmap = cmap or ("viridis" if which == "maxprob" else "magma_r")
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=v, cmap=cmap, linewidths=0,
                    s=_default_size(adata.n_obs) if size is None else size,
                    vmin=np.nanmin(v), vmax=np.nanmax(v))
    ax.figure.colorbar(sc, ax=ax, label=which)
    ax.set_title(f"{key}: {which}")
    _spatial_style(ax, spatial_key)
    return ax


def marker_heatmap(adata, *, key: str = keys.DEFAULT, n_top: int = 5, markers_key: str | None = None,
                   ax=None, cmap: str = "RdBu_r"):
    """Heatmap of the domains' expected expression of the top `n_top` marker genes per domain
    (by posterior mean contrast) from `uns[markers_key or f"{key}_markers"]`.

    Rows are genes in one block per domain, each block that domain's own top `n_top` genes (a
    gene among the top of several domains appears in each of their blocks), columns are domains; each row is z-scored across domains.
    A strip left of the heatmap and the colour of the gene labels give each block's domain.
    Returns the heatmap Axes (image in `ax.images[0]`, colourbar attached to its figure)."""
    n_top = V.integer("n_top", n_top, minimum=1)
    _check_key(adata, key)
    df = _table(adata, markers_key or keys.markers(key), "transst_bayes.tl.markers(adata)")
    cats = [str(c) for c in _categorical(adata, key).categories]
    colors = _domain_colors(adata, key)
    dom = df["domain"].astype(str)
    doms = [c for c in cats if (dom == c).any()]
    genes, owner = [], []
    for d in doms:
        top = df[dom == d].sort_values("contrast", ascending=False)["gene"].astype(str)
        for g in top.head(n_top):
            genes.append(g)
            owner.append(d)
    expr = df.assign(domain=dom, gene=df["gene"].astype(str)).pivot_table(
        index="gene", columns="domain", values="expression", aggfunc="mean")
    M = expr.reindex(index=genes, columns=doms).to_numpy(dtype=float)
    sd = np.nanstd(M, axis=1, keepdims=True)
    Z = (M - np.nanmean(M, axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    (ax,) = _axes(ax, 1, size=(0.6 * len(doms) + 3.0, 0.22 * len(genes) + 1.5))
    vmax = float(np.nanmax(np.abs(Z))) if Z.size and np.isfinite(Z).any() else 1.0
    im = ax.imshow(Z, aspect="auto", cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    from matplotlib.patches import Rectangle

    w = 0.35
    col_of = dict(zip(cats, colors))
    for i, d in enumerate(owner):
        ax.add_patch(Rectangle((-0.5 - w, i - 0.5), w, 1.0, facecolor=col_of[d], edgecolor="none",
                               clip_on=False))
    for i in range(1, len(owner)):
        if owner[i] != owner[i - 1]:
            ax.axhline(i - 0.5, color="white", linewidth=1.5)
    ax.set_xlim(-0.5 - w, len(doms) - 0.5)
    ax.set_xticks(range(len(doms)), doms)
    ax.set_yticks(range(len(genes)), genes, fontsize="small")
    for lab, d in zip(ax.get_yticklabels(), owner):
        lab.set_color(col_of[d])
    ax.set_xlabel("domain")
    ax.set_title(f"top {n_top} markers per domain")
    ax.figure.colorbar(im, ax=ax, label="expected expression (z-score)")
    return ax


def _expression(adata, gene: str, layer: str | None) -> np.ndarray:
    """One gene's values per spot; raw counts (non-negative integers) are log-normalised."""
    import scipy.sparse as sp

    names = list(map(str, adata.var_names))
    if gene not in names:
        raise ValueError(f"gene {gene!r} is not in adata.var_names")
    if layer is not None and layer not in adata.layers:
        raise ValueError(f"adata.layers has no layer {layer!r}")
    X = adata.layers[layer] if layer is not None else adata.X
    j = names.index(gene)
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        x = np.asarray(X[:, j].toarray()).ravel().astype(float)
        vals = X.data
    else:
        X = np.asarray(X)
        x = X[:, j].astype(float)
        vals = X
    if vals.size and np.all(vals >= 0) and np.all(np.mod(vals, 1) == 0):
        total = np.asarray(X.sum(axis=1)).ravel().astype(float)
        x = np.log1p(1e4 * x / np.where(total > 0, total, 1.0))
    return x


def ridge(adata, gene: str, *, key: str = keys.DEFAULT, layer: str | None = None, ax=None):
    """Ridge plot of one gene's expression per domain: a Gaussian KDE per domain (a histogram
    for a domain with fewer than 2 distinct values), one row per domain (domain 0 on top), filled
    in the domain's colour. Expression: `adata.layers[layer]` or `adata.X` (dense or sparse);
    raw counts are log-normalised per spot, log1p(1e4 * x / total counts of the spot).
    Returns the Axes."""
    from scipy.stats import gaussian_kde

    _check_key(adata, key)
    x = _expression(adata, gene, layer)
    cat = _categorical(adata, key)
    codes = np.asarray(cat.codes)
    colors = _domain_colors(adata, key)
    K = len(cat.categories)
    ok = np.isfinite(x)
    lo, hi = (float(x[ok].min()), float(x[ok].max())) if ok.any() else (0.0, 1.0)
    pad = 0.1 * (hi - lo) if hi > lo else 0.5
    grid = np.linspace(lo - pad, hi + pad, 256)
    (ax,) = _axes(ax, 1, size=(5.0, 0.7 * K + 1.2))
    for k in range(K):
        v = x[(codes == k) & ok]
        base = float(K - 1 - k)
        if v.size == 0:
            continue
        dens = None
        if np.unique(v).size >= 2:
            try:
                dens = gaussian_kde(v)(grid)
            except np.linalg.LinAlgError:
                dens = None
        if dens is None:
            edges = np.linspace(grid[0], grid[-1], 41)
            h, _ = np.histogram(v, bins=edges)
            dens = np.repeat(h.astype(float), 2)
            g = np.repeat(edges, 2)[1:-1]
        else:
            g = grid
        dens = 0.9 * dens / dens.max() if dens.max() > 0 else dens
        ax.fill_between(g, base, base + dens, facecolor=colors[k], alpha=0.8, edgecolor="none")
        ax.plot(g, base + dens, color=colors[k], linewidth=1.0)
    ax.set_yticks(np.arange(K - 1, -1, -1, dtype=float), [str(c) for c in cat.categories])
    ax.set_ylim(-0.1, K)
    ax.set_ylabel("domain")
    ax.set_xlabel(f"{gene} expression" + (f" ({layer})" if layer else ""))
    ax.set_title(gene)
    return ax


def _embed(X: np.ndarray, basis: str) -> tuple[np.ndarray, str]:
    if basis not in ("auto", "umap", "pca"):
        raise ValueError(f"basis must be 'auto', 'umap' or 'pca', got {basis!r}")
    if basis in ("auto", "umap"):
        try:
            import umap  # type: ignore
        except ImportError:
            if basis == "umap":
                raise ValueError("basis='umap' needs umap-learn (pip install umap-learn); "
                                 "use basis='pca'") from None
        else:
            if X.shape[0] > 3:
                nn = int(min(15, X.shape[0] - 1))
                return np.asarray(umap.UMAP(n_neighbors=nn, random_state=0).fit_transform(X)), "UMAP"
            if basis == "umap":
                raise ValueError("basis='umap' needs more than 3 spots")
    Xc = X - X.mean(axis=0)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    Y = U[:, :2] * S[:2]
    sign = np.sign(Y[np.argmax(np.abs(Y), axis=0), range(Y.shape[1])])
    Y = Y * np.where(sign == 0, 1.0, sign)
    if Y.shape[1] < 2:
        Y = np.column_stack([Y, np.zeros(len(Y))])
    return Y, "PC"


def embedding(adata, *, key: str = keys.DEFAULT, library_key: str | None = None,
              basis: str = "auto", size: float | None = None, ax=None):
    """2-D embedding of the latent factors `obsm[f"X_{key}"]` coloured by domain; with
    `library_key` (an obs column) a second panel on the right coloured by section.

    basis : "auto" (UMAP when umap-learn is installed, else PCA), "umap" (ValueError without
        umap-learn) or "pca" (numpy SVD). Axis labels say which ("UMAP1"/"PC1").

    Returns the Axes, or [domain Axes, section Axes] with `library_key`."""
    _check_key(adata, key)
    name = keys.factors(key)
    if name not in adata.obsm:
        raise ValueError(f"no latent factors under obsm['{name}']; run TransSTResult.to_anndata first")
    X = np.asarray(adata.obsm[name], dtype=float)
    Y, lab = _embed(X, basis)
    axs = _axes(ax, 2 if library_key is not None else 1)
    size = _default_size(adata.n_obs) if size is None else size
    _scatter_categories(axs[0], Y, _categorical(adata, key), _domain_colors(adata, key), size,
                        "domains", legend_title="domain")
    if library_key is not None:
        lib = _categorical(adata, library_key)
        _scatter_categories(axs[1], Y, lib, _colors(adata, library_key, len(lib.categories)), size,
                            library_key)
    for a in axs:
        a.set_xlabel(f"{lab}1")
        a.set_ylabel(f"{lab}2")
        a.set_xticks([])
        a.set_yticks([])
    return axs if library_key is not None else axs[0]


# criterion name -> (k_table column, factor): plotted value = factor * column; lower is better
_CRITERIA = {"sbic": ("sbic", 1.0), "bic": ("bic", 1.0), "mbic": ("mbic", 1.0), "hbic": ("hbic", 1.0), "icl": ("icl", 1.0),
             "waic": ("elpd_waic", -2.0), "loo": ("elpd_loo", -2.0)}


def _k_table(adata, key: str):
    import pandas as pd

    info = adata.uns.get(key)
    if not isinstance(info, Mapping) or "k_table" not in info:
        raise ValueError(f"no uns['{key}']['k_table']; run TransSTResult.to_anndata first")
    t = info["k_table"]
    if isinstance(t, (str, bytes)):
        t = json.loads(t)
    return pd.DataFrame(t)


def k_selection(adata, *, key: str = keys.DEFAULT, criteria: Sequence[str] | None = None, ax=None):
    """Model-selection criteria against K, one line per criterion, each min-max scaled to [0, 1]
    so they share one axis (0 = best for every criterion; a criterion constant over K is drawn at
    0). waic and loo are plotted on the deviance scale (-2 elpd, lower is better). The chosen K
    (the k_table row with chosen=True, else uns[key]["n_domains"]) is marked with a dashed
    vertical line. Default criteria: sbic, bic, mbic, hbic, icl, and waic / loo when the table has
    finite values for them. Any other numeric k_table column may be named (lower is better).
    Returns the Axes."""
    _check_key(adata, key)
    t = _k_table(adata, key)
    if "K" not in t or len(t) == 0:
        raise ValueError(f"uns['{key}']['k_table'] has no K column")
    t = t.sort_values("K")
    spec = dict(_CRITERIA)

    def values(c):
        col, f = spec.get(c, (c, 1.0))
        return None if col not in t else f * t[col].to_numpy(dtype=float)

    if criteria is None:
        criteria = [c for c in _CRITERIA if (v := values(c)) is not None and np.isfinite(v).any()]
    else:
        criteria = [criteria] if isinstance(criteria, str) else list(criteria)
        bad = [c for c in criteria if values(c) is None]
        if bad:
            raise ValueError(f"criteria {bad} are not in the K table (columns: {list(t.columns)})")
    if not criteria:
        raise ValueError("the K table has no finite criterion to plot")
    Ks = t["K"].to_numpy(dtype=float)
    (ax,) = _axes(ax, 1)
    for c in criteria:
        v = values(c)
        lo, hi = np.nanmin(v), np.nanmax(v)
        s = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
        ax.plot(Ks, s, marker="o", label=c + (" (-2 elpd)" if c in ("waic", "loo") else ""))
    if "chosen" in t and t["chosen"].astype(bool).any():
        chosen = float(t.loc[t["chosen"].astype(bool), "K"].iloc[0])
    else:
        chosen = float(adata.uns[key].get("n_domains", np.nan))
    if np.isfinite(chosen):
        ax.axvline(chosen, color="black", linestyle="--", linewidth=1.0, label=f"chosen K={chosen:g}")
    ax.set_xticks(Ks, [f"{k:g}" for k in Ks])
    ax.set_xlabel("K (number of domains)")
    ax.set_ylabel("criterion (min-max scaled, lower is better)")
    ax.legend(frameon=False, fontsize="small")
    return ax


def transfer_breaking(adata, *, key: str = keys.DEFAULT, n_top: int = 20, ax=None):
    """Horizontal bars of the `n_top` genes with the largest transfer-breaking score in
    `uns[f"{key}_transfer_breaking"]` (the largest on top), labelled with the gene names.
    Returns the Axes."""
    n_top = V.integer("n_top", n_top, minimum=1)
    _check_key(adata, key)
    df = _table(adata, keys.transfer_breaking(key), "transst_bayes.tl.transfer_breaking_genes(adata)")
    top = df.sort_values("score", ascending=False).head(n_top)
    (ax,) = _axes(ax, 1, size=(5.0, 0.25 * len(top) + 1.5))
    y = np.arange(len(top))
    ax.barh(y, top["score"].to_numpy(dtype=float), color="#4c72b0")
    ax.set_yticks(y, top["gene"].astype(str).tolist())
    ax.invert_yaxis()
    what = "horseshoe phi" if "phi" in df else "||W_t - W_s||"
    ax.set_xlabel(f"transfer-breaking score ({what})")
    ax.set_title(f"top {len(top)} transfer-breaking genes")
    return ax


def calibration(adata, reference: str, *, key: str = keys.DEFAULT, bins: int = 10, ax=None):
    """Reliability diagram of the per-spot domain probabilities against an annotation in
    `obs[reference]`: per confidence bin (the most probable domain's probability, `bins`
    equal-width bins) the share of spots whose domain's label is the annotation, beside the
    diagonal of perfect calibration, with bars for the share of spots per bin. Domains named
    after a label of the annotation (anchored domains) are read as that label; the others by
    Hungarian matching (`metrics.domain_labels`). Spots with a missing annotation are left out.
    The title gives ECE, Brier score, mean maximum probability and accuracy
    (`metrics.calibration_summary`). Returns the Axes."""
    from .metrics import calibration_summary

    _check_key(adata, key)
    _check_reference(adata, reference)
    pk = keys.proba(key)
    if pk not in adata.obsm:
        raise ValueError(f"no obsm['{pk}']; run TransSTResult.to_anndata first")
    bins = V.integer("bins", bins, minimum=2)
    ref = adata.obs[reference]
    keep = ref.notna().to_numpy()
    if not keep.any():
        raise ValueError(f"obs[{reference!r}] has no annotated spot")
    names = [str(c) for c in _categorical(adata, key).categories]
    s = calibration_summary(names, np.asarray(adata.obsm[pk])[keep], ref[keep].astype(str).to_numpy(),
                            bins)
    b = s["bins"]
    w = 1.0 / bins
    (ax,) = _axes(ax, 1, size=(4.5, 4.5))
    share = b["n"] / max(b["n"].sum(), 1)
    ax.bar(b["lower"], share, width=w, align="edge", color="#d3d3d3", edgecolor="white",
           label="share of spots")
    ok = b["n"] > 0
    ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1.0, label="calibrated")
    ax.plot(b["confidence"][ok], b["accuracy"][ok], marker="o", color="#4c72b0", label="observed")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("maximum domain probability")
    ax.set_ylabel(f"accuracy against {reference}")
    ax.set_title(f"ECE {s['ece']:.3f}, Brier {s['brier']:.3f}\nmean max p {s['mean_confidence']:.3f}, "
                 f"accuracy {s['accuracy']:.3f}", fontsize="medium")
    ax.legend(frameon=False, fontsize="small", loc="upper left")
    return ax

"""Plots of a TransST fit written into AnnData (scanpy style, matplotlib only).

Every plotting function reads what `TransSTResult.to_anndata(adata, key_added=key)` (or
`transst_bayes.tl`) wrote under `key`, draws on a given `ax=` or on a new figure and returns the
Axes it drew on (a list of Axes for plots of several panels; the Figure is `ax.figure`). As in
scanpy, `save=` writes the figure to a file and `show=True` calls `plt.show()`; by default
nothing is shown, so that the returned Axes can still be changed. Domain colours always come
from `adata.uns[f"{key}_colors"]`.

Categorical legends carry a title (``"domain"``, or the obs column's name) and list the
categories in their own order when that order was chosen (an ordered Categorical, or
categories not in plain sorted order, such as the fit's domain order); categories in plain
sorted order (pandas' default for strings) and non-categorical columns are listed in natural
order, numbers inside names compared as numbers (``"2"`` before ``"10"``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from . import keys
from . import validate as V
from .files import replacing
from .result import PALETTE

__all__ = ["domains", "match_colors", "uncertainty", "marker_heatmap", "ridge", "embedding", "k_selection",
           "transfer_breaking", "calibration"]

_MISSING = "#d3d3d3"  # spots without a category (NaN)
_DPI = 150  # resolution of a figure written by save=


# ------------------------------------------------------------------ shared helpers
def _plt():
    import matplotlib.pyplot as plt

    return plt


def _check_output(save, show) -> Path | None:
    """The checked `save` path (None for no file), before anything is drawn: a str or
    os.PathLike naming a file in an existing folder, with an extension matplotlib can write (or
    none: then matplotlib's default format and its extension); `show` True, False or None."""
    if show is not None and not isinstance(show, (bool, np.bool_)):
        raise TypeError(f"show must be True, False or None, got {show!r} ({type(show).__name__})")
    if save is None:
        return None
    if not isinstance(save, (str, os.PathLike)):
        raise TypeError(f"save must be a str or os.PathLike file path or None, got {save!r} "
                        f"({type(save).__name__})")
    name = os.fsdecode(os.fspath(save))
    path = Path(name)
    if not name or path.name in ("", ".", ".."):
        raise ValueError(f"save must name a file, got {name!r}")
    if path.is_dir():
        raise ValueError(f"save={name!r} is a folder; name a file in it, e.g. {str(path / 'plot.png')!r}")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"save={name!r}: the folder {str(folder)!r} does not exist; create it first")
    from matplotlib.backend_bases import FigureCanvasBase

    ext = path.suffix[1:].lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in formats:
        raise ValueError(f"save={name!r}: matplotlib cannot write .{ext} files; use one of "
                         f"{sorted(formats)}")
    return path


def _finish(fig, path: Path | None, show: bool | None) -> None:
    """Write the figure to `path` (when given) and call plt.show() when `show` is True."""
    if path is not None:
        import matplotlib as mpl

        fmt = path.suffix[1:].lower() or mpl.rcParams["savefig.format"]
        if not path.suffix:  # as matplotlib names it: the format's extension appended
            path = path.with_name(f"{path.name}.{fmt}")
        with replacing(path) as tmp:  # a failed write leaves an earlier figure whole
            fig.savefig(tmp, dpi=_DPI, bbox_inches="tight", format=fmt)
    if show:
        _plt().show()


def _check_key(adata, key: str) -> None:
    V.anndata("adata", adata)
    V.key("key", key)
    if key not in adata.obs:
        raise ValueError(f"no domains under obs['{key}']; run transst_bayes.tl.transst(adata, ...) "
                         "or TransSTResult.to_anndata first")


def _natural_key(name: str):
    """Sort key of natural order: digit runs compared as numbers ("2" before "10")."""
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], name


def _categorical(adata, column: str):
    """obs[column] as a pandas Categorical (non-categorical columns: unique values in natural
    order)."""
    import pandas as pd

    if column not in adata.obs:
        raise ValueError(f"obs has no column {column!r}")
    v = adata.obs[column]
    if isinstance(v.dtype, pd.CategoricalDtype):
        return v.values
    values = pd.unique(v.dropna())
    order = sorted(values, key=lambda x: _natural_key(str(x)))
    return pd.Categorical(v, categories=order)


def _legend_order(cat) -> list[int]:
    """Category positions in legend order: the categories' own order when it was chosen (an
    ordered Categorical, or categories not in plain sorted order), else natural order."""
    names = [str(c) for c in cat.categories]
    if cat.ordered or names != sorted(names):
        return list(range(len(names)))
    return sorted(range(len(names)), key=lambda i: _natural_key(names[i]))


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

    handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor=colors[i], markeredgewidth=0,
                      color=colors[i], label=str(cat.categories[i])) for i in _legend_order(cat)]
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
    """Colour the domains after a reference annotation in every later plot.

    Computes the colours that ``domains(adata, reference=reference)`` gives the domains (a
    domain named like a reference category takes its colour, the others the colour of the
    category they overlap most, by Hungarian matching; the rest keep colours the reference does
    not use) and writes them to ``uns[f"{key}_colors"]``, which `domains`, `embedding`, `ridge`
    and `marker_heatmap` read.

    Parameters
    ----------
    adata : anndata.AnnData
        The fitted AnnData. Reads the domains from ``obs[key]``, the annotation from
        ``obs[reference]`` and its colours from ``uns[f"{reference}_colors"]`` (the tab20
        palette when that does not hold one colour per category); writes
        ``uns[f"{key}_colors"]``.
    reference : str
        obs column of the annotation whose colours the domains take.
    key : str, default "transst"
        Name of the fit (`key_added` of `tl.transst` / `to_anndata`).

    Returns
    -------
    list of str
        One colour per domain, in the order of the categories of ``obs[key]`` (the list
        written to ``uns[f"{key}_colors"]``).

    Examples
    --------
    >>> import transst_bayes as tb
    >>> tb.pl.match_colors(adata, "truth")
    >>> tb.pl.domains(adata)  # now in the colours of obs["truth"]
    """
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
            title: str | None = None, show: bool | None = None,
            save: str | os.PathLike | None = None):
    """Spatial map of the domains.

    Each spot is drawn at its coordinates in the colour of its domain, with a legend titled
    "domain". The axes have equal aspect and the y axis is not inverted: data in image
    coordinates appear upside down (call ``ax.invert_yaxis()`` for them). With `reference`, an
    annotation is drawn in a second panel on the left, with a legend titled by its column name,
    and the domains take the colours of the categories they match (by name, else by Hungarian
    matching on their overlap). Legends list the categories in their own order when it was
    chosen (an ordered Categorical, or categories not in sorted order, such as the fit's domain
    order), else in natural order ("2" before "10").

    Parameters
    ----------
    adata : anndata.AnnData
        The fitted AnnData. Reads the domains from ``obs[key]``, their colours from
        ``uns[f"{key}_colors"]`` (the tab20 palette when it does not hold one colour per
        domain), the coordinates from ``obsm[spatial_key]`` and, with `reference`,
        ``obs[reference]`` and ``uns[f"{reference}_colors"]``.
    key : str, default "transst"
        Name of the fit (`key_added` of `tl.transst` / `to_anndata`).
    spatial_key : str, default "spatial"
        obsm key of the spot coordinates (its first two columns are drawn).
    reference : str or None, default None
        obs column of an annotation (e.g. a manual one) to draw beside the domains; its colours
        come from ``uns[f"{reference}_colors"]`` when that has one colour per category, else
        from tab20.
    size : float or None, default None
        Marker area in points squared; None sets it from the number of spots n
        (20000 / n, clipped to [1, 60]).
    ax : matplotlib.axes.Axes, pair of Axes or None, default None
        Axes to draw on: one, or two (reference first) with `reference`; None draws on a new
        figure.
    title : str or None, default None
        Title of the domain panel; None gives "domains". The reference panel's title is the
        reference column's name.
    show : bool or None, default None
        True calls ``matplotlib.pyplot.show()`` after drawing; False or None does not.
    save : str, os.PathLike or None, default None
        File to write the figure to, its format from the extension (e.g. ``"domains.png"``),
        at 150 dpi. Its folder must exist; a wrong type (TypeError) or a missing folder
        (ValueError) is reported before anything is drawn. None writes no file.

    Returns
    -------
    matplotlib.axes.Axes or list of matplotlib.axes.Axes
        The domain Axes, or ``[reference Axes, domain Axes]`` with `reference`; returned also
        when `show` is True. The figure is ``ax.figure``.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> tb.pl.domains(adata, key="transst")
    >>> tb.pl.domains(adata, reference="truth", save="domains.png")
    """
    _check_key(adata, key)
    xy = _coords(adata, spatial_key)
    if reference is not None:
        _check_reference(adata, reference)
    path = _check_output(save, show)
    size = _default_size(adata.n_obs) if size is None else size
    axs = _axes(ax, 2 if reference is not None else 1)
    if reference is not None:
        ref = _categorical(adata, reference)
        _scatter_categories(axs[0], xy, ref, _colors(adata, reference, len(ref.categories)), size,
                            reference, legend_title=reference)
        _spatial_style(axs[0], spatial_key)
    cat = _categorical(adata, key)
    colors = _domain_colors(adata, key) if reference is None else _reference_matched(adata, reference, key)
    _scatter_categories(axs[-1], xy, cat, colors, size, "domains" if title is None else title,
                        legend_title="domain")
    _spatial_style(axs[-1], spatial_key)
    _finish(axs[0].figure, path, show)
    return axs if reference is not None else axs[0]


# which -> (obs key of the fit, title and colourbar label, default cmap: dark = uncertain)
_UNCERTAINTY = {"maxprob": (keys.maxprob, "maximum domain probability", "viridis"),
                "entropy": (keys.entropy, "domain entropy", "magma_r")}


def uncertainty(adata, *, key: str = keys.DEFAULT, which: str = "maxprob",
                spatial_key: str = "spatial", cmap: str | None = None, size: float | None = None,
                ax=None, title: str | None = None, show: bool | None = None,
                save: str | os.PathLike | None = None):
    """Spatial map of the uncertainty of the domains.

    Each spot is coloured by the largest of its posterior domain probabilities
    (``which="maxprob"``) or by the entropy of its domain probabilities (``which="entropy"``),
    with a colourbar whose limits are the data range. The default colour maps make uncertain
    spots dark in both.

    Parameters
    ----------
    adata : anndata.AnnData
        The fitted AnnData. Reads ``obs[f"{key}_maxprob"]`` or ``obs[f"{key}_entropy"]``, the
        coordinates from ``obsm[spatial_key]`` and checks that ``obs[key]`` exists.
    key : str, default "transst"
        Name of the fit (`key_added` of `tl.transst` / `to_anndata`).
    which : {"maxprob", "entropy"}, default "maxprob"
        The quantity drawn: the maximum domain probability or the domain entropy.
    spatial_key : str, default "spatial"
        obsm key of the spot coordinates (its first two columns are drawn).
    cmap : str or None, default None
        Matplotlib colour map; None gives "viridis" for maxprob and "magma_r" for entropy.
    size : float or None, default None
        Marker area in points squared; None sets it from the number of spots n
        (20000 / n, clipped to [1, 60]).
    ax : matplotlib.axes.Axes or None, default None
        Axes to draw on; None draws on a new figure. The colourbar is added to its figure.
    title : str or None, default None
        Title; None gives "maximum domain probability" or "domain entropy" (the colourbar's
        label is the same words).
    show : bool or None, default None
        True calls ``matplotlib.pyplot.show()`` after drawing; False or None does not.
    save : str, os.PathLike or None, default None
        File to write the figure to, its format from the extension (e.g. ``"entropy.png"``),
        at 150 dpi. Its folder must exist; a wrong type (TypeError) or a missing folder
        (ValueError) is reported before anything is drawn. None writes no file.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes of the map (the scatter in ``ax.collections[0]``); returned also when `show`
        is True.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> tb.pl.uncertainty(adata, key="transst", which="entropy")
    """
    if which not in _UNCERTAINTY:
        raise ValueError(f"which must be 'maxprob' or 'entropy', got {which!r}")
    _check_key(adata, key)
    column, label, default_cmap = _UNCERTAINTY[which]
    col = column(key)
    if col not in adata.obs:
        raise ValueError(f"no obs['{col}']; run TransSTResult.to_anndata first")
    v = np.asarray(adata.obs[col], dtype=float)
    xy = _coords(adata, spatial_key)
    path = _check_output(save, show)
    (ax,) = _axes(ax, 1)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=v, cmap=cmap or default_cmap, linewidths=0,
                    s=_default_size(adata.n_obs) if size is None else size,
                    vmin=np.nanmin(v), vmax=np.nanmax(v))
    ax.figure.colorbar(sc, ax=ax, label=label)
    ax.set_title(label if title is None else title)
    _spatial_style(ax, spatial_key)
    _finish(ax.figure, path, show)
    return ax


def marker_heatmap(adata, *, key: str = keys.DEFAULT, n_top: int = 5, markers_key: str | None = None,
                   ax=None, cmap: str = "RdBu_r", title: str | None = None, show: bool | None = None,
                   save: str | os.PathLike | None = None):
    """Heatmap of the expected expression of each domain's top marker genes.

    Rows are genes in one block per domain, each block that domain's own top `n_top` genes by
    posterior mean contrast (a gene among the top of several domains appears in each of their
    blocks); columns are domains, in the order of their categories. Each row is z-scored across
    domains. A colour strip left of the heatmap and the colour of the gene labels give each
    block's domain.

    Parameters
    ----------
    adata : anndata.AnnData
        The fitted AnnData. Reads the marker table from ``uns[markers_key]`` or
        ``uns[f"{key}_markers"]`` (written by `tl.markers`; columns ``domain``, ``gene``,
        ``contrast``, ``expression``), the domains from ``obs[key]`` and their colours from
        ``uns[f"{key}_colors"]``.
    key : str, default "transst"
        Name of the fit (`key_added` of `tl.transst` / `to_anndata`).
    n_top : int, default 5
        Number of genes per domain (at least 1).
    markers_key : str or None, default None
        uns key of the marker table; None reads ``uns[f"{key}_markers"]``.
    ax : matplotlib.axes.Axes or None, default None
        Axes to draw on; None draws on a new figure sized to the table. The colourbar is added
        to its figure.
    cmap : str, default "RdBu_r"
        Matplotlib colour map of the z-scores (symmetric limits).
    title : str or None, default None
        Title; None gives "top {n_top} marker genes per domain".
    show : bool or None, default None
        True calls ``matplotlib.pyplot.show()`` after drawing; False or None does not.
    save : str, os.PathLike or None, default None
        File to write the figure to, its format from the extension (e.g. ``"markers.png"``),
        at 150 dpi. Its folder must exist; a wrong type (TypeError) or a missing folder
        (ValueError) is reported before anything is drawn. None writes no file.

    Returns
    -------
    matplotlib.axes.Axes
        The heatmap Axes (the image in ``ax.images[0]``, its colourbar in the same figure);
        returned also when `show` is True.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> tb.tl.markers(adata)
    >>> tb.pl.marker_heatmap(adata, key="transst", n_top=5)
    """
    n_top = V.integer("n_top", n_top, minimum=1)
    _check_key(adata, key)
    df = _table(adata, markers_key or keys.markers(key), "transst_bayes.tl.markers(adata)")
    path = _check_output(save, show)
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
    ax.set_title(f"top {n_top} marker genes per domain" if title is None else title)
    ax.figure.colorbar(im, ax=ax, label="expected expression (z-score)")
    _finish(ax.figure, path, show)
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


def ridge(adata, gene: str, *, key: str = keys.DEFAULT, layer: str | None = None, ax=None,
          title: str | None = None, show: bool | None = None, save: str | os.PathLike | None = None):
    """Ridge plot of one gene's expression per domain.

    One row per domain (the first category on top), each a Gaussian kernel density of the
    gene's expression over the domain's spots (a histogram for a domain with fewer than 2
    distinct values), filled in the domain's colour and scaled to the row's height. Raw counts
    (non-negative integers) are log-normalised per spot, ``log1p(1e4 * x / total counts of the
    spot)``; other values are drawn as they are.

    Parameters
    ----------
    adata : anndata.AnnData
        The fitted AnnData. Reads the gene's column of ``adata.X`` or ``layers[layer]`` (dense
        or sparse), ``var_names``, the domains from ``obs[key]`` and their colours from
        ``uns[f"{key}_colors"]``.
    gene : str
        A name in ``adata.var_names``.
    key : str, default "transst"
        Name of the fit (`key_added` of `tl.transst` / `to_anndata`).
    layer : str or None, default None
        ``adata.layers`` key to read instead of ``adata.X``.
    ax : matplotlib.axes.Axes or None, default None
        Axes to draw on; None draws on a new figure.
    title : str or None, default None
        Title; None gives "{gene} expression per domain".
    show : bool or None, default None
        True calls ``matplotlib.pyplot.show()`` after drawing; False or None does not.
    save : str, os.PathLike or None, default None
        File to write the figure to, its format from the extension (e.g. ``"ridge.png"``),
        at 150 dpi. Its folder must exist; a wrong type (TypeError) or a missing folder
        (ValueError) is reported before anything is drawn. None writes no file.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes of the ridges (domain names as y tick labels); returned also when `show` is
        True.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> tb.pl.ridge(adata, "gene0001", key="transst")
    """
    from scipy.stats import gaussian_kde

    _check_key(adata, key)
    x = _expression(adata, gene, layer)
    path = _check_output(save, show)
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
    ax.set_title(f"{gene} expression per domain" if title is None else title)
    _finish(ax.figure, path, show)
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
              basis: str = "auto", size: float | None = None, ax=None, title: str | None = None,
              show: bool | None = None, save: str | os.PathLike | None = None):
    """2-D embedding of the latent factors coloured by domain.

    The spots' latent factor scores are embedded in two dimensions (UMAP or the first two
    principal components) and drawn in the colours of their domains, with a legend titled
    "domain". With `library_key`, a second panel on the right colours the same points by that
    obs column (e.g. the section or library of each spot), with a legend titled by the column's
    name. Legends list the categories in their own order when it was chosen (an ordered
    Categorical, or categories not in sorted order), else in natural order ("2" before "10").

    Parameters
    ----------
    adata : anndata.AnnData
        The fitted AnnData. Reads the factors from ``obsm[f"X_{key}"]``, the domains from
        ``obs[key]``, their colours from ``uns[f"{key}_colors"]`` and, with `library_key`,
        ``obs[library_key]`` and ``uns[f"{library_key}_colors"]``.
    key : str, default "transst"
        Name of the fit (`key_added` of `tl.transst` / `to_anndata`).
    library_key : str or None, default None
        obs column drawn in a second panel.
    basis : {"auto", "umap", "pca"}, default "auto"
        "umap" needs umap-learn (ValueError without it); "pca" uses numpy's SVD; "auto" uses
        UMAP when umap-learn is installed, else PCA. The axis labels say which ("UMAP1" or
        "PC1").
    size : float or None, default None
        Marker area in points squared; None sets it from the number of spots n
        (20000 / n, clipped to [1, 60]).
    ax : matplotlib.axes.Axes, pair of Axes or None, default None
        Axes to draw on: one, or two (domains first) with `library_key`; None draws on a new
        figure.
    title : str or None, default None
        Title of the domain panel; None gives "domains". The second panel's title is the
        `library_key` column's name.
    show : bool or None, default None
        True calls ``matplotlib.pyplot.show()`` after drawing; False or None does not.
    save : str, os.PathLike or None, default None
        File to write the figure to, its format from the extension (e.g. ``"umap.png"``),
        at 150 dpi. Its folder must exist; a wrong type (TypeError) or a missing folder
        (ValueError) is reported before anything is drawn. None writes no file.

    Returns
    -------
    matplotlib.axes.Axes or list of matplotlib.axes.Axes
        The domain Axes, or ``[domain Axes, library Axes]`` with `library_key`; returned also
        when `show` is True.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> tb.pl.embedding(adata, key="transst", basis="pca")
    """
    _check_key(adata, key)
    name = keys.factors(key)
    if name not in adata.obsm:
        raise ValueError(f"no latent factors under obsm['{name}']; run TransSTResult.to_anndata first")
    if basis not in ("auto", "umap", "pca"):
        raise ValueError(f"basis must be 'auto', 'umap' or 'pca', got {basis!r}")
    lib = _categorical(adata, library_key) if library_key is not None else None
    path = _check_output(save, show)
    X = np.asarray(adata.obsm[name], dtype=float)
    Y, lab = _embed(X, basis)
    axs = _axes(ax, 2 if library_key is not None else 1)
    size = _default_size(adata.n_obs) if size is None else size
    _scatter_categories(axs[0], Y, _categorical(adata, key), _domain_colors(adata, key), size,
                        "domains" if title is None else title, legend_title="domain")
    if lib is not None:
        _scatter_categories(axs[1], Y, lib, _colors(adata, library_key, len(lib.categories)), size,
                            library_key, legend_title=library_key)
    for a in axs:
        a.set_xlabel(f"{lab}1")
        a.set_ylabel(f"{lab}2")
        a.set_xticks([])
        a.set_yticks([])
    _finish(axs[0].figure, path, show)
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


def _grid_axes(ax, n: int, size: tuple[float, float] = (3.2, 2.6), max_cols: int = 3) -> list:
    """`n` Axes: the given ones, or a new figure of small panels (at most `max_cols` a row)
    sharing their x axis, each with its own x tick labels."""
    if ax is not None:
        return _axes(ax, n)
    ncols = min(n, max_cols)
    nrows = math.ceil(n / ncols)
    fig, axs = _plt().subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False,
                               sharex=True, layout="constrained")
    flat = list(axs.ravel())
    for a in flat[n:]:
        fig.delaxes(a)
    for a in flat[:n]:
        a.tick_params(labelbottom=True)
    return flat[:n]


def k_selection(adata, *, key: str = keys.DEFAULT, criteria: Sequence[str] | None = None, ax=None,
                show: bool | None = None, save: str | os.PathLike | None = None) -> list:
    """Model-selection criteria against the number of domains K, one panel per criterion.

    Each panel draws one criterion's actual values over the K tried (lower is better for every
    criterion), marks its minimum with a red star, and marks the chosen K (the K table's row
    with ``chosen=True``, else ``uns[key]["n_domains"]``) with a dashed vertical line. waic and
    loo are drawn on the deviance scale, -2 elpd (the y label says so). A new figure has at
    most three panels a row, all sharing the K axis.

    Parameters
    ----------
    adata : anndata.AnnData
        The fitted AnnData. Reads the K table from ``uns[key]["k_table"]`` (a JSON string or a
        table with a ``K`` column, one column per criterion and a ``chosen`` column),
        ``uns[key]["n_domains"]`` when no row is chosen, and checks that ``obs[key]`` exists.
    key : str, default "transst"
        Name of the fit (`key_added` of `tl.transst` / `to_anndata`).
    criteria : str, sequence of str or None, default None
        Criteria to draw, one panel each, in this order: any of "sbic", "bic", "mbic", "hbic",
        "icl", "waic", "loo", or the name of another numeric K table column (drawn as it is,
        read as lower is better). ValueError for a name the table does not have. None draws
        sbic, bic, mbic, hbic and icl, and waic / loo when the table has finite values for
        them.
    ax : matplotlib.axes.Axes, sequence of Axes or None, default None
        As many Axes as criteria are drawn (ValueError otherwise; a single Axes for a single
        criterion); None draws on a new figure.
    show : bool or None, default None
        True calls ``matplotlib.pyplot.show()`` after drawing; False or None does not.
    save : str, os.PathLike or None, default None
        File to write the figure to, its format from the extension (e.g. ``"k.png"``), at 150
        dpi. Its folder must exist; a wrong type (TypeError) or a missing folder (ValueError)
        is reported before anything is drawn. None writes no file.

    Returns
    -------
    list of matplotlib.axes.Axes
        One Axes per criterion, in the order of `criteria` (also for a single criterion);
        returned also when `show` is True. In each, ``ax.lines[0]`` is the criterion's line
        (x = K, y = its values).

    Examples
    --------
    >>> import transst_bayes as tb
    >>> tb.pl.k_selection(adata, key="transst")
    >>> tb.pl.k_selection(adata, criteria=["bic", "hbic"])
    """
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
    path = _check_output(save, show)
    Ks = t["K"].to_numpy(dtype=float)
    if "chosen" in t and t["chosen"].astype(bool).any():
        chosen = float(t.loc[t["chosen"].astype(bool), "K"].iloc[0])
    else:
        chosen = float(adata.uns[key].get("n_domains", np.nan))
    axs = _grid_axes(ax, len(criteria))
    for a, c in zip(axs, criteria):
        v = values(c)
        deviance = spec.get(c, (c, 1.0))[1] == -2.0
        a.plot(Ks, v, marker="o", color="#4c72b0", label=c)
        if np.isfinite(v).any():
            i = int(np.nanargmin(v))
            a.plot([Ks[i]], [v[i]], marker="*", markersize=12, linestyle="", color="#c44e52",
                   label=f"minimum (K = {Ks[i]:g})")
        if np.isfinite(chosen):
            a.axvline(chosen, color="black", linestyle="--", linewidth=1.0, label=f"chosen K = {chosen:g}")
        a.set_xticks(Ks, [f"{k:g}" for k in Ks])
        a.set_xlabel("K (number of domains)")
        a.set_ylabel(f"{c} (-2 elpd)" if deviance else c)
        a.set_title(f"{c}, lower is better")
        a.legend(frameon=False, fontsize="x-small")
    _finish(axs[0].figure, path, show)
    return axs


def transfer_breaking(adata, *, key: str = keys.DEFAULT, n_top: int = 20, ax=None,
                      title: str | None = None, show: bool | None = None,
                      save: str | os.PathLike | None = None):
    """Bar chart of the genes whose loadings break most from the source.

    Horizontal bars of the `n_top` genes with the largest transfer-breaking score (the largest
    on top), labelled with the gene names. The score is the horseshoe scale phi of the gene's
    loading shift when the table has a ``phi`` column, else the norm of the difference between
    its target and source loadings, ``||W_t - W_s||`` (the x label says which).

    Parameters
    ----------
    adata : anndata.AnnData
        The fitted AnnData. Reads the table ``uns[f"{key}_transfer_breaking"]`` (written by
        `tl.transfer_breaking_genes`; columns ``gene`` and ``score``) and checks that
        ``obs[key]`` exists.
    key : str, default "transst"
        Name of the fit (`key_added` of `tl.transst` / `to_anndata`).
    n_top : int, default 20
        Number of genes drawn (at least 1).
    ax : matplotlib.axes.Axes or None, default None
        Axes to draw on; None draws on a new figure sized to the genes.
    title : str or None, default None
        Title; None gives "top {n} transfer-breaking genes".
    show : bool or None, default None
        True calls ``matplotlib.pyplot.show()`` after drawing; False or None does not.
    save : str, os.PathLike or None, default None
        File to write the figure to, its format from the extension (e.g. ``"genes.png"``),
        at 150 dpi. Its folder must exist; a wrong type (TypeError) or a missing folder
        (ValueError) is reported before anything is drawn. None writes no file.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes of the bars (in ``ax.patches``, the y axis inverted); returned also when
        `show` is True.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> tb.tl.transfer_breaking_genes(adata)
    >>> tb.pl.transfer_breaking(adata, key="transst", n_top=20)
    """
    n_top = V.integer("n_top", n_top, minimum=1)
    _check_key(adata, key)
    df = _table(adata, keys.transfer_breaking(key), "transst_bayes.tl.transfer_breaking_genes(adata)")
    path = _check_output(save, show)
    top = df.sort_values("score", ascending=False).head(n_top)
    (ax,) = _axes(ax, 1, size=(5.0, 0.25 * len(top) + 1.5))
    y = np.arange(len(top))
    ax.barh(y, top["score"].to_numpy(dtype=float), color="#4c72b0")
    ax.set_yticks(y, top["gene"].astype(str).tolist())
    ax.invert_yaxis()
    what = "horseshoe phi" if "phi" in df else "||W_t - W_s||"
    ax.set_xlabel(f"transfer-breaking score ({what})")
    ax.set_title(f"top {len(top)} transfer-breaking genes" if title is None else title)
    _finish(ax.figure, path, show)
    return ax


def calibration(adata, reference: str, *, key: str = keys.DEFAULT, bins: int = 10, ax=None,
                title: str | None = None, show: bool | None = None,
                save: str | os.PathLike | None = None):
    """Reliability diagram of the domain probabilities against an annotation.

    Per confidence bin (the most probable domain's probability, `bins` equal-width bins) the
    share of spots whose domain's label is the annotation, beside the diagonal of perfect
    calibration, with grey bars for the share of spots per bin. Domains named after a label of
    the annotation (anchored domains) are read as that label, the others by Hungarian matching
    (`metrics.domain_labels`). Spots with a missing annotation are left out. Below the title,
    the summary of `metrics.calibration_summary`: expected calibration error (ECE), Brier
    score, mean maximum probability and accuracy.

    Parameters
    ----------
    adata : anndata.AnnData
        The fitted AnnData. Reads the annotation from ``obs[reference]``, the domain
        probabilities from ``obsm[f"{key}_proba"]`` and the domain names from the categories
        of ``obs[key]``.
    reference : str
        obs column of the annotation (e.g. a manual one) the domains are scored against.
    key : str, default "transst"
        Name of the fit (`key_added` of `tl.transst` / `to_anndata`).
    bins : int, default 10
        Number of equal-width confidence bins in [0, 1] (at least 2).
    ax : matplotlib.axes.Axes or None, default None
        Axes to draw on; None draws on a new figure.
    title : str or None, default None
        First line of the title; None gives "calibration against {reference}". The summary
        lines follow it in either case.
    show : bool or None, default None
        True calls ``matplotlib.pyplot.show()`` after drawing; False or None does not.
    save : str, os.PathLike or None, default None
        File to write the figure to, its format from the extension (e.g.
        ``"calibration.png"``), at 150 dpi. Its folder must exist; a wrong type (TypeError) or
        a missing folder (ValueError) is reported before anything is drawn. None writes no
        file.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes of the diagram (the observed accuracy is its last line); returned also when
        `show` is True.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> tb.pl.calibration(adata, "truth", key="transst")
    """
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
    path = _check_output(save, show)
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
    head = f"calibration against {reference}" if title is None else title
    ax.set_title(f"{head}\nECE {s['ece']:.3f}, Brier {s['brier']:.3f}\n"
                 f"mean maximum probability {s['mean_confidence']:.3f}, accuracy {s['accuracy']:.3f}",
                 fontsize="medium")
    ax.legend(frameon=False, fontsize="small", loc="upper left")
    _finish(ax.figure, path, show)
    return ax


def __dir__():
    """The plotting functions only (not this module's imports and helpers)."""
    return sorted(__all__)

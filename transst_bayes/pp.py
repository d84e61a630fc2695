"""Scanpy-style preprocessing helpers: the same normalisation, gene selection and spatial graph
that the fit uses, written into AnnData so they can be inspected or reused.

Each takes `copy=False` (change in place, return None) or `copy=True` (return a changed copy).
"""

from __future__ import annotations

import numpy as np

from . import data as D
from . import validate as V
from .graph import GRAPH_KINDS, validate_adjacency

PP_RANKINGS = ("variance", "cv")  # rankings that need no labeled source

__all__ = ["log_normalize", "select_genes", "spatial_neighbors"]


def _boundary(adata, layer, key_added, copy, none_ok: bool = True) -> None:
    """The checks every helper shares: an AnnData, str keys, a bool `copy`."""
    V.anndata("adata", adata)
    V.key("layer", layer, none_ok=True)
    V.key("key_added", key_added, none_ok=none_ok)
    V.flag("copy", copy)


def log_normalize(adata, *, target_sum: float = 1e4, layer: str | None = None,
                  key_added: str | None = None, copy: bool = False):
    """Library-size normalisation to `target_sum` per spot, then log1p.

    The normalisation the fits apply to raw counts (sparse input stays sparse).

    Parameters
    ----------
    adata : AnnData
        Raw counts (non-negative integers) in `X` or `layers[layer]`.
    target_sum : float, default 1e4
        Total count every spot is scaled to before log1p (> 0).
    layer : str or None, default None
        Layer holding the counts; None: `X`.
    key_added : str or None, default None
        Layer the result is written to; None: in place of the input (`layers[layer]`, or `X`).
    copy : bool, default False
        Return a changed copy instead of writing into `adata`.

    Returns
    -------
    AnnData or None
        None, or the changed copy with `copy=True`. Written: `layers[key_added]`, or the input
        (`X` or `layers[layer]`) replaced when `key_added` is None.

    Raises
    ------
    ValueError
        The values are not raw counts (already normalised), hold NaN or inf, or `layer` is not
        a layer of `adata`.
    TypeError
        `adata` is not an AnnData, `layer` / `key_added` is not a non-empty str, `target_sum` is
        not a number, or `copy` is not a bool.

    See Also
    --------
    select_genes, spatial_neighbors

    Examples
    --------
    >>> import transst_bayes as tb
    >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200, counts=True)
    >>> tb.pp.log_normalize(target, key_added="lognorm")
    >>> "lognorm" in target.layers
    True
    """
    _boundary(adata, layer, key_added, copy)
    target_sum = V.number("target_sum", target_sum, 0.0, strict=True)
    X = D.expression_matrix(adata, layer, "adata")
    D.check_finite(X, "adata")
    if not D.is_counts(X, "adata", None):
        raise ValueError("log_normalize needs raw counts (non-negative integers); the values look "
                         "already normalised: skip this step or pass the counts layer via layer=...")
    if copy:
        adata = adata.copy()
    Y = D.log_normalise(X, target_sum)
    if key_added is not None:
        adata.layers[key_added] = Y
    elif layer is not None:
        adata.layers[layer] = Y
    else:
        adata.X = Y
    return adata if copy else None


def select_genes(adata, *, n_genes: int = 2000, method: str = "variance", layer: str | None = None,
                 key_added: str = "transst_selected", copy: bool = False):
    """Mark the genes the fit would select in a boolean `var` column.

    The gene selection of the fits' data option `genes`, among the genes that vary and are
    non-zero in at least 1% (and 10) of the spots. Counts are log-normalised on the fly. Pass
    the genes on with `fit_em(..., genes=adata.var_names[adata.var[key_added]])`.

    Parameters
    ----------
    adata : AnnData
        Expression (counts or log-normalised values) in `X` or `layers[layer]`, with unique
        `var_names`.
    n_genes : int, default 2000
        Number of genes marked (>= 1).
    method : str, default "variance"
        "variance" (top `n_genes` by variance of the log-normalised expression) or "cv" (by
        coefficient of variation, as the published code). The fits' other selections ("auto",
        "highly_variable", "source") are made inside the fit only.
    layer : str or None, default None
        Layer holding the expression; None: `X`.
    key_added : str, default "transst_selected"
        Column of `var` written.
    copy : bool, default False
        Return a changed copy instead of writing into `adata`.

    Returns
    -------
    AnnData or None
        None, or the changed copy with `copy=True`. Written: `var[key_added]`, True for the
        selected genes.

    Raises
    ------
    ValueError
        An unknown `method` (or "source", which needs a labeled source, or "auto"),
        duplicated `var_names`, NaN or inf in the expression, or a missing layer.
    TypeError
        `adata` is not an AnnData, a key is not a non-empty str, `n_genes` is not an int, or
        `copy` is not a bool.

    See Also
    --------
    log_normalize, spatial_neighbors

    Examples
    --------
    >>> import transst_bayes as tb
    >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
    >>> tb.pp.select_genes(target, n_genes=50)
    >>> int(target.var["transst_selected"].sum())
    50
    >>> genes = target.var_names[target.var["transst_selected"]]
    >>> res = tb.fit_em(target, source, n_domains=4, n_factors=10, genes=list(genes))
    """
    if method not in PP_RANKINGS:
        raise ValueError(f"method must be 'variance' or 'cv' (the fit's rankings on the section "
                         f"alone), got {method!r}")
    _boundary(adata, layer, key_added, copy, none_ok=False)
    n_genes = V.integer("n_genes", n_genes, minimum=1)
    V.unique_names(adata.var_names, "adata.var_names")
    X = D.expression_matrix(adata, layer, "adata")
    D.check_finite(X, "adata")
    if D.is_counts(X, "adata", None):
        X = D.log_normalise(X, 1e4)
    idx = D.select_genes(X, np.asarray(adata.var_names.astype(str)), method, n_genes)
    if copy:
        adata = adata.copy()
    mask = np.zeros(adata.n_vars, dtype=bool)
    mask[idx] = True
    adata.var[key_added] = mask
    return adata if copy else None


def spatial_neighbors(adata, *, method: str = "knn", n_neighbors: int = 6, radius: float | None = None,
                      spatial_key: str = "spatial", library_key: str | None = None,
                      key_added: str = "spatial", copy: bool = False):
    """Build the spots' neighbour graph as the fit does and store it squidpy-style.

    With the default `key_added` the fits then use this graph as given (their data option
    `graph_key` is "spatial_connectivities").

    Parameters
    ----------
    adata : AnnData
        Spots with coordinates in `obsm[spatial_key]` ("knn", "radius") or lattice positions
        in `obs["array_row"]` and `obs["array_col"]` ("visium", "st").
    method : str, default "knn"
        "knn" (k = `n_neighbors`, symmetrised), "radius" (every spot within `radius`),
        "visium" (hexagonal lattice) or "st" (square lattice).
    n_neighbors : int, default 6
        Neighbours per spot of the "knn" graph.
    radius : float or None, default None
        Radius of the "radius" graph, in the units of the coordinates (required for it).
    spatial_key : str, default "spatial"
        Key of the coordinates in `obsm`.
    library_key : str or None, default None
        Column of `obs` that names several sections: one block per section, no edges between
        them.
    key_added : str, default "spatial"
        Prefix of the `obsp` key written.
    copy : bool, default False
        Return a changed copy instead of writing into `adata`.

    Returns
    -------
    AnnData or None
        None, or the changed copy with `copy=True`. Written: `obsp[f"{key_added}_connectivities"]`,
        the symmetric 0/1 adjacency as a CSR matrix.

    Raises
    ------
    ValueError
        An unknown `method`, missing coordinates or lattice positions, a missing or incomplete
        `library_key` column, or "radius" without a positive `radius`.
    TypeError
        `adata` is not an AnnData, `key_added` is not a non-empty str, or `copy` is not a bool.

    See Also
    --------
    log_normalize, select_genes

    Examples
    --------
    >>> import transst_bayes as tb
    >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
    >>> tb.pp.spatial_neighbors(target, method="st")
    >>> target.obsp["spatial_connectivities"].shape
    (400, 400)
    """
    if method not in GRAPH_KINDS:
        raise ValueError(f"method must be one of {GRAPH_KINDS}, got {method!r}")
    _boundary(adata, None, key_added, copy, none_ok=False)
    s = D.DataSettings(spatial_key=spatial_key, graph=method, n_neighbors=n_neighbors, radius=radius,
                     library_key=library_key)
    adj = validate_adjacency(D.spatial_graph(adata, s, "adata"), adata.n_obs)
    if copy:
        adata = adata.copy()
    adata.obsp[f"{key_added}_connectivities"] = adj
    return adata if copy else None


def __dir__():
    """The preprocessing functions only (not this module's imports)."""
    return sorted(__all__)

"""Scanpy-style preprocessing helpers: the same normalisation, gene selection and spatial graph
that the fit uses, written into AnnData so they can be inspected or reused.

Each takes `copy=False` (change in place, return None) or `copy=True` (return a changed copy).
"""

from __future__ import annotations

import numpy as np

from . import data as D
from . import validate as V
from .graph import GRAPH_KINDS, validate_adjacency


def _boundary(adata, layer, key_added, copy, none_ok: bool = True) -> None:
    """The checks every helper shares: an AnnData, str keys, a bool `copy`."""
    V.anndata("adata", adata)
    V.key("layer", layer, none_ok=True)
    V.key("key_added", key_added, none_ok=none_ok)
    V.flag("copy", copy)


def log_normalize(adata, *, target_sum: float = 1e4, layer: str | None = None,
                  key_added: str | None = None, copy: bool = False):
    """Library-size normalisation to `target_sum` per spot, then log1p (sparse stays sparse).

    Reads `X` or `layer` (raw counts: non-negative integers, else ValueError); writes the result
    to `layers[key_added]`, or in place of the input when key_added is None.
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
    """Mark the genes the fit would select (`genes="variance"`: top `n_genes` by variance of
    log-normalised expression; `"cv"`: by coefficient of variation, as the published code)
    in the boolean column `var[key_added]`. Counts are log-normalised on the fly.

    Pass them on with `fit_em(..., genes=adata.var_names[adata.var[key_added]])`.
    """
    if method not in D.GENE_SELECTIONS:
        raise ValueError(f"method must be one of {D.GENE_SELECTIONS}, got {method!r}")
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
    """Build the spots' neighbour graph as the fit does and store it squidpy-style in
    `obsp[key_added + "_connectivities"]` (symmetric 0/1 CSR matrix). With the default key the
    fit then uses this graph as given.

    method : "knn" (k = n_neighbors, symmetrised), "radius", "visium" (hexagonal lattice from
    `obs["array_row"/"array_col"]`), "st" (square lattice); library_key: one block per section.
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

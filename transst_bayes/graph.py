"""Spatial neighbour graphs: construction (numpy/scipy) and the padded JAX form.

A graph is a symmetric scipy CSR adjacency matrix with an empty diagonal. For JAX it becomes a
`mrf.Graph`: `nbr[n, D]` neighbour indices (padding points at the spot itself), `mask[n, D]`
(1 for a real neighbour) and a greedy colouring `colors[n]` so that no two neighbours share a
colour: sweeping one colour class at a time gives exact sequential (Gauss-Seidel) semantics.
"""

from __future__ import annotations

import warnings
import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from .mrf import Graph
from .validate import user_level

GRAPH_KINDS = ("knn", "visium", "st", "radius")


def _symmetrise(adj: sp.spmatrix) -> sp.csr_matrix:
    adj = sp.csr_matrix(adj, dtype=np.float32)
    adj = ((adj + adj.T) > 0).astype(np.float32)
    adj.setdiag(0)
    adj.eliminate_zeros()
    return sp.csr_matrix(adj)


def knn_graph(coords: np.ndarray, k: int = 6) -> sp.csr_matrix:
    """Symmetrised k-nearest-neighbour graph (i ~ j if either is among the other's k nearest)."""
    coords = np.asarray(coords, dtype=np.float64)
    n = coords.shape[0]
    k_eff = min(k, n - 1)
    if k_eff < 1:
        return sp.csr_matrix((n, n), dtype=np.float32)
    dist, idx = cKDTree(coords).query(coords, k=k_eff + 1, workers=-1)
    if np.any(dist[:, 1] <= 1e-9):  # a spot's nearest other spot is at its place
        _warn_duplicates(coords)
    rows = np.repeat(np.arange(n), k_eff + 1)
    adj = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, idx.ravel())), shape=(n, n))
    return _symmetrise(adj)


def radius_graph(coords: np.ndarray, radius: float) -> sp.csr_matrix:
    """Spots closer than `radius` are neighbours."""
    coords = np.asarray(coords, dtype=np.float64)
    n = coords.shape[0]
    pairs = cKDTree(coords).query_pairs(r=radius, output_type="ndarray")
    adj = sp.csr_matrix(
        (np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])), shape=(n, n)
    )
    return _symmetrise(adj)


def lattice_graph(row: np.ndarray, col: np.ndarray, kind: str = "visium") -> sp.csr_matrix:
    """Visium hexagonal lattice (6 neighbours: (r, c+-2), (r+-1, c+-1)) or ST square lattice (4)."""
    row = np.asarray(row).astype(np.int64)
    col = np.asarray(col).astype(np.int64)
    n = row.size
    if kind == "visium":
        offsets = [(0, 2), (0, -2), (1, 1), (1, -1), (-1, 1), (-1, -1)]
    elif kind == "st":
        offsets = [(0, 1), (0, -1), (1, 0), (-1, 0)]
    else:
        raise ValueError(f"kind must be 'visium' or 'st', got {kind!r}")
    lookup = {(r, c): i for i, (r, c) in enumerate(zip(row.tolist(), col.tolist()))}
    rows, cols = [], []
    for dr, dc in offsets:
        for i, (r, c) in enumerate(zip(row.tolist(), col.tolist())):
            j = lookup.get((r + dr, c + dc))
            if j is not None and j != i:
                rows.append(i)
                cols.append(j)
    adj = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n))
    return _symmetrise(adj)


def build_graph(
    coords: np.ndarray | None = None,
    kind: str = "knn",
    k: int = 6,
    radius: float | None = None,
    array_row: np.ndarray | None = None,
    array_col: np.ndarray | None = None,
    libraries: np.ndarray | None = None,
) -> sp.csr_matrix:
    """Build a spatial graph; with `libraries` (one id per spot) the graph is block-diagonal."""
    if kind not in GRAPH_KINDS:
        raise ValueError(f"graph must be one of {GRAPH_KINDS}, got {kind!r}")
    if kind in ("visium", "st"):
        if array_row is None or array_col is None:
            raise ValueError(
                f"graph={kind!r} needs obs['array_row'] and obs['array_col']; "
                "add them or use graph='knn' with obsm['spatial']"
            )
        n = len(array_row)
    else:
        if coords is None:
            raise ValueError("spatial coordinates are missing: put them in obsm['spatial'] "
                             "(or pass spatial_key=...)")
        coords = np.asarray(coords, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] < 2:
            raise ValueError(f"spatial coordinates must be an (n, 2) array, got shape {coords.shape}")
        if not np.all(np.isfinite(coords)):
            raise ValueError("spatial coordinates contain NaN or inf; remove or fix those spots")
        if kind == "radius" and (radius is None or radius <= 0):
            raise ValueError("graph='radius' needs a positive radius=...")
        n = coords.shape[0]

    def one(idx: np.ndarray) -> sp.csr_matrix:
        if kind == "knn":
            return knn_graph(coords[idx], k=k)
        if kind == "radius":
            return radius_graph(coords[idx], radius)
        return lattice_graph(np.asarray(array_row)[idx], np.asarray(array_col)[idx], kind)

    if libraries is None:
        adj = one(np.arange(n))
    else:
        libraries = np.asarray(libraries)
        perm, blocks = [], []
        for lib in np.unique(libraries):
            idx = np.flatnonzero(libraries == lib)
            perm.append(idx)
            blocks.append(one(idx))
        perm = np.concatenate(perm)
        adj = sp.block_diag(blocks, format="csr")
        inv = np.empty_like(perm)
        inv[perm] = np.arange(n)
        adj = adj[inv][:, inv]
    if kind == "radius":  # (knn_graph warns when its neighbours show duplicates)
        _warn_duplicates(coords)
    return sp.csr_matrix(adj)


def _warn_duplicates(coords: np.ndarray) -> None:
    uniq = np.unique(np.round(coords, 9), axis=0).shape[0]
    if uniq < coords.shape[0]:
        warnings.warn(
            f"{coords.shape[0] - uniq} spots share coordinates with another spot; they are "
            "treated as neighbours of each other",
            UserWarning,
            stacklevel=user_level(),
        )


def validate_adjacency(adj: sp.spmatrix, n: int) -> sp.csr_matrix:
    """Check a user-given adjacency (e.g. obsp['spatial_connectivities']); binarise + symmetrise."""
    if adj.shape != (n, n):
        raise ValueError(
            f"spatial connectivities must be ({n}, {n}) to match the spots, got {adj.shape}"
        )
    w = sp.csr_matrix(adj).data
    if w.size and not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise ValueError(f"spatial connectivities have {int(np.sum(~np.isfinite(w) | (w < 0)))} negative, "
                         "NaN or inf weights; a neighbour graph needs weights >= 0 (rebuild it, e.g. "
                         "squidpy.gr.spatial_neighbors, or delete obsp['spatial_connectivities'])")
    adj = _symmetrise(adj)
    return adj


def greedy_coloring(adj: sp.csr_matrix) -> np.ndarray:
    """Greedy colouring, largest degree first (ties by index): in that order each spot takes
    the smallest colour that none of its earlier neighbours has, so neighbours never share one.

    Computed in rounds (Jones-Plassmann with the greedy order as the priority): a spot is
    coloured once all its earlier neighbours are, which gives exactly the one-at-a-time result;
    each round is vectorised over the spots that became ready (no Python loop over spots; the
    rounds number the longest chain of neighbours in greedy order, ~ height + width on a
    lattice)."""
    adj = sp.csr_matrix(adj)
    n = adj.shape[0]
    indptr, indices = adj.indptr, adj.indices
    deg = np.diff(indptr)
    rank = np.empty(n, np.int64)
    rank[np.argsort(-deg, kind="stable")] = np.arange(n)
    rows = np.repeat(np.arange(n), deg)
    first = rank[indices] < rank[rows]  # edge (row <- neighbour): the neighbour comes first
    waiting = np.bincount(rows[first], minlength=n)  # earlier neighbours not yet coloured
    # for each spot, the later neighbours that wait for it (grouped by spot)
    src, dst = indices[first], rows[first]
    by_src = np.argsort(src, kind="stable")
    dst = dst[by_src]
    start = np.searchsorted(src[by_src], np.arange(n + 1))
    colors = np.full(n, -1, dtype=np.int32)
    width = int(deg.max()) + 2 if n else 1  # a spot's colour is at most its degree
    ready = np.flatnonzero(waiting == 0)
    while ready.size:
        nb = indices[_ranges(indptr[ready], indptr[ready + 1])]
        owner = np.repeat(np.arange(ready.size), deg[ready])
        c = colors[nb]  # earlier neighbours are coloured, later ones not yet (-1)
        used = np.zeros((ready.size, width), dtype=bool)
        used[owner[c >= 0], c[c >= 0]] = True
        colors[ready] = np.argmin(used, axis=1)  # the first unused colour
        later, counts = np.unique(dst[_ranges(start[ready], start[ready + 1])], return_counts=True)
        waiting[later] -= counts
        ready = later[waiting[later] == 0]
    return colors


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenated aranges [starts[i], ends[i]) as one index array."""
    lens = ends - starts
    return np.repeat(ends - np.cumsum(lens), lens) + np.arange(int(lens.sum()))


def pad_graph(adj: sp.csr_matrix, warn_isolated: bool = True) -> Graph:
    """Padded neighbour arrays + colouring for the JAX kernels."""
    adj = sp.csr_matrix(adj)
    n = adj.shape[0]
    deg = np.diff(adj.indptr)
    n_iso = int(np.sum(deg == 0))
    if n_iso and warn_isolated:
        warnings.warn(
            f"{n_iso} spots have no spatial neighbour; their domain is decided by expression "
            "alone (raise k or the radius to connect them)",
            UserWarning,
            stacklevel=user_level(),
        )
    D = max(int(deg.max()) if n else 0, 1)
    nbr = np.tile(np.arange(n, dtype=np.int32)[:, None], (1, D))
    mask = np.zeros((n, D), np.float32)
    pos = np.arange(adj.indices.size) - np.repeat(adj.indptr[:-1], deg)
    rows = np.repeat(np.arange(n), deg)
    nbr[rows, pos] = adj.indices
    mask[rows, pos] = 1.0
    colors = greedy_coloring(adj)
    return Graph(nbr=nbr, mask=mask, colors=colors,
                       n_colors=int(colors.max()) + 1 if n else 1)


def lattice_adjacency(h: int, w: int) -> sp.csr_matrix:
    """4-neighbour square lattice on an h x w grid (row-major spot order)."""
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return lattice_graph(rr.ravel(), cc.ravel(), kind="st")

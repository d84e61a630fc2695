"""Spatial graphs: construction, symmetry, lattices, blocks, warnings."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from transst_bayes.graph import build_graph, greedy_coloring, pad_graph


def test_knn_symmetric_and_at_least_k():
    rng = np.random.default_rng(0)
    xy = rng.uniform(size=(200, 2))
    A = build_graph(xy, "knn", k=6)
    assert (A != A.T).nnz == 0
    assert A.diagonal().sum() == 0
    assert np.diff(A.indptr).min() >= 6


def test_visium_hex_has_six_interior_neighbours():
    rows, cols = [], []
    for r in range(8):
        for c in range(r % 2, 16, 2):
            rows.append(r)
            cols.append(c)
    A = build_graph(kind="visium", array_row=np.array(rows), array_col=np.array(cols))
    deg = np.diff(A.indptr)
    assert deg.max() == 6
    interior = [(r > 0 and r < 7 and c > 1 and c < 14) for r, c in zip(rows, cols)]
    assert np.all(deg[np.array(interior)] == 6)


def test_st_square_lattice_and_radius():
    rr, cc = np.meshgrid(np.arange(5), np.arange(6), indexing="ij")
    A = build_graph(kind="st", array_row=rr.ravel(), array_col=cc.ravel())
    assert np.diff(A.indptr).max() == 4 and A.nnz == 2 * (5 * 5 + 4 * 6)
    B = build_graph(np.stack([cc.ravel(), rr.ravel()], 1).astype(float), "radius", radius=1.01)
    assert (A != B).nnz == 0


def test_library_key_gives_block_diagonal():
    rng = np.random.default_rng(1)
    xy = rng.uniform(size=(60, 2))
    libs = np.array(["a", "b", "c"] * 20)
    A = build_graph(xy, "knn", k=4, libraries=libs)
    i, j = A.nonzero()
    assert np.all(libs[i] == libs[j])
    assert np.diff(A.indptr).min() >= 4


def test_isolated_and_duplicate_spots_warn_not_crash():
    xy = np.array([[0, 0], [0, 0], [1, 0], [50, 50]], float)
    with pytest.warns(UserWarning, match="share coordinates"):
        A = build_graph(xy, "radius", radius=2.0)
    with pytest.warns(UserWarning, match="no spatial neighbour"):
        g = pad_graph(A)
    assert g.mask[3].sum() == 0 and g.nbr[3, 0] == 3


def test_greedy_coloring_proper_on_random_graph():
    A = sp.random(300, 300, density=0.02, random_state=3)
    A = ((A + A.T) > 0).astype(float)
    A.setdiag(0)
    A = sp.csr_matrix(A)
    A.eliminate_zeros()
    c = greedy_coloring(A)
    i, j = A.nonzero()
    assert np.all(c[i] != c[j])
    assert c.max() + 1 <= np.diff(A.indptr).max() + 1


def _greedy_one_at_a_time(adj):
    """The reference: spots in order of decreasing degree (ties by index), each the smallest
    colour its already coloured neighbours lack (the package's loop before 2026-11-27)."""
    adj = sp.csr_matrix(adj)
    order = np.argsort(-np.diff(adj.indptr), kind="stable")
    colors = np.full(adj.shape[0], -1)
    for i in order:
        used = set(colors[adj.indices[adj.indptr[i]:adj.indptr[i + 1]]].tolist())
        colors[i] = next(c for c in range(len(used) + 1) if c not in used)
    return colors


@pytest.mark.parametrize("case", ["random", "knn", "radius", "lattice", "no_edges", "empty"])
def test_vectorised_coloring_equals_the_one_at_a_time_greedy(case):
    """Issue 15: the colouring in rounds (no loop over spots) is the sequential greedy's, colour
    for colour, on graphs of every kind the package builds."""
    from transst_bayes.graph import knn_graph, lattice_adjacency, radius_graph

    rng = np.random.default_rng(5)
    pts = rng.uniform(0, 20, size=(500, 2))
    if case == "random":
        A = sp.random(400, 400, density=0.015, random_state=7)
        A = ((A + A.T) > 0).astype(float)
        A.setdiag(0)
        A = sp.csr_matrix(A)
        A.eliminate_zeros()
    else:
        A = {"knn": lambda: knn_graph(pts, 6), "radius": lambda: radius_graph(pts, 1.5),
             "lattice": lambda: lattice_adjacency(23, 31),
             "no_edges": lambda: sp.csr_matrix((50, 50)), "empty": lambda: sp.csr_matrix((0, 0))}[case]()
    np.testing.assert_array_equal(greedy_coloring(A), _greedy_one_at_a_time(A))

"""Built-in simulator: a labeled source and an unlabeled target from the TransST model.

Labels on an h x w square lattice are drawn from the Potts model (chromatic Gibbs, mrf.py);
factors z | y = k ~ N(mu_k, Sigma_k) with K = 4 means at separation `separation` and two domains
with wide covariances, as in the paper; expression x = W z + e with heteroscedastic noise
psi_g ~ U(0.1, error). The target's loadings depart from the source's by a controllable shift.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import cache, compiler, lapack_guard, mrf
from . import validate as V
from .graph import lattice_adjacency, pad_graph

SHIFTS = {"none": 0.0, "small": 0.1, "large": 1.0}


# compiled once per lattice shape (called eagerly, its sweep loop was compiled anew on every call)
_potts_sample = jax.jit(mrf.sample, static_argnames=("n_colors", "K", "n_sweeps"))


def potts_labels(key, h: int, w: int, K: int, beta: float, n_sweeps: int = 300) -> np.ndarray:
    g = pad_graph(lattice_adjacency(h, w), warn_isolated=False)
    y = _potts_sample(key, jnp.asarray(g.nbr), jnp.asarray(g.mask), jnp.asarray(g.colors),
                      g.n_colors, beta, K, n_sweeps=n_sweeps)
    return np.asarray(y)


def domain_params(rng: np.random.Generator, K: int, q: int, separation: float):
    """Means on orthogonal directions at pairwise distance `separation`; domains 0 and 1 have
    covariance I, the others a wide covariance 2 I."""
    Q, _ = np.linalg.qr(rng.normal(size=(q, q)))
    mu = (separation / np.sqrt(2.0)) * Q[:, :K].T if K <= q else rng.normal(size=(K, q)) * separation / 2
    Sigma = np.stack([np.eye(q) if k < 2 else 2.0 * np.eye(q) for k in range(K)])
    return mu, Sigma


def _draw(rng, labels, mu, Sigma, W, psi):
    n = labels.size
    q = mu.shape[1]
    L = np.linalg.cholesky(Sigma)
    z = mu[labels] + np.einsum("nqr,nr->nq", L[labels], rng.normal(size=(n, q)))
    x = (z @ W.T).astype(np.float32)  # float32 throughout: 100k x 2,000 stays at 0.8 GB
    sd = np.sqrt(psi).astype(np.float32)
    for i in range(0, n, 16384):
        e = rng.standard_normal(size=(min(16384, n - i), W.shape[0]), dtype=np.float32)
        x[i:i + 16384] += e * sd
    return x, z


def _mix(rng, x, h: int, w: int, mixing: float) -> np.ndarray:
    """Each spot's expression mixed with one random lattice neighbour's: (1 - m) x_j + m x_j',
    m ~ U(0, mixing) (spots that straddle two domains; the label stays the spot's own)."""
    n = h * w
    r, c = np.divmod(np.arange(n), w)
    step = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)])[rng.integers(0, 4, n)]
    rr, cc = np.clip(r + step[:, 0], 0, h - 1), np.clip(c + step[:, 1], 0, w - 1)
    m = rng.uniform(0.0, mixing, size=(n, 1)).astype(x.dtype)
    return (1 - m) * x + m * x[rr * w + cc]


def _counts(rng, x, library_size: float, dispersion: float) -> np.ndarray:
    """Negative binomial counts (mean m, variance m + m^2 / dispersion) around a spot's
    library-size share of exp(x / 2)."""
    w = np.exp(0.5 * (x - x.max(axis=1, keepdims=True)))
    lib = library_size * rng.lognormal(0.0, 0.3, size=(x.shape[0], 1))
    m = lib * w / w.sum(axis=1, keepdims=True)
    lam = rng.gamma(dispersion, m / dispersion)
    return rng.poisson(lam).astype(np.float32)


@lapack_guard.guard
def simulate(
    seed: int = 0,
    *,
    height: int = 50,
    width: int = 50,
    n_genes: int = 1000,
    n_factors: int = 10,
    n_domains: int = 4,
    beta: float = 1.0,
    separation: float = 5.0,
    loading_scale: float = 0.15,
    error: float = 1.0,
    source_error: float | None = None,
    shift: str | float = "none",
    shift_genes: int | Sequence[int] | None = None,
    source_height: int | None = None,
    source_width: int | None = None,
    class_shift: float = 0.0,
    absent_classes: int = 0,
    novel_domains: int = 0,
    counts: bool = False,
    library_size: float = 2000.0,
    dispersion: float = 5.0,
    source_sections: int = 1,
    section_effect: float = 0.0,
    mixing: float = 0.0,
):
    """Simulate a (source, target) AnnData pair from the TransST model.

    Labels on a `height` x `width` square lattice are drawn from the Potts model with
    smoothness `beta`; factors z | y = k ~ N(mu_k, Sigma_k); expression x = W z + e with
    heteroscedastic noise psi_g ~ U(0.1, error). The source has `n_domains` labeled classes;
    the target's loadings depart from the source's by `shift` (and, for `shift_genes`, break
    from them), and its domains can differ from the source's classes (`class_shift`,
    `absent_classes`, `novel_domains`).

    Parameters
    ----------
    seed : int, default 0
        Random seed (>= 0).
    height : int, default 50
        Rows of the target's lattice (>= 2).
    width : int, default 50
        Columns of the target's lattice (>= 2).
    n_genes : int, default 1000
        Number of genes p.
    n_factors : int, default 10
        Number of latent factors q (< n_genes).
    n_domains : int, default 4
        Number of source classes K (>= 2).
    beta : float, default 1.0
        Potts smoothness of the labels (>= 0).
    separation : float, default 5.0
        Pairwise distance of the domain means (on orthogonal directions); domains 0 and 1 have
        covariance I, the others 2 I.
    loading_scale : float, default 0.15
        Standard deviation of the source loadings' entries.
    error : float, default 1.0
        Upper bound of the target's noise variances, psi_t ~ U(0.1, error) (> 0.1).
    source_error : float or None, default None
        Upper bound of the source's noise variances; None: `error`.
    shift : str or float, default "none"
        Departure of the target's loadings: "none" (0), "small" (0.1), "large" (1.0) or a
        number s >= 0, W_t = W_s + s * loading_scale * noise.
    shift_genes : int, sequence of int or None, default None
        A number of genes (the first ones after a random permutation) or a list of gene
        indices whose target loadings are redrawn independently of the source
        ("transfer-breaking" genes).
    source_height : int or None, default None
        Rows of the source's lattice; None: `height`.
    source_width : int or None, default None
        Columns of the source's lattice; None: `width`.
    class_shift : float, default 0.0
        The target's domain means are the source's class means plus `class_shift` times a
        standard normal vector each (0: the classes carry over exactly).
    absent_classes : int, default 0
        The last `absent_classes` source classes do not occur in the target (at most
        n_domains - 2).
    novel_domains : int, default 0
        Extra target domains (labels "novel0", ...) whose means (drawn like the others) the
        source lacks.
    counts : bool, default False
        Return raw counts instead of Gaussian expression: per spot a library size
        ~ library_size * LogNormal(0, 0.3), gene means proportional to exp(x / 2) and negative
        binomial counts with the given dispersion (low depth, like real data).
    library_size : float, default 2000.0
        Mean library size of the counts (counts=True).
    dispersion : float, default 5.0
        Negative binomial dispersion of the counts (variance m + m^2 / dispersion).
    source_sections : int, default 1
        The source lattice is cut into this many vertical strips, named in
        `source.obs["section"]` ("section0", ...) when more than one.
    section_effect : float, default 0.0
        Every source section and the target get their own gene offsets
        ~ N(0, section_effect^2) added to the expression (a batch effect the model does not
        have; added before the counts are drawn when counts=True).
    mixing : float, default 0.0
        In [0, 1]: every spot's expression (target and source) is mixed with a random lattice
        neighbour's, weight ~ U(0, mixing), its label kept: spots that straddle domains, which
        the model (one domain per spot) does not have; with mixing > 0.5 some boundary spots
        look more like their neighbour's domain than their own.

    Returns
    -------
    source : AnnData
        The labeled source: classes ("domain0", ...) in `obs["label"]`, coordinates in
        `obsm["spatial"]` and `obs["array_row"]` / `obs["array_col"]`, sections in
        `obs["section"]` when `source_sections` > 1.
    target : AnnData
        The target: true domains in `obs["truth"]` (codes in `obs["truth_code"]`),
        coordinates as for the source, `var["transfer_breaking"]` marking the genes that break
        from the source, the true factors in `obsm["z_true"]`, the true loadings in
        `varm["W_true"]` and `varm["W_source"]`, noise variances in `var["psi_true"]` and the
        simulation's settings and domain parameters in `uns["simulation"]`.

    Raises
    ------
    ValueError
        A value out of range (for example n_factors >= n_genes, error <= 0.1, an unknown
        `shift`, mixing outside [0, 1]).
    TypeError
        An integer argument that is not an int, or a number that is not a real number.

    See Also
    --------
    fit_em, fit_svi : Fit the simulated pair.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
    >>> target.shape
    (400, 200)
    >>> sorted(source.obs["label"].unique())
    ['domain0', 'domain1', 'domain2', 'domain3']
    >>> counts_source, counts_target = tb.simulate(seed=1, height=20, width=20, n_genes=200,
    ...                                            counts=True, source_sections=2)
    """
    import anndata as ad
    import pandas as pd

    seed = V.integer("seed", seed, 0)
    cache.ensure_default()  # its Potts sampler compiles
    compiler.ensure_default()
    for name, value, low in (("height", height, 2), ("width", width, 2), ("n_genes", n_genes, 2),
                             ("n_factors", n_factors, 1), ("n_domains", n_domains, 2),
                             ("source_height", source_height, 2), ("source_width", source_width, 2),
                             ("absent_classes", absent_classes, 0), ("novel_domains", novel_domains, 0)):
        V.integer(name, value, low, none_ok=name.startswith("source_"))
    for name, value in (("beta", beta), ("separation", separation), ("loading_scale", loading_scale),
                        ("class_shift", class_shift), ("section_effect", section_effect),
                        ("mixing", mixing)):
        V.number(name, value, 0.0)
    V.number("library_size", library_size, 0.0, strict=True)
    V.number("dispersion", dispersion, 0.0, strict=True)
    V.number("source_error", source_error, 0.1, strict=True, none_ok=True)
    if V.number("error", error) <= 0.1:
        raise ValueError(f"error must be > 0.1 (psi ~ U(0.1, error)), got {error}")
    if n_factors >= n_genes:
        raise ValueError(f"n_factors must be < n_genes, got {n_factors} >= {n_genes}")
    if isinstance(shift, str) and shift not in SHIFTS:
        raise ValueError(f"shift must be one of {tuple(SHIFTS)} or a number, got {shift!r}")
    if not isinstance(shift, str):
        V.number("shift", shift, 0.0)
    V.flag("counts", counts)
    shift_value = SHIFTS[shift] if isinstance(shift, str) else float(shift)
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    k_t, k_s = jax.random.split(key)
    p, q, K = n_genes, n_factors, n_domains
    sh, sw = source_height or height, source_width or width

    if not isinstance(source_sections, (int, np.integer)) or isinstance(source_sections, bool) \
            or not 1 <= source_sections <= (source_width or width):
        raise ValueError(f"source_sections must be an int in [1, source width], got {source_sections!r}")
    if not 0 <= mixing <= 1:
        raise ValueError(f"mixing must be in [0, 1], got {mixing}")
    if not section_effect >= 0:
        raise ValueError(f"section_effect must be >= 0, got {section_effect}")
    if not 0 <= absent_classes < K - 1:
        raise ValueError(f"absent_classes must be in [0, {K - 2}], got {absent_classes}")
    K_t = K - absent_classes + novel_domains
    y_t = potts_labels(k_t, height, width, K_t, beta)
    y_s = potts_labels(k_s, sh, sw, K, beta)
    mu, Sigma = domain_params(rng, K + novel_domains, q, separation)
    keep = list(range(K - absent_classes)) + list(range(K, K + novel_domains))
    mu_t = mu[keep] + class_shift * rng.normal(size=(K_t, q))
    Sigma_t = Sigma[keep]
    mu, Sigma = mu[:K], Sigma[:K]
    names_t = [f"domain{k}" for k in range(K - absent_classes)] + [f"novel{i}" for i in range(novel_domains)]
    W_s = rng.normal(size=(p, q)) * loading_scale
    W_t = W_s + shift_value * loading_scale * rng.normal(size=(p, q))
    breaking = np.zeros(p, bool)
    if shift_genes is not None:
        idx = (rng.permutation(p)[: int(shift_genes)] if np.isscalar(shift_genes)
               else np.asarray(shift_genes, dtype=int))
        breaking[idx] = True
        W_t[idx] = rng.normal(size=(idx.size, q)) * loading_scale
    psi_t = rng.uniform(0.1, error, p)
    psi_s = rng.uniform(0.1, source_error if source_error is not None else error, p)
    x_t, z_t = _draw(rng, y_t, mu_t, Sigma_t, W_t, psi_t)
    x_s, _ = _draw(rng, y_s, mu, Sigma, W_s, psi_s)
    strip = np.minimum(np.tile(np.arange(sw), sh) * source_sections // sw, source_sections - 1)
    if mixing > 0:
        x_t, x_s = _mix(rng, x_t, height, width, mixing), _mix(rng, x_s, sh, sw, mixing)
    if section_effect > 0:
        x_t = x_t + section_effect * rng.normal(size=(1, p))
        x_s = x_s + section_effect * rng.normal(size=(source_sections, p))[strip]
    if counts:
        x_t, x_s = _counts(rng, x_t, library_size, dispersion), _counts(rng, x_s, library_size, dispersion)

    genes = [f"gene{g:04d}" for g in range(p)]

    def make(x, y, h, w, col, prefix, names):
        rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        obs = pd.DataFrame({
            col: pd.Categorical([names[v] for v in y], categories=names),
            "array_row": rr.ravel(), "array_col": cc.ravel(),
        }, index=[f"{prefix}{i}" for i in range(h * w)])
        a = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes))
        a.obsm["spatial"] = np.stack([cc.ravel(), rr.ravel()], axis=1).astype(np.float64)
        return a

    source = make(x_s, y_s, sh, sw, "label", "s", [f"domain{k}" for k in range(K)])
    if source_sections > 1:
        source.obs["section"] = pd.Categorical([f"section{i}" for i in strip])
    target = make(x_t, y_t, height, width, "truth", "t", names_t)
    target.obs["truth_code"] = y_t
    target.var["transfer_breaking"] = breaking
    target.obsm["z_true"] = z_t.astype(np.float32)
    target.varm["W_true"] = W_t
    target.varm["W_source"] = W_s
    target.var["psi_true"] = psi_t
    target.uns["simulation"] = {
        "seed": seed, "beta": beta, "n_domains": K, "n_factors": q, "separation": separation,
        "error": error, "shift": shift_value, "mu": mu_t, "Sigma": Sigma_t, "source_mu": mu,
        "class_shift": class_shift, "absent_classes": absent_classes, "novel_domains": novel_domains,
        "counts": counts, "source_sections": source_sections, "section_effect": section_effect,
        "mixing": mixing,
    }
    return source, target

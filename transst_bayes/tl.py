"""Scanpy-style tools: `f(adata, ..., key_added=..., copy=False)` over AnnData.

`transst` fits (EM or SVI) and writes the keys of `transst_bayes.keys`; `markers` and
`transfer_breaking_genes` read that fit back from the AnnData and write their tables.
With `copy=False` the AnnData is changed in place and None is returned; `copy=True` returns a
changed copy and leaves the input untouched.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import keys
from . import validate as V
from .result import TransSTResult
from .summary import marker_genes, transfer_breaking_genes as _breaking

METHODS = ("em", "svi", "mcmc")

__all__ = ["transst", "markers", "transfer_breaking_genes"]


def _seed(rng) -> int:
    """An int seed from an int, a numpy Generator or a JAX PRNG key."""
    if rng is None:
        return 0
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return int(rng)
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**31 - 1))
    import jax

    if hasattr(rng, "dtype") and jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)  # a new-style typed key
    arr = np.asarray(rng) if hasattr(rng, "dtype") else None
    if arr is not None and arr.dtype.kind == "u" and arr.size == 2:  # a JAX PRNG key's data
        return int(arr.ravel()[-1]) % (2**31 - 1)
    raise TypeError(f"rng must be an int seed, a numpy Generator or a JAX PRNG key, got {rng!r}")


def transst(
    target,
    source=None,
    *,
    label_key: str = "label",
    n_domains: int | Sequence[int] | None = None,
    method: str = "em",
    spatial_key: str = "spatial",
    library_key: str | None = None,
    layer: str | None = None,
    rng=0,
    key_added: str = keys.DEFAULT,
    copy: bool = False,
    **kwargs,
):
    """Find tissue domains in `target` with TransST and write them into it.

    Fits the model with `fit_em` (method="em"), `fit_svi` (method="svi") or `fit_mcmc`
    (method="mcmc") and writes the domains, their probabilities, the factor scores, the
    loadings and the fit itself into the AnnData (scanpy style), so that `markers`,
    `transfer_breaking_genes` and `transst_bayes.pl` can read it back, also from a re-read
    `.h5ad` file.

    Parameters
    ----------
    target : AnnData
        The unlabeled section(s): counts or log-normalised values in `X` or `layer`,
        coordinates in `obsm[spatial_key]` (or a Visium / ST lattice, or a graph in
        `obsp["spatial_connectivities"]`); several sections with `library_key`.
    source : AnnData or None, default None
        Labeled AnnData (classes in `obs[label_key]`) whose gene programs are transferred, or
        None to fit the target alone.
    label_key : str, default "label"
        Column of `source.obs` holding the source's classes.
    n_domains : int, sequence of int, range or None, default None
        K, or a list / range of K chosen by the criterion (HBIC for EM, PSIS-LOO for SVI).
        None: with a labeled source the source classes present in the target plus novel
        domains (`n_novel`), without one 7. Domains are anchored to (and named after) the
        source classes by default (`domains="anchored"`; "free" for the paper's free
        clustering).
    method : str, default "em"
        "em" (compiled EM/ICM, `fit_em`), "svi" (NumPyro SVI with posterior draws,
        `fit_svi`) or "mcmc" (NumPyro NUTS, several chains, for small data: `fit_mcmc`).
    spatial_key : str, default "spatial"
        Key of the spot coordinates in `obsm`.
    library_key : str or None, default None
        Column of `target.obs` that names several sections in one AnnData (no graph edges
        between sections).
    layer : str or None, default None
        Expression layer to fit (`layers[layer]`); None: `X`.
    rng : int, numpy.random.Generator or JAX PRNG key, default 0
        Random seed of the fit (None: 0).
    key_added : str, default "transst"
        Name of the fit: the prefix of every key written.
    copy : bool, default False
        Return a changed copy instead of writing into `target`.
    **kwargs
        Passed to `fit_em` / `fit_svi`: the data options and the fit options common to both,
        listed under Other Parameters, and the options of one method: `transfer`, `variant`,
        `beta`, `n_restarts`, `max_iter`, `tol`, `weight` (method="em"); `model`, `guide`,
        `form`, `model_options`, `lr`, `steps_per_round`, `max_rounds`, `rtol`, `batch_size`,
        `num_samples`, `rank`, `em_options` (method="svi"); `num_warmup`, `num_samples`,
        `num_chains`, `chain_method`, `target_accept`, `max_tree_depth`, `init_jitter`,
        `em_options` (method="mcmc").

    Other Parameters
    ----------------
    domains : str, default "anchored"
        "anchored" (domains tied to and named after the source classes) or "free" (the paper's
        free clustering).
    n_novel : int or sequence of int, default (0, 1, 2)
        Number(s) of novel domains tried beside the anchored ones when `n_domains` is None.
    n_factors : int, default 15
        Number of latent factors q.
    criterion : str
        How K is chosen among several: default "hbic" for method="em", "loo" for
        method="svi" and "mcmc" (see `fit_em` and `fit_svi` for the others).
    calibrate : str or float, default "auto"
        Temperature of the per-spot probabilities: "auto" (from fits of held-out source
        sections), "none", or a temperature T > 0 (see `fit_em`).
    dtype : str, default "float32"
        "float32" or "float64".
    progress_bar : bool, default False
        Show a tqdm progress bar.
    devices : None, "all", sequence or jax.sharding.Mesh, default None
        Devices the target's spots are split over (see `fit_em`).
    source_layer : str or None, default None
        Layer of the source's expression; None: the same as `layer`.
    counts : bool or None, default None
        Whether the expression holds raw counts, which are normalised to `target_sum` per spot
        and log1p-transformed. None: detected (non-negative integers are counts); True: counts
        (ValueError when there are negative values); False: taken as already normalised.
    target_sum : float, default 1e4
        Library size that raw counts are normalised to.
    genes : str or sequence of str, default "auto"
        Gene selection among the genes that target and source share and that vary in the
        target and are non-zero in at least 1% (and 10) of the spots of each: "auto" (scanpy's
        boolean `var["highly_variable"]` of the target when it has that column, else
        "variance"), "highly_variable" (every such gene flagged there; `n_genes` does not
        apply), "variance" (the `n_genes` most variable genes of the log-normalised target),
        "cv" (by coefficient of variation, as the published code), "source" (how well a gene
        separates the source's classes: one-way ANOVA F; needs a labeled source), or a list of
        gene names taken as given.
    n_genes : int, default 2000
        Number of genes selected by "variance", "cv" or "source".
    standardize : str, default "pooled"
        Per-gene standardisation: "pooled" (mean and standard deviation of target and source
        together), "separate" (the target on its own; the source per section of
        `source_batch_key`) or "none". Standardised values are clipped to +-10.
    source_batch_key : str or None, default None
        Column of `source.obs` that names the source's sections: each is standardised on its
        own with standardize="separate", and held out in turn by `calibrate="auto"` and
        `transfer="auto"`. None: the first of "library_id", "section", "sample", "batch" with
        at least two values (none: folds of spatial tiles of the source are held out instead).
    graph : str, default "knn"
        Neighbour graph of the target spots: "knn" (`n_neighbors` nearest neighbours,
        symmetrised), "radius" (every spot within `radius`), "visium" (hexagonal lattice) or
        "st" (square lattice), the lattices from `obs["array_row"]` and `obs["array_col"]`.
        Not used when `obsp[graph_key]` holds a graph.
    graph_key : str, default "spatial_connectivities"
        Key in `obsp` of a precomputed spot adjacency (for example from
        `pp.spatial_neighbors`), used as given when present.
    n_neighbors : int, default 6
        Neighbours per spot of the "knn" graph.
    radius : float or None, default None
        Radius of the "radius" graph, in the units of the coordinates (required for it).
    prepare_on : str, default "auto"
        Where the target's expression is prepared: "host" (NumPy / SciPy), "device" (JAX on the
        fit's device, float32 only) or "auto" (the device when JAX's default backend is a GPU or
        TPU, the fit runs on one device, dtype is "float32" and the matrix fits in its memory).

    Returns
    -------
    AnnData or None
        None, or the changed copy with `copy=True`. Written (`key` = `key_added`):

        - `obs[key]`: the domain of each spot (categorical, named after the domains);
        - `obs[f"{key}_maxprob"]`: the most probable domain's probability;
        - `obs[f"{key}_entropy"]`: the entropy of the spot's domain probabilities;
        - `obsm[f"{key}_proba"]`: (n, K) domain probabilities;
        - `obsm[f"X_{key}"]`: (n, q) latent factor scores;
        - `varm[f"{key}_loadings"]`: (genes, q) target loadings, NaN rows for genes the fit did
          not use;
        - `uns[key]`: the fit: settings (JSON), beta, tau, kappa, temperature, calibration,
          domain_names, n_domains, k_table (JSON), genes, version, seed, and the arrays and
          metadata (`fit`, `meta`) that `TransSTResult.from_anndata` rebuilds it from;
        - `uns[f"{key}_colors"]`: one colour per domain.

    Raises
    ------
    ValueError
        `method` is not "em", "svi" or "mcmc", or a bad option or input (see the fits).
    TypeError
        `target` or `source` is not an AnnData, `key_added` is not a non-empty str, `copy` is
        not a bool, `rng` is not a seed, Generator or JAX key, or an unknown keyword argument.

    See Also
    --------
    fit_em, fit_svi, fit_mcmc : The fits, returning a `TransSTResult`.
    markers : Marker genes per domain from the fit written here.
    transfer_breaking_genes : Genes whose loadings break from the source.
    TransSTResult.to_anndata : What writes the keys.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> from transst_bayes import tl
    >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
    >>> tl.transst(target, source, label_key="label", n_domains=[3, 4], n_factors=10)
    >>> sorted(k for k in target.obsm if "transst" in k)
    ['X_transst', 'transst_proba']
    >>> svi = tl.transst(target, source, n_domains=4, n_factors=10, method="svi",
    ...                  key_added="transst_svi", copy=True)
    """
    from .fit import fit_em, fit_mcmc, fit_svi

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    V.anndata("target", target)
    if source is not None:
        V.anndata("source", source)
    V.key("key_added", key_added)
    V.flag("copy", copy)
    if isinstance(n_domains, range):
        n_domains = list(n_domains)
    fit = {"em": fit_em, "svi": fit_svi, "mcmc": fit_mcmc}[method]
    res = fit(target, source, label_key=label_key, n_domains=n_domains, seed=_seed(rng),
              spatial_key=spatial_key, library_key=library_key, layer=layer, **kwargs)
    res.info["method"] = method
    return res.to_anndata(target, key_added=key_added, copy=copy)


def _key_result(adata, key: str, key_added, copy) -> TransSTResult:
    V.anndata("adata", adata)
    V.key("key", key)
    V.key("key_added", key_added, none_ok=True)
    V.flag("copy", copy)
    return TransSTResult.from_anndata(adata, key)


def markers(adata, key: str = keys.DEFAULT, *, domain: int | None = None, n_top: int | None = None,
            credible: float = 0.9, temperature: float | None = None, key_added: str | None = None,
            copy: bool = False):
    """Marker genes per domain from the fit under `key`.

    For each domain: the expected expression, the contrast against the mean of the other
    domains with its posterior mean, `credible` interval, P(contrast > 0) and local false sign
    rate, ranked within the domain by the posterior mean of the contrast. SVI fits use the
    posterior draws; EM fits draws of the domain means from their conditional posterior given
    the fit's other parameters (column `posterior`). The intervals follow the fit's calibration
    (`temperature=None`; see `transst_bayes.marker_genes`).

    Parameters
    ----------
    adata : AnnData
        An AnnData with a fit written by `transst` (or `TransSTResult.to_anndata`) under `key`.
    key : str, default "transst"
        Name of the fit (`key_added` of `transst`).
    domain : int, str or None, default None
        One domain (its index or name); None: every domain.
    n_top : int or None, default None
        Rows kept per domain (the top-ranked); None: every gene.
    credible : float, default 0.9
        Level of the credible interval, in (0, 1).
    temperature : float or None, default None
        Calibration the intervals follow: None takes the fit's own (`info["temperature"]`),
        1.0 reads the posterior as fitted; the expression draws are spread sqrt(T) times
        farther from their mean, so the intervals widen by sqrt(T) (posterior means and ranking
        do not change).
    key_added : str or None, default None
        Key of the table in `uns`; None: `f"{key}_markers"`.
    copy : bool, default False
        Return a changed copy instead of writing into `adata`.

    Returns
    -------
    AnnData or None
        None, or the changed copy with `copy=True`. Written: `uns[key_added or
        f"{key}_markers"]`, a pandas DataFrame with one row per domain and gene and the columns
        domain, gene, expression, contrast, ci_low, ci_high, p_positive, lfsr, n_draws,
        temperature and posterior ("svi", "mcmc" or "em_conditional").

    Raises
    ------
    ValueError
        `uns[key]` holds no TransST fit, the spots differ from the fitted ones, `credible` is
        not in (0, 1), or `domain` is not a domain of the fit.
    TypeError
        `adata` is not an AnnData, a key is not a non-empty str, or `copy` is not a bool.

    See Also
    --------
    transst : The fit this reads.
    transst_bayes.marker_genes : The same table from a `TransSTResult`.
    transst_bayes.pl.marker_heatmap : Plot of the table.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> from transst_bayes import tl
    >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
    >>> tl.transst(target, source, n_domains=4, n_factors=10)
    >>> tl.markers(target, n_top=5)
    >>> list(target.uns["transst_markers"].columns[:4])
    ['domain', 'gene', 'expression', 'contrast']
    """
    res = _key_result(adata, key, key_added, copy)
    table = marker_genes(res, domain=domain, n_top=n_top, credible=credible, temperature=temperature)
    if copy:
        adata = adata.copy()
    adata.uns[key_added or keys.markers(key)] = table
    return adata if copy else None


def transfer_breaking_genes(adata, key: str = keys.DEFAULT, *, n_top: int | None = None,
                            key_added: str | None = None, copy: bool = False):
    """Genes whose target loadings break from the source, ranked.

    The score of a gene is the posterior mean of the horseshoe's local scale phi_g when the fit
    has it (fit_svi with form="horseshoe"), else the distance ||W_t[g] - W_s[g]|| between its
    target and source loadings (the posterior mean over draws when there are draws).

    Parameters
    ----------
    adata : AnnData
        An AnnData with a fit written by `transst` (or `TransSTResult.to_anndata`) under `key`;
        the fit must have used a source.
    key : str, default "transst"
        Name of the fit (`key_added` of `transst`).
    n_top : int or None, default None
        Rows of the table kept (the highest scores); None: every fitted gene. The `var` column
        always holds every fitted gene's score.
    key_added : str or None, default None
        Key of the table in `uns` and of the score in `var`; None:
        `f"{key}_transfer_breaking"`.
    copy : bool, default False
        Return a changed copy instead of writing into `adata`.

    Returns
    -------
    AnnData or None
        None, or the changed copy with `copy=True`. Written (`name` = `key_added or
        f"{key}_transfer_breaking"`): `uns[name]`, a pandas DataFrame with the columns gene,
        distance, phi (horseshoe fits only), score and rank, sorted by score; and `var[name]`,
        the score of every gene (NaN for genes not used in the fit).

    Raises
    ------
    ValueError
        `uns[key]` holds no TransST fit, the fit has no source loadings (fitted without a
        source), or `n_top` < 1.
    TypeError
        `adata` is not an AnnData, a key is not a non-empty str, `n_top` is not an int, or
        `copy` is not a bool.

    See Also
    --------
    transst : The fit this reads.
    transst_bayes.transfer_breaking_genes : The same table from a `TransSTResult`.
    transst_bayes.pl.transfer_breaking : Bar plot of the top genes.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> from transst_bayes import tl
    >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200, shift_genes=10)
    >>> tl.transst(target, source, n_domains=4, n_factors=10, transfer="eb")
    >>> tl.transfer_breaking_genes(target, n_top=10)
    >>> top = target.uns["transst_transfer_breaking"]["gene"]
    """
    n_top = V.integer("n_top", n_top, minimum=1, none_ok=True)
    full = _breaking(_key_result(adata, key, key_added, copy))
    table = full if n_top is None else full.head(n_top)
    name = key_added or keys.transfer_breaking(key)
    if copy:
        adata = adata.copy()
    score = np.full(adata.n_vars, np.nan)
    pos = {g: i for i, g in enumerate(map(str, adata.var_names))}
    for g, s in zip(full["gene"], full["score"]):
        if g in pos:
            score[pos[g]] = s
    adata.var[name] = score
    adata.uns[name] = table
    return adata if copy else None


def __dir__():
    """The tools only (not this module's imports and helpers)."""
    return sorted(__all__)

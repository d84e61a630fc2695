"""Scanpy-style tools: `f(adata, ..., key_added=..., copy=False)` over AnnData.

`transst` fits (EM or SVI) and writes the keys of DESIGN section 5; `markers` and
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

METHODS = ("em", "svi")


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

    target : AnnData of the unlabeled section(s): counts or log-normalised values in `X` or
        `layer`, coordinates in `obsm[spatial_key]` (or a Visium/ST lattice, or a graph in
        `obsp["spatial_connectivities"]`); several sections with `library_key`.
    source : labeled AnnData (`obs[label_key]`) whose gene programs are transferred, or None.
    n_domains : K, or a list / range of K chosen by the criterion (HBIC for EM, PSIS-LOO for SVI);
        None: with a labeled source the source classes present in the target plus novel domains
        (`n_novel`), without one 7. Domains are anchored to (and named after) the source classes
        by default (`domains="anchored"`; "free" for the paper's free clustering).
    method : "em" (compiled EM/ICM, `fit_em`) or "svi" (NumPyro SVI with posterior, `fit_svi`).
    rng : int seed, numpy Generator or JAX PRNG key.
    kwargs : passed to `fit_em` / `fit_svi` (n_factors, transfer, guide, criterion, ...).

    Writes `obs[key_added]` (categorical domains), `obs[key_added + "_maxprob"]`,
    `obs[key_added + "_entropy"]`, `obsm[key_added + "_proba"]`, `obsm["X_" + key_added]`,
    `varm[key_added + "_loadings"]`, `uns[key_added]` (settings, beta, tau, K table, version,
    seed, and the fit itself for `markers` / `transfer_breaking_genes`) and
    `uns[key_added + "_colors"]`. Returns None, or the changed copy with `copy=True`.
    """
    from .em.driver import fit_em
    from .svi.runner import fit_svi

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    V.anndata("target", target)
    if source is not None:
        V.anndata("source", source)
    V.key("key_added", key_added)
    V.flag("copy", copy)
    if isinstance(n_domains, range):
        n_domains = list(n_domains)
    fit = fit_em if method == "em" else fit_svi
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
    """Marker genes per domain from the fit under `key` (posterior draws when fitted by SVI):
    expected expression, contrast against the other domains with posterior mean, `credible`
    interval, P(contrast > 0) and local false sign rate, ranked within each domain. The
    intervals follow the fit's calibration (`temperature=None`; see `summary.marker_genes`).

    Writes the table (pandas DataFrame, all genes unless `n_top`) to
    `uns[key_added or key + "_markers"]`. Returns None, or the changed copy with `copy=True`.
    """
    res = _key_result(adata, key, key_added, copy)
    table = marker_genes(res, domain=domain, n_top=n_top, credible=credible, temperature=temperature)
    if copy:
        adata = adata.copy()
    adata.uns[key_added or keys.markers(key)] = table
    return adata if copy else None


def transfer_breaking_genes(adata, key: str = keys.DEFAULT, *, n_top: int | None = None,
                            key_added: str | None = None, copy: bool = False):
    """Genes whose target loadings break from the source (horseshoe phi_g when fitted with
    form="horseshoe", else ||W_t[g] - W_s[g]||), ranked.

    Writes the table to `uns[key_added or key + "_transfer_breaking"]` and the score of every
    fitted gene to `var[key_added or key + "_transfer_breaking"]` (NaN for genes not used in the
    fit). Returns None, or the changed copy with `copy=True`.
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

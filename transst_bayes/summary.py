"""Posterior summaries of a fit (fit_svi; fit_em gives point values): spots, marker genes,
transfer-breaking genes, label alignment, ArviZ InferenceData.

Plain functions over a TransSTResult returning pandas DataFrames / numpy arrays.
"""

from __future__ import annotations


import numpy as np

from . import validate as V
from .models import sites
from .metrics import align_labels
from .result import TransSTResult, entropy


def fit_temperature(res: TransSTResult) -> float:
    """The temperature the fit's probabilities were calibrated with (1: none)."""
    return float((res.info or {}).get("temperature", 1.0))


def widen(draws: np.ndarray, T: float) -> np.ndarray:
    """Draws spread sqrt(T) times farther from their mean: a Gaussian posterior under a
    likelihood tempered by 1/T (the power posterior with learning rate 1/T, likelihood-dominated)
    has T times the covariance and the same centre."""
    if T == 1.0:
        return draws
    m = draws.mean(axis=0, keepdims=True)
    return m + np.sqrt(T) * (draws - m)


def _draws(res: TransSTResult):
    """Posterior draws of W (S, p, q) and mu (S, K, q); a fit without a posterior gives S = 1."""
    post = res.posterior or {}
    W = post.get(sites.W, res.W_t[None])
    mu = post.get(sites.MU, res.mu[None])
    return np.asarray(W, np.float64), np.asarray(mu, np.float64)


def spot_summary(res: TransSTResult):
    """Per spot: domain probabilities (averaged over the posterior of the globals), MAP domain,
    max probability, entropy. Index: the fitted spots' obs_names."""
    import pandas as pd

    df = pd.DataFrame(res.proba, index=list(res.obs_names),
                      columns=[f"p_{k}" for k in range(res.n_domains)])
    df["domain"] = np.argmax(res.proba, axis=1)
    df["maxprob"] = res.proba.max(axis=1)
    df["entropy"] = entropy(res.proba)
    return df


def domain_expression(res: TransSTResult, temperature: float = 1.0) -> np.ndarray:
    """Draws of each domain's expected expression on the log-normalised scale, (S, p, K):
    gene_mean + gene_scale * (W_t mu_k), widened around their mean by `temperature` (`widen`)."""
    W, mu = _draws(res)
    e = np.einsum("spq,skq->spk", W, mu)
    m = np.zeros(e.shape[1]) if res.gene_mean is None else np.asarray(res.gene_mean, np.float64)
    s = np.ones(e.shape[1]) if res.gene_scale is None else np.asarray(res.gene_scale, np.float64)
    return widen(m[None, :, None] + s[None, :, None] * e, temperature)


def marker_genes(res: TransSTResult, domain: int | str | None = None, n_top: int | None = None,
                 credible: float = 0.9, temperature: float | None = None):
    """Marker genes per domain: contrast = the domain's expected expression minus the mean of
    the other domains, with posterior mean, `credible` interval, P(contrast > 0) and local false
    sign rate (lfsr = min(P(> 0), P(< 0))). Ranked within each domain by the posterior mean of
    the contrast (largest first); `n_top` keeps the top rows per domain.

    temperature : the calibration the intervals follow; None (default) takes the fit's own
        (`res.info["temperature"]`, the one its spot probabilities were tempered by), 1.0 reads
        the posterior as fitted. The expression draws are spread sqrt(T) times farther from
        their mean (`widen`): the tempered posterior's Gaussian approximation, so the contrasts'
        intervals widen by sqrt(T) and lfsr rises; posterior means and ranking do not change."""
    import pandas as pd

    credible = V.fraction("credible", credible)
    n_top = V.integer("n_top", n_top, minimum=1, none_ok=True)
    if domain is not None and not isinstance(domain, str):
        domain = V.integer("domain", domain)
    T = fit_temperature(res) if temperature is None else \
        V.number("temperature (None: the fit's own)", temperature, 0.0, strict=True)
    e = domain_expression(res, T)  # (S, p, K)
    S, p, K = e.shape
    names = res.names
    if isinstance(domain, str):
        if domain not in names:
            raise ValueError(f"domain {domain!r} is not a domain of the fit; domains are {names}")
        domain = names.index(domain)
    if domain is not None and not 0 <= domain < K:
        raise ValueError(f"domain must be in 0..{K - 1} or a domain name, got {domain}")
    lo_q, hi_q = (1 - credible) / 2, 1 - (1 - credible) / 2
    frames = []
    for k in range(K) if domain is None else [int(domain)]:
        others = np.delete(e, k, axis=2).mean(axis=2)
        c = e[:, :, k] - others  # (S, p)
        p_pos = (c > 0).mean(0)
        p_neg = (c < 0).mean(0)
        df = pd.DataFrame({
            "domain": names[k], "gene": list(res.genes), "expression": e[:, :, k].mean(0),
            "contrast": c.mean(0), "ci_low": np.quantile(c, lo_q, axis=0),
            "ci_high": np.quantile(c, hi_q, axis=0), "p_positive": p_pos,
            "lfsr": np.minimum(p_pos, p_neg) if S > 1 else np.full(p, np.nan),
        })
        df = df.sort_values("contrast", ascending=False)
        frames.append(df.head(n_top) if n_top else df)
    out = pd.concat(frames, ignore_index=True)
    out["n_draws"] = S
    out["temperature"] = float(T)
    return out


def transfer_breaking_genes(res: TransSTResult, n_top: int | None = None):
    """Genes ranked by how far the target departs from the source: the posterior mean of the
    horseshoe's local scale phi_g when the fit has it, else ||W_t[g] - W_s[g]|| (posterior mean
    over draws when there are draws)."""
    import pandas as pd

    n_top = V.integer("n_top", n_top, minimum=1, none_ok=True)
    if res.W_s is None:
        raise ValueError("the fit has no source loadings (fitted without a source); transfer-"
                         "breaking genes need a source")
    W, _ = _draws(res)
    dist = np.linalg.norm(W - np.asarray(res.W_s)[None], axis=2).mean(0)
    df = pd.DataFrame({"gene": list(res.genes), "distance": dist})
    post = res.posterior or {}
    if sites.PHI in post:
        df["phi"] = np.asarray(sites.from_sites(post).phi).mean(0)
        df["score"] = df["phi"]
    else:
        df["score"] = df["distance"]
    df = df.sort_values("score", ascending=False).reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1)
    return df.head(n_top) if n_top else df


def align_result(res: TransSTResult, reference, K: int | None = None) -> TransSTResult:
    """Relabel the domains of `res` to best match `reference` labels (Hungarian matching on the
    MAP labels); every per-domain array (proba, mu, Sigma, posterior draws) is permuted alike."""
    K = res.n_domains
    reference = np.asarray(reference)
    if reference.shape != res.labels.shape:
        raise ValueError(f"reference has shape {reference.shape}, the fit has {res.labels.shape} spots")
    perm = align_labels(res.labels, reference, max(K, int(reference.max()) + 1))[:K]
    if perm.max() >= K:  # the reference has more labels than the fit: keep the matched order
        perm = _compact(perm, K)
    inv = np.argsort(perm)  # inv[new] = old
    post = None
    if res.posterior is not None:
        post = {k: (v[:, inv] if k in (sites.MU, sites.SIGMA) else v) for k, v in res.posterior.items()}
    names = [res.domain_names[i] for i in inv] if res.domain_names else []
    return res.replace(labels=perm[res.labels], proba=res.proba[:, inv], mu=res.mu[inv],
                       Sigma=res.Sigma[inv], posterior=post, domain_names=names)


def _compact(perm: np.ndarray, K: int) -> np.ndarray:
    """Keep the matched order but map onto 0..K-1 when the reference has more labels."""
    order = np.argsort(perm[:K])
    out = np.empty(K, dtype=np.int64)
    out[order] = np.arange(K)
    return out


def to_inference_data(res: TransSTResult):
    """ArviZ InferenceData: posterior (one chain) of the global sites with labelled dims
    (gene, factor, domain); a log_likelihood group with the per-spot log-likelihood ("x", dim
    spot) for WAIC / PSIS-LOO; a "spots" group with the domain probabilities (spot, domain),
    max probability, entropy and MAP domain. `idata.to_netcdf(path)` saves it (h5netcdf)."""
    import arviz as az

    post = dict(res.posterior or {})
    if not post:
        raise ValueError("the fit has no posterior draws; fit with fit_svi (guide 'normal' or 'lowrank')")
    q = res.W_t.shape[1]
    coords = {"spot": list(map(str, res.obs_names)), "gene": list(map(str, res.genes)),
              "factor": np.arange(q), "domain": list(map(str, res.names)), "factor_": np.arange(q)}
    params = {k: v for k, v in sites.from_sites(post)._asdict().items() if v is not None}
    data = {k: np.asarray(params.get(k, v))[None] for k, v in post.items()}  # one chain
    log_lik = None if res.spot_loglik is None else {sites.X: np.asarray(res.spot_loglik)[None]}
    idata = az.from_dict(posterior=data, log_likelihood=log_lik, coords=coords,
                         dims={k: list(v) for k, v in sites.DIMS.items() if k in data} | {sites.X: ["spot"]},
                         attrs={"model": str(res.settings.get("model", "")),
                                "guide": str(res.settings.get("guide", ""))})
    import xarray as xr

    spots = xr.Dataset(
        {"proba": (("spot", "domain"), res.proba), "maxprob": (("spot",), res.proba.max(1)),
         "entropy": (("spot",), entropy(res.proba)), "domain_map": (("spot",), res.labels)},
        coords={"spot": coords["spot"], "domain": coords["domain"]})
    idata.add_groups(spots=spots)
    return idata

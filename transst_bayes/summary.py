"""Posterior summaries of a fit: spots, marker genes, transfer-breaking genes, label alignment,
ArviZ InferenceData. fit_svi fits carry posterior draws; for fit_em fits the marker intervals
come from the domain means' conditional posterior given the rest of the fit (`em_mean_draws`).

Plain functions over a TransSTResult returning pandas DataFrames / numpy arrays.
"""

from __future__ import annotations


import numpy as np

from . import validate as V
from .models import sites
from .metrics import align_labels
from .result import TransSTResult, entropy
from . import variants as VR


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


EM_DRAWS = 400  # draws of the domain means for the marker intervals of an EM fit


def em_mean_draws(res: TransSTResult, n_draws: int = EM_DRAWS, seed: int = 0) -> np.ndarray:
    """Draws (S, K, q) of the domain means from their posterior given the rest of an EM fit.

    With Sigma_k, the loadings, the noise and the domain probabilities fixed at the fit's values,
    mu_k is Gaussian (conjugate to its prior N(m_k, s_k^2 I)): mean the fit's mu_k (its MAP given
    the rest), precision N_k w A_k + I / s_k^2, with N_k the domain's expected number of spots,
    w the fit's likelihood power and A_k = Sigma_k^-1 for the two-stage variant (the factor
    scores are the data) or W^T (W Sigma_k W^T + Psi)^-1 W for the joint one (z integrated out;
    Woodbury). s_k is kappa for a domain anchored to a source class, else the free prior's
    scale. The uncertainty of Sigma_k, the loadings, beta and the labels is left out: these
    intervals are narrower than a full posterior's (fit_svi)."""
    from .priors import MU_SCALE

    mu = np.asarray(res.mu, np.float64)
    Sigma = np.asarray(res.Sigma, np.float64)
    K, q = mu.shape
    N = np.asarray(res.proba, np.float64).sum(axis=0)
    # the power on the expression likelihood the fit used (0.25 beside the classifier's term)
    used = (res.info or {}).get("classifier", {}).get("weight")
    weight = float(used if used is not None else res.settings.get("weight") or 1.0)
    eye = np.eye(q)
    variant = res.settings.get("variant_used")
    if variant in VR.VARIANTS and not VR.get(variant).on_scores:  # the factors integrated out
        W = np.asarray(res.W_t, np.float64)
        M = W.T @ (W / np.asarray(res.psi, np.float64)[:, None])  # W^T Psi^-1 W
        A = np.stack([M - M @ np.linalg.solve(np.linalg.inv(S) + M, M) for S in Sigma])
    else:
        A = np.linalg.inv(Sigma)
    classes = set(map(str, res.source_classes or ()))
    anchored = np.array([str(n) in classes for n in res.names]) & (res.kappa is not None)
    s2 = np.where(anchored, (res.kappa or 0.0) ** 2, MU_SCALE**2)
    prec = weight * N[:, None, None] * A + eye[None] / np.maximum(s2, 1e-12)[:, None, None]
    prec = 0.5 * (prec + np.swapaxes(prec, 1, 2))
    # x = L^-T e with prec = L L^T has covariance prec^-1
    L = np.linalg.cholesky(prec)
    e = np.random.default_rng(seed).standard_normal((n_draws, K, q))
    dev = np.linalg.solve(np.swapaxes(L, 1, 2)[None], e[..., None])[..., 0]
    return mu[None] + dev


def _draws(res: TransSTResult):
    """Posterior draws of W (S, p, q) and mu (S, K, q): an SVI fit's, or for a fit without a
    posterior (EM) the fitted loadings with draws of mu from its conditional posterior
    (`em_mean_draws`)."""
    post = res.posterior or {}
    mu = post[sites.MU] if sites.MU in post else em_mean_draws(res) if not post else res.mu[None]
    return _loading_draws(res), np.asarray(mu, np.float64)


def _loading_draws(res: TransSTResult) -> np.ndarray:
    """Posterior draws of W (S, p, q); the fitted loadings (S = 1) where they are not a site."""
    return np.asarray((res.posterior or {}).get(sites.W, res.W_t[None]), np.float64)


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
    the contrast (largest first); `n_top` keeps the top rows per domain. SVI fits: over the
    posterior draws; EM fits: over draws of the domain means from their conditional posterior
    given the fit's covariances, loadings and labels (`em_mean_draws`; narrower than a full
    posterior). The column `posterior` says which.

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
    out["posterior"] = str(res.settings.get("method", "svi")) if res.posterior else "em_conditional"
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
    W = _loading_draws(res)
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
    """ArviZ InferenceData: posterior (one chain; fit_mcmc's chains) of the global sites with labelled dims
    (gene, factor, domain); a log_likelihood group with the per-spot log-likelihood ("x", dim
    spot) for WAIC / PSIS-LOO; a "spots" group with the domain probabilities (spot, domain),
    max probability, entropy and MAP domain. `idata.to_netcdf(path)` saves it (h5netcdf)."""
    import arviz as az

    post = dict(res.posterior or {})
    if not post:
        raise ValueError("the fit has no posterior draws; fit with fit_svi (guide 'normal' or 'lowrank') "
                         "or fit_mcmc")
    q = res.W_t.shape[1]
    coords = {"spot": list(map(str, res.obs_names)), "gene": list(map(str, res.genes)),
              "factor": np.arange(q), "domain": list(map(str, res.names)), "factor_": np.arange(q)}
    params = {k: v for k, v in sites.from_sites(post)._asdict().items() if v is not None}
    chains = int((res.info.get("mcmc") or {}).get("num_chains", 1))  # fit_mcmc: chain by chain

    def by_chain(a):
        a = np.asarray(a)
        return a.reshape((chains, a.shape[0] // chains) + a.shape[1:])

    data = {k: by_chain(params.get(k, v)) for k, v in post.items()}
    log_lik = None if res.spot_loglik is None else {sites.X: by_chain(res.spot_loglik)}
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

"""The MCMC path (`fit.fit_mcmc`): the TransST models of `transst_bayes.models` sampled by NUTS.

The same model, set-up and read-out as the SVI path (`runner.model_setup`, `draw_terms`,
`assemble_posterior`); only the inference differs: NUTS over the model's continuous sites
(domain means and covariances, beta, and kappa, psi or the loadings where the model samples
them), several chains started from the EM fit with a little noise, each spot's domain summed out
under the mean-field Potts field of the EM fit's responsibilities (the field is data here, not
refreshed: it is the approximation the SVI path makes too, with its field fixed at the warm
start).

Label switching: the field (and, with a labeled source, the anchoring of each domain to its
source class) breaks the symmetry between domains, so the domains keep their identity across
chains; a chain that settled elsewhere shows in R-hat and in `chain_agreement` (the share of spots
whose most probable domain under that chain's draws is the pooled draws' one).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.handlers import seed, substitute, trace
from numpyro.infer import MCMC, NUTS, init_to_value
from numpyro.infer.util import unconstrain_fn

from .. import shard
from ..job import EMRun
from ..models import sites
from ..settings import MCMCSettings
from .runner import assemble_posterior, draw_terms, model_setup, point_terms

RHAT_OK = 1.01  # the threshold of Vehtari et al. (2021)


def run_mcmc(prep, out: EMRun, model, opts: dict, st: MCMCSettings, em, ds, mode: str, criterion: str,
             progress_bar: bool) -> tuple:
    """NUTS at each K of the EM run `out`, then the result; (result, the chosen K's per-draw
    domain log-probabilities (S, n, K), S = chains x draws, for `fit.finish`)."""
    t0 = time.perf_counter()
    lay = shard.layout(prep.X.shape[0], None)
    fits = {K: _mcmc_one(prep, out, K, model, opts, st, mode, progress_bar, lay) for K in out.Ks}
    out.timings["mcmc"] = time.perf_counter() - t0
    ta = time.perf_counter()
    res = assemble_posterior(prep, out, fits, out.Ks, st, em, ds, mode, criterion, opts, model, method="mcmc")
    res.info["timings"]["assemble"] = time.perf_counter() - ta
    return res, fits[res.n_domains]["dlp"]


def _latent_init(ms) -> dict:
    """The EM fit's values of the model's own latent sites (`ms.init` also holds values that
    other models of the family sample, e.g. the loadings; NUTS must not carry those as
    dimensions of its state)."""
    tr = trace(seed(substitute(ms.model, data=ms.init), 0)).get_trace(ms.data)
    latent = {k for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}
    return {k: v for k, v in ms.init.items() if k in latent}


def _chain_starts(ms, init: dict, key, st: MCMCSettings) -> dict:
    """Each chain's unconstrained starting values: the EM fit's, plus N(0, init_jitter^2) noise."""
    u = unconstrain_fn(ms.model, (ms.data,), {}, init)
    keys = jax.random.split(key, len(u))
    return {k: v[None] + st.init_jitter * jax.random.normal(kk, (st.num_chains,) + jnp.shape(v), jnp.result_type(v))
            for (k, v), kk in zip(sorted(u.items()), keys)}


def _mcmc_one(prep, out, K, model, opts, st: MCMCSettings, mode, progress_bar, lay):
    ms = model_setup(prep, out, K, model, opts, st.n_factors, st.dtype, lay, mode)
    init = _latent_init(ms)
    kernel = NUTS(ms.model, target_accept_prob=st.target_accept, max_tree_depth=st.max_tree_depth,
                  init_strategy=init_to_value(values=init))
    mcmc = MCMC(kernel, num_warmup=st.num_warmup, num_samples=st.num_samples, num_chains=st.num_chains,
                chain_method=st.chain_method, progress_bar=progress_bar)
    key = jax.random.fold_in(jax.random.PRNGKey(st.seed), K)
    k_init, k_run = jax.random.split(key)
    t0 = time.perf_counter()
    mcmc.run(k_run, ms.data, init_params=_chain_starts(ms, init, k_init, st),
             extra_fields=("diverging", "num_steps", "potential_energy"))
    seconds = time.perf_counter() - t0
    chains = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items() if k != sites.X}
    extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    C, S = st.num_chains, st.num_samples
    samples = {k: v.reshape((C * S,) + v.shape[2:]) for k, v in chains.items()}
    dlp, ll = draw_terms(ms, samples, ms.data, progress_bar, K)
    mean = {k: jnp.asarray(v.mean(0)) for k, v in samples.items()}
    point_ll, point_beta = point_terms(ms, mean, ms.data)
    diag = _diagnostics(chains, extra, np.asarray(dlp).reshape((C, S) + dlp.shape[1:]), seconds, st)
    row = {"rhat_max": diag["rhat_max"], "ess_bulk_min": diag["ess_min"], "divergences": diag["divergences"]}
    return {"samples": samples, "dlp": dlp, "spot_loglik": ll, "data": ms.data,
            "losses": extra["potential_energy"].reshape(-1), "converged": diag["rhat_max"] <= RHAT_OK,
            "n_rounds": 0, "row": row, "point_loglik": point_ll, "point_beta": point_beta,
            "info": {"mcmc": diag}}


def _diagnostics(chains: dict, extra: dict, dlp: np.ndarray, seconds: float, st: MCMCSettings) -> dict:
    """Per site: the largest split R-hat and the smallest bulk ESS over its elements (NumPyro's
    estimators); divergent transitions, mean tree size, and each chain's agreement with the pooled
    most probable domains."""
    rhat, ess = {}, {}
    for k, v in chains.items():
        v = v.astype(np.float64).reshape(v.shape[:2] + (-1,))
        if st.num_chains > 1:
            r = np.asarray(split_gelman_rubin(v))
            rhat[k] = float(np.nanmax(r)) if np.isfinite(r).any() else float("nan")
        e = np.asarray(effective_sample_size(v))
        ess[k] = float(np.nanmin(e)) if np.isfinite(e).any() else float("nan")
    proba = np.exp(dlp - np.logaddexp.reduce(dlp, axis=-1, keepdims=True))  # (C, S, n, K)
    pooled = proba.mean(axis=(0, 1)).argmax(-1)
    agree = [float(np.mean(proba[c].mean(0).argmax(-1) == pooled)) for c in range(proba.shape[0])]
    finite = [r for r in rhat.values() if np.isfinite(r)]
    return {"num_chains": st.num_chains, "num_samples": st.num_samples, "num_warmup": st.num_warmup,
            "chain_method": st.chain_method, "seconds": seconds,
            "rhat": rhat, "ess_bulk": ess,
            "rhat_max": max(finite) if finite else float("nan"),
            "ess_min": min(ess.values()) if ess else float("nan"),
            "divergences": int(np.sum(extra["diverging"])),
            "mean_tree_size": float(np.mean(extra["num_steps"])),
            "chain_agreement": agree}

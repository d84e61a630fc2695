"""fit_svi's guides: NumPyro's AutoDelta, AutoNormal and AutoLowRankMultivariateNormal with a
set-up that costs one trace of the model.

NumPyro's autoguide set-up (`initialize_model`) checks the initial values by evaluating the
model's potential energy and its gradient eagerly, op by op; on a CPU every primitive is then
compiled on its own for the data's shapes, 10-20 s for a TransST model each time p, K or n
changes. fit_svi's initial values come from the EM solution and its first SVI round stops on a
non-finite loss, so these guides skip that check: they trace the model once with the initial
values substituted (distribution argument checks off), take the unconstraining transforms from
that trace and set the attributes AutoGuide's own set-up sets. A model outside the plain case
(param sites, discrete latent sites, supports that depend on other sites) gets NumPyro's set-up
unchanged. tests/paths/test_svi.py checks that both set-ups give the same guide and SVI state.

Every use of NumPyro's internals is in this file: the guides' set-up, their point estimates
(`point_estimate`: the private `_init_locs` / `_unpack_latent`) and a model's per-spot domain
terms read from its trace (`spot_terms`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer import autoguide
from numpyro.infer.util import get_potential_fn, transform_fn


def _plain_transforms(tr: dict):
    """(inverse transforms, constrained values, replay) of the latent sites, or None when the
    trace needs NumPyro's general set-up. replay: constraining must re-run the model (there are
    deterministic sites, or a support whose bounds are arrays), as NumPyro decides it."""
    inv, values, replay = {}, {}, False
    for name, site in tr.items():
        if site["type"] == "deterministic":
            replay = True
        elif site["type"] == "param":
            return None
        elif site["type"] == "sample" and not site["is_observed"]:
            support = site["fn"].support
            if support.is_discrete or constraints.is_dependent(support):
                return None
            bounds = [getattr(support, a, 0.0) for a in ("lower_bound", "upper_bound")]
            replay = replay or not all(isinstance(b, (int, float)) for b in bounds)
            inv[name] = biject_to(support)
            values[name] = site["value"]
    return inv, values, replay


class _TraceSetup(autoguide.AutoGuide):
    """Mixin (listed after the NumPyro guide): AutoGuide._setup_prototype from one model trace."""

    def setup(self, rng_key, *args, **kwargs):
        """Set the guide up for the model called with `args`, `kwargs` (what its first call
        would do), so that `SVI.init` can then run under `jax.jit`."""
        with handlers.seed(rng_seed=rng_key):
            self._setup_prototype(*args, **kwargs)

    def _setup_prototype(self, *args, **kwargs):
        rng_key = numpyro.prng_key()
        with handlers.block(), numpyro.validation_enabled(False):
            model = handlers.substitute(handlers.seed(self.model, rng_key), substitute_fn=self.init_loc_fn)
            tr = handlers.trace(model).get_trace(*args, **kwargs)
            plain = _plain_transforms(tr)
            if plain is not None:
                inv, values, replay = plain
                init = transform_fn(inv, values, invert=True)
        if plain is None:
            return super()._setup_prototype(*args, **kwargs)
        self.prototype_trace = tr
        self._potential_fn_gen, postprocess_gen = get_potential_fn(
            handlers.seed(self.model, 0), inv, replay_model=replay, dynamic_args=True,
            model_args=args, model_kwargs=kwargs)
        self._potential_fn = self._potential_fn_gen(*args, **kwargs)
        self._postprocess_fn = handlers.seed(postprocess_gen(*args, **kwargs), rng_seed=0)
        self._init_locs = init
        self._prototype_frames = {}
        self._prototype_plate_sizes = {}
        for name, site in tr.items():
            if site["type"] == "plate":
                self._prototype_frame_full_sizes[name] = site["args"][0]
            elif site["type"] == "sample" and not site["is_observed"]:
                for frame in site["cond_indep_stack"]:
                    seen = self._prototype_frames.setdefault(frame.name, frame)
                    if seen != frame:
                        raise ValueError(f"the plate {frame.name!r} has inconsistent dim or size in the model")


class AutoDelta(autoguide.AutoDelta, _TraceSetup):
    """numpyro.infer.autoguide.AutoDelta with the one-trace set-up."""


class AutoNormal(autoguide.AutoNormal, _TraceSetup):
    """numpyro.infer.autoguide.AutoNormal with the one-trace set-up."""


class AutoLowRankMultivariateNormal(autoguide.AutoLowRankMultivariateNormal, _TraceSetup):
    """numpyro.infer.autoguide.AutoLowRankMultivariateNormal with the one-trace set-up."""


GUIDES = {"delta": AutoDelta, "normal": AutoNormal, "lowrank": AutoLowRankMultivariateNormal}


def _unmasked(fn):
    """The distribution under any masks (`numpyro.handlers.mask` wraps a site's distribution)."""
    from numpyro.distributions import MaskedDistribution

    while isinstance(fn, MaskedDistribution):
        fn = fn.base_dist
    return fn


def _mixture_site(tr: dict):
    """The model's DomainMixture site and its distribution."""
    from ..models.likelihood import DomainMixture

    found = [s for s in tr.values() if s["type"] == "sample" and isinstance(_unmasked(s["fn"]), DomainMixture)]
    if len(found) != 1:
        raise ValueError(
            "the model must have exactly one DomainMixture site (the per-spot domain label summed "
            f"out), found {len(found)}; build the spot likelihood with models.DomainMixture"
        )
    return found[0], _unmasked(found[0]["fn"])


def spot_terms(model, data, values: dict):
    """Per-spot log p(y = k, . | globals) (n, K) and per-spot log-likelihood of the observed
    sites (n,), with every latent site fixed to `values`."""
    tr = handlers.trace(handlers.substitute(handlers.seed(model, 0), data=values)).get_trace(data)
    site, mixture = _mixture_site(tr)
    dlp = mixture.domain_log_prob(site["value"])
    ll = jnp.zeros(dlp.shape[:-1], dlp.dtype)
    for s in tr.values():
        if s["type"] == "sample" and s["is_observed"]:
            lp = s["fn"].log_prob(s["value"])
            ll = ll + lp.reshape(lp.shape[: ll.ndim]) if lp.ndim >= ll.ndim else ll + lp
    return dlp, ll


def point_estimate(guide, params, full_model, data) -> dict:
    """The guide's point estimate (median / MAP) of every latent site, constrained by replaying
    the full-data model (the guide's own replay keeps the minibatch size of its set-up)."""
    from numpyro.infer.util import constrain_fn

    pre = guide.prefix
    if isinstance(guide, autoguide.AutoDelta):
        return {k: params[f"{k}_{pre}_loc"] for k in guide._init_locs}
    if isinstance(guide, autoguide.AutoNormal):
        u = {k: params[f"{k}_{pre}_loc"] for k in guide._init_locs}
    else:
        u = guide._unpack_latent(params[f"{pre}_loc"])
    return constrain_fn(full_model, (data,), {}, u)

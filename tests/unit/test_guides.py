"""transst_bayes.svi.guides: the one-trace set-up gives the guide and SVI state NumPyro's own set-up gives."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import SVI, Trace_ELBO, init_to_value
from numpyro.infer import autoguide as ng

from transst_bayes.svi import guides as G
from transst_bayes import models as M

N, P, Q, K = 24, 10, 3, 2
PAIRS = [(ng.AutoDelta, G.AutoDelta), (ng.AutoNormal, G.AutoNormal),
         (ng.AutoLowRankMultivariateNormal, G.AutoLowRankMultivariateNormal)]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    W_s = jnp.asarray(rng.normal(size=(P, Q)), jnp.float32)
    X = jnp.asarray(rng.normal(size=(N, P)), jnp.float32)
    field = jnp.asarray(rng.uniform(0, 4, size=(N, K)), jnp.float32)
    return M.SpotData(X=X, field=field, W_s=W_s)


def _values(data, horseshoe=False):
    rng = np.random.default_rng(1)
    L = np.linalg.cholesky(np.array([[1.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 1.0]]))
    v = {"W": data.W_s + 0.1, "psi": jnp.full((P, 1), 0.7), "mu": jnp.asarray(rng.normal(size=(K, Q))),
         "Sigma": jnp.broadcast_to(jnp.asarray(1.69 * L @ L.T), (K, 1, Q, Q)),
         "beta": jnp.asarray(0.8), "tau": jnp.asarray(0.4)}
    if horseshoe:
        v["phi"] = jnp.full((P, 1), 1.5)
    return {k: jnp.asarray(x, jnp.float32) for k, x in v.items()}


def _with_deterministic(data, K, n_factors, batch_size=None):
    extra = numpyro.sample("extra", dist.HalfNormal(1.0))
    numpyro.deterministic("extra2", extra**2)
    M.transst_model(data, K, n_factors, batch_size=batch_size)


def _with_param(data, K, n_factors, batch_size=None):
    numpyro.param("offset", jnp.zeros(()))
    M.transst_model(data, K, n_factors, batch_size=batch_size)


MODELS = {
    "global": (partial(M.transst_model, K=K, n_factors=Q), False),
    "horseshoe": (partial(M.transst_model, K=K, n_factors=Q, form="horseshoe"), True),
    "no_transfer": (partial(M.no_transfer_model, K=K, n_factors=Q), False),
    "deterministic": (partial(_with_deterministic, K=K, n_factors=Q), False),
    "param_site": (partial(_with_param, K=K, n_factors=Q), False),  # NumPyro's set-up is used
}


def _state(guide_cls, model, data, values, batch_size=None):
    guide = guide_cls(model, init_loc_fn=init_to_value(values=values))
    svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(3), data, batch_size=batch_size)
    return guide, svi, state


CASES = [("global", 0), ("global", 1), ("global", 2), ("horseshoe", 1), ("no_transfer", 2),
         ("deterministic", 1), ("param_site", 1)]


@pytest.mark.parametrize("name,guide", [pytest.param(m, g, marks=[pytest.mark.slow] if (m, g) == ("global", 0) else [])
                                        for m, g in CASES],
                         ids=[f"{m}-{['delta', 'normal', 'lowrank'][g]}" for m, g in CASES])
@pytest.mark.slow
def test_one_trace_setup_equals_numpyro_setup(data, name, guide):
    model, horseshoe = MODELS[name]
    pair = PAIRS[guide]
    values = _values(data, horseshoe)
    if name == "no_transfer":
        values.pop("tau")
    if name == "deterministic":
        values["extra"] = jnp.asarray(0.5, jnp.float32)
    theirs, ours = (_state(cls, model, data, values) for cls in pair)
    p_theirs, p_ours = theirs[1].get_params(theirs[2]), ours[1].get_params(ours[2])
    assert sorted(p_theirs) == sorted(p_ours)
    for k in p_theirs:
        np.testing.assert_allclose(p_ours[k], p_theirs[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # the same posterior draws from the same parameters and key, and the same loss
    key = jax.random.PRNGKey(5)
    d_theirs = theirs[0].sample_posterior(key, p_theirs, data, sample_shape=(4,))
    d_ours = ours[0].sample_posterior(key, p_theirs, data, sample_shape=(4,))
    assert sorted(d_theirs) == sorted(d_ours)
    for k in d_theirs:
        np.testing.assert_allclose(d_ours[k], d_theirs[k], rtol=1e-5, atol=1e-6, err_msg=k)
    l_theirs = theirs[1].evaluate(theirs[2], data)
    l_ours = ours[1].evaluate(theirs[2], data)
    np.testing.assert_allclose(l_ours, l_theirs, rtol=1e-5)
    assert ours[0]._prototype_frames == theirs[0]._prototype_frames
    assert ours[0]._prototype_frame_full_sizes == theirs[0]._prototype_frame_full_sizes


@pytest.mark.parametrize("pair", PAIRS[:2], ids=["delta", "normal"])
def test_one_trace_setup_on_a_minibatch(data, pair):
    """Set up on a minibatch of spots (as fit_svi does for large data): full plate sizes kept."""
    model, _ = MODELS["global"]
    values = _values(data)
    theirs, ours = (_state(cls, model, data, values, batch_size=8) for cls in pair)
    assert ours[0]._prototype_frame_full_sizes == theirs[0]._prototype_frame_full_sizes == \
        {"gene": P, "factor": Q, "domain": K, "spot": N}
    p_theirs, p_ours = theirs[1].get_params(theirs[2]), ours[1].get_params(ours[2])
    for k in p_theirs:
        np.testing.assert_allclose(p_ours[k], p_theirs[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_explicit_z_local_latent_sites(data):
    """Local latent sites (z per spot) are set up alike; AutoNormal repeats z to the full plate."""
    model = partial(M.explicit_z_model, K=K, n_factors=Q)
    values = _values(data)
    values["z"] = jnp.zeros((N, Q), jnp.float32)
    theirs, ours = (_state(cls, model, data, values) for cls in PAIRS[1])
    p_theirs, p_ours = theirs[1].get_params(theirs[2]), ours[1].get_params(ours[2])
    assert p_ours["z_auto_loc"].shape == (N, Q)
    for k in p_theirs:
        np.testing.assert_allclose(p_ours[k], p_theirs[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_support_set_by_another_site_matches_numpyro():
    """A support whose bound is another latent value: constraining replays the model, as in
    NumPyro's set-up (equal draws from equal parameters)."""
    def model():
        x = numpyro.sample("x", dist.LogNormal(0.0, 1.0))
        numpyro.sample("y", dist.Uniform(0.0, x))

    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace()
    assert G._plain_transforms(tr)[2] is True  # replay
    draws = []
    for cls in PAIRS[1]:
        guide = cls(model, init_loc_fn=init_to_value(values={"x": 1.0, "y": 0.5}))
        svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
        params = dict(svi.get_params(svi.init(jax.random.PRNGKey(0))), x_auto_scale=jnp.asarray(2.0))
        draws.append(guide.sample_posterior(jax.random.PRNGKey(1), params, sample_shape=(50,)))
    for k in draws[0]:
        np.testing.assert_allclose(draws[1][k], draws[0][k], rtol=1e-6, err_msg=k)


def test_bad_initial_value_shows_in_the_loss(data):
    """No finiteness check at set-up: a non-finite initial value gives a non-finite loss, which
    fit_svi turns into an error after its first round."""
    model, _ = MODELS["global"]
    values = _values(data)
    values["psi"] = jnp.full((P, 1), jnp.nan)
    with numpyro.validation_enabled(False):  # as fit_svi sets the guide up (its steps are jitted)
        _, svi, state = _state(G.AutoNormal, model, data, values)
        assert not np.isfinite(float(svi.evaluate(state, data)))

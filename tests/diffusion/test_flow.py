"""The rectified-flow objective: noising, shift schedule, timestep samplers, weights, loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camclone_jax.diffusion import flow


def test_noising_endpoints_and_target():
    x, z = jnp.ones((2, 3, 4, 4, 2)), jnp.full((2, 3, 4, 4, 2), -2.0)
    np.testing.assert_array_equal(np.asarray(flow.add_noise(x, z, jnp.array([0.0, 1.0])))[:, 0, 0, 0, 0],
                                  [1.0, -2.0])
    np.testing.assert_allclose(float(flow.add_noise(x, z, jnp.array([0.25, 0.25]))[0, 0, 0, 0, 0]), 0.25)
    assert float(flow.flow_loss(flow.velocity_target(x, z), x, z)) == 0.0
    np.testing.assert_allclose(float(flow.flow_loss(jnp.zeros_like(x), x, z)), 9.0)
    np.testing.assert_allclose(float(flow.flow_loss(jnp.zeros_like(x), x, z, jnp.array([1.0, 0.0]))), 4.5)
    with pytest.raises(ValueError, match="flow_loss shapes differ"):
        flow.flow_loss(jnp.zeros((2, 3)), x, z)


def test_shift_matches_diffusers_flow_match_scheduler():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)
    sched.set_timesteps(50)
    sigmas = sched.sigmas.numpy()[:-1]  # the last entry is the terminal 0
    # diffusers spaces the grid between the training schedule's extremes, which are already
    # shifted (sigma_min = sigma(1/1000)), then shifts the grid.
    unshifted = np.linspace(1.0, float(flow.shift_sigma(1.0 / 1000, 5.0)), 50)
    np.testing.assert_allclose(np.asarray(flow.shift_sigma(unshifted, 5.0)), sigmas, atol=1e-6)
    np.testing.assert_allclose(np.asarray(flow.unshift_sigma(flow.shift_sigma(unshifted, 5.0), 5.0)),
                               unshifted, atol=1e-6)


@pytest.mark.parametrize("method", flow.SAMPLERS)
def test_timestep_samplers(method):
    t, u = flow.sample_timesteps(jax.random.PRNGKey(0), 4096, method, shift=5.0)
    assert t.shape == u.shape == (4096,)
    assert float(t.min()) > 0.0 and float(t.max()) < 1.0
    t2, _ = flow.sample_timesteps(jax.random.PRNGKey(0), 4096, method, shift=5.0)
    np.testing.assert_array_equal(np.asarray(t), np.asarray(t2))
    if method == "shifted":  # shift 5 pushes mass to high noise: median sigma(0.5) = 5/6
        assert abs(float(jnp.median(t)) - 5 / 6) < 0.02
    if method == "uniform":
        assert abs(float(t.mean()) - 0.5) < 0.02
    with pytest.raises(ValueError, match="unknown timestep sampler"):
        flow.sample_timesteps(jax.random.PRNGKey(0), 2, "cosine")


def test_bell_weight_mean_one_peak_in_the_middle():
    grid = jnp.arange(1000) / 1000
    w = flow.bell_weight(grid)
    np.testing.assert_allclose(float(w.mean()), 1.0, rtol=1e-5)
    assert int(jnp.argmax(w)) == 500 and float(w.min()) == 0.0

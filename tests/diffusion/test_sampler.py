"""Sampler: schedules and solvers vs diffusers, an analytic Gaussian flow, guidance, the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camclone_jax.diffusion import sampler

MU, SD = 0.7, 0.5  # target N(MU, SD^2); noise N(0, 1)


def gaussian_velocity(x, sigma):
    """The exact marginal velocity E[z - x0 | x_sigma = x] of x_sigma = (1 - sigma) x0 + sigma z.

    Its flow maps the noise z to MU + SD z, so a sample started at z must end there.
    """
    a = 1.0 - sigma
    var = a * a * SD * SD + sigma * sigma
    return (sigma - a * SD * SD) * (x - a * MU) / var - MU


def _run(noise, schedule, **kw):
    return np.asarray(sampler.sample(lambda x, t, s: gaussian_velocity(x, s), jnp.asarray(noise),
                                     schedule, **kw))


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("steps,shift", [(50, 5.0), (20, 3.0), (1, 5.0), (7, 1.0)])
def test_schedules_match_diffusers(steps, shift):
    diffusers = pytest.importorskip("diffusers")
    euler = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    euler.set_timesteps(steps)
    ours = sampler.make_schedule(steps, shift, "diffusers")
    np.testing.assert_allclose(ours.sigmas, euler.sigmas.numpy(), atol=1e-7, rtol=0)
    np.testing.assert_allclose(ours.timesteps, euler.timesteps.numpy(), atol=1e-4, rtol=0)

    unipc = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction",
                                              use_flow_sigmas=True, flow_shift=shift)
    unipc.set_timesteps(steps)
    ours = sampler.make_schedule(steps, shift, "diffusers_unipc")
    np.testing.assert_allclose(ours.sigmas, unipc.sigmas.numpy(), atol=1e-7, rtol=0)
    np.testing.assert_array_equal(ours.timesteps, unipc.timesteps.numpy().astype(np.float32))


def test_release_schedule_values():
    s = sampler.make_schedule(2, 5.0, "release")
    np.testing.assert_allclose(s.sigmas, [1.0, 2.5 / 3.0, 0.0], rtol=1e-6)  # u = 1, 1/2
    np.testing.assert_allclose(s.timesteps, [1000.0, 2500.0 / 3.0], rtol=1e-6)
    s = sampler.make_schedule(50, 5.0)
    assert s.num_steps == 50 and s.sigmas[0] == 1.0 and s.sigmas[-1] == 0.0
    assert np.all(np.diff(s.sigmas) < 0)
    np.testing.assert_allclose(s.sigmas[:-1], sampler.shift_sigma(np.linspace(1, 0, 51)[:-1], 5.0),
                               rtol=1e-6)


def test_schedule_and_table_errors():
    for kwargs, match in ((dict(num_steps=0), "positive integer"),
                          (dict(num_steps=2.5), "positive"),
                          (dict(num_steps=4, shift=0.0), "shift must be positive"),
                          (dict(num_steps=4, spacing="karras"), "unknown schedule spacing")):
        with pytest.raises(ValueError, match=match):
            sampler.make_schedule(**kwargs)
    s = sampler.make_schedule(4)
    with pytest.raises(ValueError, match="unknown solver"):
        sampler.solver_tables(s, "heun")
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        sampler.solver_tables(s, "unipc", order=4)
    with pytest.raises(ValueError, match="unknown UniPC variant"):
        sampler.solver_tables(s, "unipc", variant="bh3")


# ------------------------------------------------------------------------ solvers vs diffusers
def _diffusers_trajectory(scheduler, x0):
    torch = pytest.importorskip("torch")
    x, states = torch.from_numpy(x0.copy()), []
    for i, t in enumerate(scheduler.timesteps):
        v = gaussian_velocity(x, float(scheduler.sigmas[i]))
        x = scheduler.step(v, t, x).prev_sample
        states.append(x.numpy())
    return np.stack(states)  # [N, ...]


def _our_trajectory(x0, schedule, solver, order=2, variant="bh2"):
    tables = sampler.solver_tables(schedule, solver, order, variant)
    state, states = sampler.init_state(jnp.asarray(x0), solver, order), []
    for i in range(schedule.num_steps):
        v = gaussian_velocity(state["x"], tables["sigma"][i])
        state = sampler.solver_step(state, tables, i, v, solver)
        states.append(np.asarray(state["x"]))
    return np.stack(states)  # [N, ...]


def test_euler_matches_diffusers_flow_match_euler():
    diffusers = pytest.importorskip("diffusers")
    x0 = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(12)
    want = _diffusers_trajectory(sched, x0)
    schedule = sampler.make_schedule(12, 3.0, "diffusers")
    np.testing.assert_allclose(_our_trajectory(x0, schedule, "euler"), want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(_run(x0, schedule, solver="euler"), want[-1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("order,variant,steps", [(1, "bh2", 6), (2, "bh2", 12), (3, "bh2", 12),
                                                 (2, "bh1", 8)])
def test_unipc_matches_diffusers_unipc(order, variant, steps):
    diffusers = pytest.importorskip("diffusers")
    x0 = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    sched = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction",
                                              use_flow_sigmas=True, flow_shift=3.0,
                                              solver_order=order, solver_type=variant)
    sched.set_timesteps(steps)
    want = _diffusers_trajectory(sched, x0)
    schedule = sampler.make_schedule(steps, 3.0, "diffusers_unipc")
    got = _our_trajectory(x0, schedule, "unipc", order, variant)
    if variant == "bh1":
        # diffusers' bh1 computes inf * 0 on the step to sigma = 0 (B(h) = h = -inf there) and
        # returns NaN; ours takes that step as the limit (the data prediction). Compare the rest.
        assert np.isnan(want[-1]).all() and np.isfinite(got[-1]).all()
        got, want = got[:-1], want[:-1]
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
    if variant == "bh2":
        final = _run(x0, schedule, solver="unipc", order=order, variant=variant)  # the fori_loop
        np.testing.assert_allclose(final, want[-1], atol=2e-6, rtol=0)


# ---------------------------------------------------------------------- the analytic Gaussian
def test_euler_reaches_the_gaussian_target():
    z = np.random.default_rng(2).standard_normal((4, 5000)).astype(np.float32)
    x = _run(z, sampler.make_schedule(100, 1.0), solver="euler")
    assert abs(x.mean() - MU) < 0.01 and abs(x.std() / SD - 1) < 0.02
    np.testing.assert_allclose(x, MU + SD * z, atol=0.05)  # pointwise: the flow's transport map
    # the release's shifted schedule reaches it too
    x = _run(z, sampler.make_schedule(200, 5.0), solver="euler")
    assert abs(x.mean() - MU) < 0.01 and abs(x.std() / SD - 1) < 0.03


def test_unipc_is_higher_order_than_euler():
    z = np.random.default_rng(3).standard_normal((2000,)).astype(np.float32)
    exact = MU + SD * z
    err = {}
    for solver, steps in (("euler", 20), ("euler", 40), ("unipc", 20), ("unipc", 40)):
        spacing = sampler.default_spacing(solver)
        x = _run(z, sampler.make_schedule(steps, 1.0, spacing), solver=solver)
        err[solver, steps] = np.abs(x - exact).max()
    assert err["euler", 40] < 0.6 * err["euler", 20]  # first order: halves
    assert err["unipc", 40] < 0.35 * err["unipc", 20]  # at least second order
    assert err["unipc", 20] < err["euler", 20] / 5 and err["unipc", 40] < 0.01
    x = _run(z, sampler.make_schedule(40, 1.0), solver="unipc")  # the release spacing (sigma_0 = 1)
    assert np.isfinite(x).all() and np.abs(x - exact).max() < 0.02


# ------------------------------------------------------------------------------- guidance
def test_cfg_scale_one_is_the_conditional_prediction():
    calls = []

    def model_fn(x, t, ctx):
        calls.append(x.shape[0])
        return x * ctx["w"] + t

    x = jnp.arange(6.0).reshape(2, 3)
    cond, uncond = {"w": jnp.full((2, 1), 2.0)}, {"w": jnp.full((2, 1), -1.0)}
    v_c = model_fn(x, 0.5, cond)
    calls.clear()
    out = sampler.guided_velocity(model_fn, x, 0.5, cond, uncond, 1.0)
    np.testing.assert_array_equal(out, v_c)
    assert calls == [2]  # one unbatched call: the unconditional half is skipped
    out = sampler.guided_velocity(model_fn, x, 0.5, cond, uncond, jnp.float32(1.0))  # traced scale
    np.testing.assert_allclose(out, v_c, rtol=1e-6)
    assert calls[-1] == 4  # [cond; uncond] as one batch
    out = sampler.guided_velocity(model_fn, x, 0.5, cond, uncond, 3.0)
    v_u = model_fn(x, 0.5, uncond)
    np.testing.assert_allclose(out, v_u + 3.0 * (v_c - v_u), rtol=1e-6)
    np.testing.assert_array_equal(sampler.guided_velocity(model_fn, x, 0.5, cond, None, 3.0), v_c)
    calls.clear()
    out = sampler.guided_velocity(model_fn, x, 0.5, cond, uncond, 3.0, batched=False)
    np.testing.assert_allclose(out, v_u + 3.0 * (v_c - v_u), rtol=1e-6)
    assert calls == [2, 2]  # sequential: two calls of the unbatched size


# ------------------------------------------------------------------------------ the loop
def test_loop_compiles_once_and_reports_progress():
    traces, seen = [], []

    @jax.jit
    def run(noise, tables):
        traces.append(1)
        return sampler.sample_loop(lambda x, t, s: gaussian_velocity(x, s), noise, tables,
                                   solver="unipc", progress=lambda d: seen.append(int(d)))

    for seed, shift in ((0, 5.0), (1, 3.0), (2, 1.0)):
        noise = jax.random.normal(jax.random.key(seed), (8,))
        tables = sampler.solver_tables(sampler.make_schedule(6, shift), "unipc")
        out = jax.block_until_ready(run(noise, tables))
        assert np.isfinite(np.asarray(out)).all()
    assert len(traces) == 1
    assert sorted(seen) == sorted(list(range(1, 7)) * 3)


def test_same_noise_same_result_and_replacement_pins_frames():
    noise = jax.random.normal(jax.random.key(0), (1, 3, 2, 2, 4))
    known = jnp.full(noise.shape, 0.25)
    mask = jnp.zeros((1, 3, 1, 1, 1)).at[:, 0].set(1.0)
    seen = []

    def velocity(x, t, s):
        seen.append(None)
        return x * 0.3 - 0.1

    schedule = sampler.make_schedule(5, 5.0)
    pin = sampler.Replacement(known, noise, mask)
    a = sampler.sample(velocity, noise, schedule, replacement=pin)
    b = sampler.sample(velocity, noise, schedule, replacement=pin)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:, 0], known[:, 0])  # pinned frame is the known latent
    free = sampler.sample(velocity, noise, schedule)
    np.testing.assert_allclose(a[:, 1:], free[:, 1:], rtol=1e-6)  # frame-wise model: rest untouched
    assert not np.allclose(free[:, 0], known[:, 0])

"""The training step: what trains, accumulation, sharded layouts, the non-finite guard."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from camclone_jax import sharding
from camclone_jax.data.codec import PixelCodec
from camclone_jax.diffusion import flow
from camclone_jax.models import DiT, DiTConfig
from camclone_jax.models import params as params_lib
from camclone_jax.training import optim
from camclone_jax.training import step as step_lib
from camclone_jax.utils import flatten_params

CFG = DiTConfig(dim=32, ffn_dim=64, num_layers=2, num_heads=2, in_channels=36, out_channels=16,
                text_dim=16, freq_dim=32, attention="xla")
RULES = [("self_attn", "train"), (".*", None)]
LAT = (3, 4, 6, 16)  # latent frames, h, w, channels


def make_batch(b, seed=0, text_len=4):
    rng = np.random.default_rng(seed)
    batch = {k: rng.standard_normal((b,) + LAT).astype(np.float32)
             for k in ("target", "camera_ref", "content_ref", "i2v_latents")}
    batch["task"] = (np.arange(b) % 2).astype(np.int32)  # I2V, V2V, ...
    batch["text_embedding"] = rng.standard_normal((b, text_len, 16)).astype(np.float32)
    return batch


def setup(step_cfg=step_lib.StepConfig(text_len=4), lr=1e-3, tx=None):
    params = params_lib.init_params(CFG, 0)
    labels = optim.label_params(params, RULES)
    trainable, frozen = step_lib.split_params(params, labels)
    tx = tx or optim.make_optimizer(trainable, RULES, lr)
    state = step_lib.init_state(trainable, tx, seed=0, ema=step_cfg.ema_decay > 0)
    step = step_lib.make_train_step(DiT(CFG), tx, step_cfg)
    return params, state, frozen, tx, step


def test_one_step_trains_exactly_self_attention():
    params, state, frozen, tx, step = setup()
    new, metrics = jax.jit(step)(state, frozen, make_batch(2))
    assert np.isfinite(metrics["loss"]) and metrics["finite"] == 1
    before = flatten_params(params)
    after = flatten_params(step_lib.merge_params(new["params"], frozen))
    assert set(after) == set(before)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    trainable = {k for k in before if "self_attn" in k}
    assert changed == trainable  # every self_attn param moved, nothing else did
    assert trainable and all("self_attn" in k for k in flatten_params(new["params"]))
    # No optimizer state for frozen params: Adam moments exist for the trainable leaves only.
    moments = [x for x in jax.tree_util.tree_leaves(new["opt_state"]) if x.ndim > 0]
    n_train = sum(v.size for v in flatten_params(new["params"]).values())
    assert sum(m.size for m in moments) == 2 * n_train
    assert int(new["step"]) == 1


def test_gradient_accumulation_equals_the_full_batch():
    batch = make_batch(4, seed=1)
    _, state, frozen, _, step1 = setup()
    _, _, _, _, step4 = setup(step_lib.StepConfig(text_len=4, accum_steps=4))
    full, m1 = jax.jit(step1)(state, frozen, batch)
    acc, m4 = jax.jit(step4)(state, frozen, batch)
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-4)
    # two compiled programs summing in another order: float32 last bits, not exact equality
    for a, b in zip(jax.tree_util.tree_leaves(full["params"]), jax.tree_util.tree_leaves(acc["params"])):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_nonfinite_loss_drops_the_update_but_advances_the_step():
    _, state, frozen, _, step = setup()
    batch = make_batch(2)
    batch["target"][0, 0, 0, 0, 0] = np.nan
    new, metrics = jax.jit(step)(state, frozen, batch)
    assert metrics["finite"] == 0 and not np.isfinite(metrics["loss"])
    for a, b in zip(jax.tree_util.tree_leaves(state["params"]), jax.tree_util.tree_leaves(new["params"])):
        np.testing.assert_array_equal(a, b)
    assert int(new["step"]) == 1


def test_ema_tracks_the_params():
    _, state, frozen, _, step = setup(step_lib.StepConfig(text_len=4, ema_decay=0.5))
    new, _ = jax.jit(step)(state, frozen, make_batch(2))
    for e, p0, p1 in zip(*(jax.tree_util.tree_leaves(t) for t in
                           (new["ema"], state["params"], new["params"]))):
        np.testing.assert_allclose(e, 0.5 * p0 + 0.5 * p1, atol=1e-6)


def test_i2v_and_v2v_inputs():
    """The release's rule: both tasks carry the target's first frame; "none" keeps the earlier
    convention (V2V: a zero first-frame condition)."""
    batch = {k: jnp.asarray(v) for k, v in make_batch(2).items()}
    inputs = step_lib.model_inputs(batch, CFG, text_len=4)
    assert not np.any(inputs["content_latents"][0]) and np.any(inputs["content_latents"][1])
    ff = inputs["first_frame"]  # [b, f, h, w, 4 + C]
    assert ff.shape == (2,) + LAT[:3] + (20,)
    expected = params_lib.first_frame_condition(batch["i2v_latents"])  # the target's first frame
    np.testing.assert_array_equal(ff, expected)  # V2V (example 1) too
    none = step_lib.model_inputs(batch, CFG, text_len=4, v2v_first_frame="none")
    np.testing.assert_array_equal(none["first_frame"][0], expected[0])
    assert not np.any(none["first_frame"][1])  # V2V: no first frame
    np.testing.assert_array_equal(none["content_latents"], inputs["content_latents"])
    # Pixel codec: pixels in, the same latents the codec gives.
    codec = PixelCodec()
    pix = jnp.asarray(np.random.default_rng(0).integers(0, 255, (2, 9, 32, 48, 3)), jnp.uint8)
    pbatch = {"target": pix, "camera_ref": pix, "content_ref": pix, "first_frame": pix[:, 0],
              "task": jnp.array([0, 1])}
    cfg = DiTConfig(dim=32, ffn_dim=64, num_layers=1, num_heads=2, in_channels=2 * 192 + 4,
                    out_channels=192, text_dim=16, freq_dim=32)
    out = step_lib.model_inputs(pbatch, cfg, codec, text_len=3)
    assert out["x"].shape == (2, 3, 4, 6, 192) and out["text"].shape == (2, 3, 16)
    np.testing.assert_allclose(out["x"], codec.encode(pix.astype(jnp.float32) / 127.5 - 1))
    np.testing.assert_array_equal(out["first_frame"][0, 0, ..., 4:], out["x"][0, 0])


def test_conditioning_modes():
    """base: no references (the DiT sees the target alone), V2V-drawn examples become T2V;
    no_camera: the camera latent is zero, the content reference untouched."""
    batch = {k: jnp.asarray(v) for k, v in make_batch(2).items()}
    full = step_lib.model_inputs(batch, CFG, text_len=4)
    base = step_lib.model_inputs(batch, CFG, text_len=4, conditioning="base")
    assert "cam_latents" not in base and "content_latents" not in base
    assert np.any(base["first_frame"][0]) and not np.any(base["first_frame"][1])  # I2V, T2V
    nocam = step_lib.model_inputs(batch, CFG, text_len=4, conditioning="no_camera")
    assert not np.any(nocam["cam_latents"]) and np.any(full["cam_latents"])
    np.testing.assert_array_equal(nocam["content_latents"], full["content_latents"])
    # the base step trains a plain (reference-free) DiT: the loss is that of the target alone
    out = DiT(CFG).apply({"params": params_lib.init_params(CFG, 0)},
                         base["x"], jnp.full((2,), 500.0), base["text"],
                         first_frame=base["first_frame"])
    assert out.shape == base["x"].shape
    params, state, frozen, tx, _ = setup()
    step = step_lib.make_train_step(DiT(CFG), tx, step_lib.StepConfig(text_len=4,
                                                                       conditioning="base"))
    _, metrics = jax.jit(step)(state, frozen, batch)
    assert np.isfinite(metrics["loss"])
    with pytest.raises(ValueError, match="conditioning"):
        step_lib.StepConfig(conditioning="camera").validate()


def test_rules_must_cover_every_param_and_train_something():
    params = params_lib.init_params(CFG, 0)
    with pytest.raises(ValueError, match="match no optimizer rule"):
        optim.label_params(params, [("self_attn", "train")])
    with pytest.raises(ValueError, match="train no parameter"):
        step_lib.split_params(params, optim.label_params(params, [(".*", None)]))


LAYOUTS = [dict(data=8), dict(fsdp=8), dict(data=2, context=2, tensor=2),
           dict(fsdp=2, context=2, tensor=2)]


@pytest.mark.parametrize("axes", LAYOUTS, ids=lambda a: "+".join(f"{k}{v}" for k, v in a.items()))
def test_sharded_step_matches_one_device(axes):
    """Same loss and update on 8 fake devices in each layout as on one device (plain SGD, so
    the update is the gradient itself; Adam's first step, lr * g / (|g| + eps), would amplify
    float noise in near-zero gradients)."""
    batch = make_batch(8, seed=2)
    params, state, frozen, tx, step = setup(tx=optax.sgd(0.1))
    ref_state, ref_m = jax.jit(step)(state, frozen, batch)

    mesh = sharding.make_mesh(axes)
    rules = sharding.DEFAULT_RULES
    param_sh = sharding.logical_sharding(params_lib.logical_specs(CFG), mesh, rules)
    labels = optim.label_params(params, RULES)
    train_sh, frozen_sh = step_lib.split_params(param_sh, labels)
    repl = NamedSharding(mesh, PartitionSpec())
    state_sh = step_lib.state_shardings(tx, state["params"], train_sh, repl)
    data_axes = tuple(a for a in ("data", "fsdp") if a in axes)
    batch_sh = {k: NamedSharding(mesh, PartitionSpec(data_axes)) for k in batch}
    import flax.linen as nn
    with sharding.use_mesh(mesh), nn.logical_axis_rules(rules):
        fn = jax.jit(step, in_shardings=(state_sh, frozen_sh, batch_sh),
                     out_shardings=(state_sh, repl))
        new, m = fn(jax.device_put(state, state_sh), jax.device_put(frozen, frozen_sh),
                    jax.device_put(batch, batch_sh))
    np.testing.assert_allclose(m["loss"], ref_m["loss"], rtol=1e-5)
    np.testing.assert_allclose(m["grad_norm"], ref_m["grad_norm"], rtol=1e-5)
    # sharded and unsharded programs reduce in another order: float32 last bits
    for a, b in zip(jax.tree_util.tree_leaves(new["params"]), jax.tree_util.tree_leaves(ref_state["params"])):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_eval_gaps_read_the_references_and_vanish_without_a_camera():
    """make_eval_losses / eval_sums / eval_metrics: the camera gap is exactly 0 when the model
    sees no camera reference (no_camera conditioning), and a model's gaps are per task."""
    params = params_lib.init_params(CFG, 0)
    batch = make_batch(4)
    rng = jax.random.PRNGKey(1)
    for conditioning in ("camclone", "no_camera"):
        cfg = step_lib.StepConfig(text_len=4, conditioning=conditioning, loss="sample",
                                  loss_from_frame=1)
        losses = jax.jit(step_lib.make_eval_losses(DiT(CFG), cfg, noise_levels=(0.5, 0.95)))(
            params, {}, batch, rng)
        assert set(losses) == {"loss", "no_camera", "no_content"}
        assert all(v.shape == (4,) for v in losses.values())
        i2v = batch["task"] == 0
        # an I2V example has no content reference: zeroing it changes nothing
        np.testing.assert_array_equal(losses["no_content"][i2v], losses["loss"][i2v])
        metrics = step_lib.eval_metrics([step_lib.eval_sums(losses, batch["task"])] * 2)
        assert metrics["val_loss"] == pytest.approx(float(losses["loss"].mean()), rel=1e-6)
        if conditioning == "no_camera":
            assert metrics["val_camera_gap"] == 0.0
        else:
            gaps = losses["no_camera"] - losses["loss"]
            assert metrics["val_camera_gap_v2v"] == pytest.approx(float(gaps[~i2v].mean()),
                                                                  rel=1e-5)
            assert metrics["val_camera_gap"] != 0.0


def test_the_floor_sampler_and_the_clean_sample_loss():
    t, _ = flow.sample_timesteps(jax.random.PRNGKey(0), 20000, "floor", t_min=0.5, t_full=0.25)
    t = np.asarray(t)
    assert np.mean(t < 0.5) == pytest.approx(0.25 * 0.5, abs=0.01)  # only the free 25% below
    x, z = jnp.ones((2, 3, 2, 2, 1)), jnp.zeros((2, 3, 2, 2, 1))
    tt = jnp.array([0.5, 0.01])
    x_t = flow.add_noise(x, z, tt)
    v = (x_t - 0.0 * x) / jnp.maximum(tt, 0.05)[:, None, None, None, None]  # predicts x = 0
    per = flow.example_losses(v, x_t, x, z, tt, "sample", from_frame=1)
    np.testing.assert_allclose(per, [1.0, 1.0], atol=1e-6)  # clean error of predicting 0 for 1
    exact = flow.example_losses(flow.velocity_target(x, z), x_t, x, z, tt, "velocity")
    np.testing.assert_allclose(exact, 0.0)


def test_new_content_weight_scores_only_what_the_first_frame_showed_in_training():
    """new_content_weight 0: the training loss is the error on the target tokens the batch's
    in_first_view marks seen (counted over all tokens), 0.5 weighs the unseen ones half,
    validation scores every token alike, and a batch without the mark is refused."""
    model, batch = DiT(CFG), make_batch(2)
    seen = np.ones((2,) + LAT[:3], np.float32)  # [b, f, h, w]
    seen[:, 1:, :, :2] = 0.0  # the left columns of frames 1-2 are new content
    batch["in_first_view"] = seen
    params = params_lib.init_params(CFG, 0)
    inputs = step_lib.model_inputs(batch, CFG, text_len=4)
    draws = step_lib._draw(jax.random.PRNGKey(3), inputs["x"], step_lib.StepConfig(text_len=4))

    def losses(weight, train=True, b=inputs):
        cfg = step_lib.StepConfig(text_len=4, loss="sample", loss_from_frame=1,
                                  new_content_weight=weight)
        return np.asarray(step_lib.make_example_losses(model, cfg, train)(params, {}, b, draws))
    plain, none = losses(1.0), losses(0.0)
    x_t = flow.add_noise(inputs["x"], draws["z"], draws["t"])  # [b, f, h, w, c]
    v = model.apply({"params": params}, x_t, flow.model_timesteps(draws["t"]), inputs["text"],
                    cam_latents=inputs["cam_latents"], content_latents=inputs["content_latents"],
                    first_frame=inputs["first_frame"])
    floor = jnp.maximum(draws["t"], flow.SAMPLE_T_FLOOR)[:, None, None, None, None]
    err = np.square(np.asarray(x_t - floor * v - inputs["x"]))[:, 1:]  # [b, f - 1, h, w, c]
    np.testing.assert_allclose(none, (err * seen[:, 1:, ..., None]).mean((1, 2, 3, 4)),
                               rtol=1e-5)
    np.testing.assert_allclose(plain, err.mean((1, 2, 3, 4)), rtol=1e-5)
    np.testing.assert_allclose(losses(0.5), 0.5 * (plain + none), rtol=1e-5)
    assert np.all(none < plain)
    np.testing.assert_array_equal(losses(0.0, train=False), losses(1.0, train=False))
    np.testing.assert_allclose(losses(0.0, train=False), plain, rtol=1e-6)
    with pytest.raises(ValueError, match="needs the batch's in_first_view"):
        losses(0.0, b={k: v for k, v in inputs.items() if k != "in_first_view"})


def test_self_state_trains_on_the_samplers_own_euler_step():
    """self_state 1: each training example's input is the Euler step to t from the model's own
    velocity at min(1, t + self_state_dt) on fresh noise, and its loss the clean-sample error
    there; 0 keeps fresh noise; validation never uses it; no gradient flows through the state;
    it needs the clean-sample loss."""
    model, batch = DiT(CFG), make_batch(2)
    params = params_lib.init_params(CFG, 0)
    inputs = step_lib.model_inputs(batch, CFG, text_len=4)
    base = step_lib.StepConfig(text_len=4, loss="sample", loss_from_frame=1)
    draws = step_lib._draw(jax.random.PRNGKey(5), inputs["x"], base)
    draws["t"] = jnp.array([0.3, 0.95])  # the second state starts from pure noise (dt 0.1)
    refs = dict(cam_latents=inputs["cam_latents"], content_latents=inputs["content_latents"],
                first_frame=inputs["first_frame"])

    def v_at(x_in, t_in):
        return model.apply({"params": params}, x_in, flow.model_timesteps(t_in),
                           inputs["text"], **refs)

    def losses(own, train=True, p=params):
        cfg = step_lib.StepConfig(text_len=4, loss="sample", loss_from_frame=1, self_state=own,
                                  self_state_dt=0.1)
        return step_lib.make_example_losses(model, cfg, train)(p, {}, inputs, draws)
    t_hi = jnp.array([0.4, 1.0])
    x_hi = flow.add_noise(inputs["x"], draws["z"], t_hi)  # [b, f, h, w, c]
    own = x_hi + (draws["t"] - t_hi)[:, None, None, None, None] * v_at(x_hi, t_hi)
    expected = flow.example_losses(v_at(own, draws["t"]), own, inputs["x"], draws["z"],
                                   draws["t"], "sample", 1)
    np.testing.assert_allclose(losses(1.0), expected, rtol=1e-5)
    fresh = losses(0.0)
    assert not np.allclose(losses(1.0), fresh)
    np.testing.assert_array_equal(losses(1.0, train=False), fresh)
    # the gradient is that of the loss at a fixed state: the state's velocity is stopped
    grad = jax.grad(lambda p: losses(1.0, p=p).sum())(params)
    fixed = jax.grad(lambda p: flow.example_losses(
        model.apply({"params": p}, own, flow.model_timesteps(draws["t"]), inputs["text"], **refs),
        own, inputs["x"], draws["z"], draws["t"], "sample", 1).sum())(params)
    for k, g in flatten_params(grad).items():
        np.testing.assert_allclose(g, flatten_params(fixed)[k], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="self_state needs loss 'sample'"):
        step_lib.StepConfig(self_state=0.5, loss="velocity").validate()

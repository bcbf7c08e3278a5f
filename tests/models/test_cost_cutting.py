"""Cost-cutting options of the condition tokens: camera-token pooling, latent drop, block-sparse
condition attention with a cached condition K/V (DiTConfig.cam_downsample, cond_drop,
cond_attention)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camclone_jax import sharding
from camclone_jax.inference import denoise
from camclone_jax.training import optim
from camclone_jax.training import step as step_lib
from camclone_jax.diffusion import sampler
from camclone_jax.models import DiT, DiTConfig
from camclone_jax.models import dit as dit_lib
from camclone_jax.models import params as params_lib
from camclone_jax.models.rope import Segment, rope_tables, segment_rope
from camclone_jax.utils import flatten_params

CFG = DiTConfig(dim=32, ffn_dim=48, num_layers=2, num_heads=2, text_dim=8, freq_dim=16,
                attention="xla")
SHAPE = (2, 2, 8, 8, 16)  # [b, f, h, w, C]: 2 x 4 x 4 = 32 tokens per segment
OPTIONS = {
    "cam_downsample": dict(cam_downsample=2),
    "cond_drop": dict(cond_drop=0.5),
    "joint": dict(cond_attention="joint"),
    "segment": dict(cond_attention="segment"),
    "all": dict(cam_downsample=2, cond_drop=0.25, cond_attention="segment"),
}


@pytest.fixture(scope="module")
def params():
    return params_lib.init_params(CFG, 0)


def _inputs(seed=0, shape=SHAPE):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    lat, cam, cont = (jax.random.normal(k, shape) for k in keys[:3])
    txt = jax.random.normal(keys[3], (shape[0], 5, CFG.text_dim))
    return lat, cam, cont, txt


@functools.partial(jax.jit, static_argnames=("cfg", "method"))
def _jit_apply(params, args, kw, *, cfg, method):
    return DiT(cfg).apply({"params": params}, *args, method=method, **kw)


def _apply(cfg, params, *args, method=None, **kw):
    """DiT(cfg).apply, jitted (one compilation per config, method and shapes)."""
    return _jit_apply(params, args, kw, cfg=cfg, method=method)


def _sequence_length(cfg, params, *args, **kw):
    """Tokens the blocks actually see: the patch embedding's output length (no compilation)."""
    seen = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, dit_lib.PatchEmbed):
            seen.append(out.shape[1])
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda p: DiT(cfg).apply({"params": p}, *args, **kw), params)
    return seen[0]


def test_defaults_are_the_release(params):
    cfg = DiTConfig()
    assert (cfg.cam_downsample, cfg.cond_drop, cfg.cond_attention) == (1, 0.0, "full")
    assert not cfg.cuts_cost and CFG.replace(cond_drop=0.1).cuts_cost
    # Per-segment RoPE tables laid end to end are the tables of the frame-concatenated grid.
    f, h, w = 3, 4, 5
    segs = [Segment((f, h, w), t0=i * f) for i in range(3)]
    for ours, theirs in zip(segment_rope(segs, 128), rope_tables((3 * f, h, w), 128)):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    # Latent drop is training-only: without a key the model is exactly the default one.
    lat, cam, cont, txt = _inputs()
    base = _apply(CFG, params, lat, 300.0, txt, cam_latents=cam, content_latents=cont)
    drop = _apply(CFG.replace(cond_drop=0.5), params, lat, 300.0, txt, cam_latents=cam,
                  content_latents=cont)
    np.testing.assert_array_equal(np.asarray(base), np.asarray(drop))


@pytest.mark.parametrize("name", OPTIONS)
def test_each_option_keeps_shapes_and_shrinks_the_sequence(params, name):
    cfg = CFG.replace(**OPTIONS[name])
    lat, cam, cont, txt = _inputs(1)
    key = jax.random.PRNGKey(3)
    kw = dict(cam_latents=cam, content_latents=cont, cond_drop_key=key)
    out = _apply(cfg, params, lat, 500.0, txt, **kw)
    length = _sequence_length(cfg, params, lat, 500.0, txt, **kw)
    assert out.shape == lat.shape and out.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(out)))
    n = dit_lib.sequence_lengths(cfg, SHAPE, train=True)
    assert length == n["target"] + n["cam"] + n["content"]
    assert n["target"] == 32
    assert n["cam"] == {"cam_downsample": 8, "cond_drop": 16, "all": 6}.get(name, 32)
    assert n["content"] == {"cond_drop": 16, "all": 24}.get(name, 32)
    # The references still steer the target prediction.
    other = _apply(cfg, params, lat, 500.0, txt, cam_latents=cam + 1.0, content_latents=cont,
                   cond_drop_key=key)
    assert float(jnp.abs(other - out).max()) > 1e-3


def test_latent_drop_is_per_example_and_reproducible(params):
    cfg = CFG.replace(cond_drop=0.5)
    lat, cam, cont, txt = _inputs(2)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    run = lambda k, s=slice(None): _apply(cfg, params, lat[s], 400.0, txt[s], cam_latents=cam[s],
                                          content_latents=cont[s], cond_drop_key=k)
    a = run(keys)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(run(keys)))
    assert float(jnp.abs(a - run(keys[::-1])).max()) > 1e-3  # other keys, other tokens
    # Example 1 with its own key alone equals example 1 of the batch.
    np.testing.assert_allclose(np.asarray(run(keys[1:], slice(1, 2))), np.asarray(a[1:]),
                               atol=1e-5)


def _batch(b=2, seed=0):
    rng = np.random.default_rng(seed)
    batch = {k: rng.standard_normal((b,) + SHAPE[1:]).astype(np.float32)
             for k in ("target", "camera_ref", "content_ref")}
    batch["task"] = (np.arange(b) % 2).astype(np.int32)  # I2V, V2V
    batch["text_embedding"] = rng.standard_normal((b, 3, CFG.text_dim)).astype(np.float32)
    return batch


@pytest.mark.parametrize("name", ["cam_downsample", "cond_drop", "segment", "all"])
def test_one_training_step_per_option(name):
    """The train step of training/step.py (flow loss, self_attn trainable, Adam) with the option."""
    cfg = CFG.replace(**OPTIONS[name])
    rules = [("self_attn", "train"), (".*", None)]
    params = params_lib.init_params(cfg, 0)
    trainable, frozen = step_lib.split_params(params, optim.label_params(params, rules))
    tx = optim.make_optimizer(trainable, rules, 1e-3)
    state = step_lib.init_state(trainable, tx, seed=0)
    step = step_lib.make_train_step(DiT(cfg), tx, step_lib.StepConfig(text_len=3))
    new, metrics = jax.jit(step)(state, frozen, _batch())
    assert np.isfinite(float(metrics["loss"])) and int(metrics["finite"]) == 1
    before, after = flatten_params(state["params"]), flatten_params(new["params"])
    assert before and all(not np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("opts", [
    dict(cond_attention="joint"),
    dict(cond_attention="segment", cam_downsample=2),
    dict(cond_attention="joint", attention="flash", flash_block_q=16, flash_block_kv=16),
], ids=["joint", "segment+pool", "joint-flash"])
def test_cached_condition_kv_equals_recomputing_it(params, opts):
    cfg = CFG.replace(**opts)
    lat, cam, cont, txt = _inputs(4)
    t = jnp.array([250.0, 900.0])
    full = _apply(cfg, params, lat, t, txt, cam_latents=cam, content_latents=cont)
    cache = _apply(cfg, params, txt, cam, cont, method=DiT.build_cond_cache)
    n = dit_lib.sequence_lengths(cfg, SHAPE)
    assert cache["k"].shape == (2, CFG.num_layers, n["cam"] + n["content"], CFG.dim)
    out = _apply(cfg, params, lat, t, txt, cond_cache=cache)
    length = _sequence_length(cfg, params, lat, t, txt, cond_cache=cache)
    assert length == n["target"]  # a cached step embeds and runs the target tokens only
    np.testing.assert_allclose(np.asarray(out), np.asarray(full), atol=2e-5, rtol=1e-5)
    # The references act through the cache; the sparse model differs from the full one.
    other = _apply(cfg, params, txt, cam * 2.0, cont, method=DiT.build_cond_cache)
    assert float(jnp.abs(_apply(cfg, params, lat, t, txt, cond_cache=other) - out).max()) > 1e-3
    if opts == dict(cond_attention="joint"):
        dense = _apply(CFG, params, lat, t, txt, cam_latents=cam, content_latents=cont)
        assert float(jnp.abs(dense - full).max()) > 1e-3


def test_sampling_with_the_cache_equals_recomputing_every_step(params):
    """denoise.denoise's cached fast path (guided, cond/uncond batched) vs a loop that runs
    the whole sequence at every step."""
    cfg = CFG.replace(cond_attention="segment", cam_downsample=2)
    lat, cam, cont, txt = _inputs(5, (1,) + SHAPE[1:])
    cond = {"text": txt, "neg_text": txt[:, ::-1] * 0.5, "cam": cam, "content": cont}
    tables = sampler.solver_tables(sampler.make_schedule(3, 5.0), "euler")
    got = denoise.denoise(params, cond, lat, tables, jnp.float32(4.0), None, cfg=cfg,
                             solver="euler", order=2, guided=True, batched=True)
    model = DiT(cfg)

    def model_fn(x, timestep, ctx):  # every step recomputes the whole sequence
        return model.apply({"params": params}, x, jnp.full((x.shape[0],), timestep),
                           ctx["text"], cam_latents=ctx["cam"], content_latents=ctx["content"])

    def velocity(x, timestep, sigma):
        pos = {"text": cond["text"], "cam": cam, "content": cont}
        return sampler.guided_velocity(model_fn, x, timestep, pos, dict(pos, text=cond["neg_text"]),
                                       4.0)

    want = sampler.sample_loop(velocity, lat, tables)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)


def test_context_parallel_runs_the_sparse_layout_and_the_cache(params):
    """Ring attention over a 4-way context axis (8 fake devices): the block-sparse layout with
    pooled camera tokens, and the cached step, equal the single-device model."""
    cfg = CFG.replace(cond_attention="segment", cam_downsample=2)
    lat, cam, cont, txt = _inputs(7)
    want = _apply(cfg, params, lat, 600.0, txt, cam_latents=cam, content_latents=cont)
    ring = cfg.replace(context_parallel="ring")

    @jax.jit
    def run(p):
        with nn.logical_axis_rules(sharding.DEFAULT_RULES):
            full = DiT(ring).apply({"params": p}, lat, 600.0, txt, cam_latents=cam,
                                   content_latents=cont)
            cache = DiT(ring).apply({"params": p}, txt, cam, cont, method=DiT.build_cond_cache)
            return full, DiT(ring).apply({"params": p}, lat, 600.0, txt, cond_cache=cache)

    with sharding.use_mesh(sharding.make_mesh({"data": 2, "context": 4})):
        full, cached = run(params)
    np.testing.assert_allclose(np.asarray(full), np.asarray(want), atol=2e-5)
    np.testing.assert_allclose(np.asarray(cached), np.asarray(want), atol=2e-5)


def test_bad_options_and_caches_raise(params):
    for bad, match in ((dict(cond_drop=1.0), "cond_drop must be in"),
                       (dict(cam_downsample=0), "cam_downsample must be a positive"),
                       (dict(cond_attention="sparse"), "cond_attention='sparse'"),
                       (dict(concat="channel", cam_downsample=2), "need concat='frame'"),
                       (dict(spatial_attn=True, cond_attention="joint"), "need concat='frame'")):
        with pytest.raises(ValueError, match=match):
            CFG.replace(**bad)
    lat, cam, cont, txt = _inputs(6)
    with pytest.raises(ValueError, match="must be multiples of 3 x"):
        _apply(CFG.replace(cam_downsample=3), params, lat, 1.0, txt, cam_latents=cam)
    with pytest.raises(ValueError, match="needs block-sparse"):
        _apply(CFG, params, txt, cam, cont, method=DiT.build_cond_cache)
    sparse = CFG.replace(cond_attention="segment")
    cache = _apply(sparse, params, txt, cam, cont, method=DiT.build_cond_cache)
    with pytest.raises(ValueError, match="needs block-sparse"):
        _apply(CFG, params, lat, 1.0, txt, cond_cache=cache)
    with pytest.raises(ValueError, match="replaces cam_latents"):
        _apply(sparse, params, lat, 1.0, txt, cam_latents=cam, cond_cache=cache)
    with pytest.raises(ValueError, match=r"cond_cache\['k'\] has shape"):
        _apply(sparse, params, lat[:, :1], 1.0, txt, cond_cache=cache)  # other latent size

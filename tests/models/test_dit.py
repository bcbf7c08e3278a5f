"""Behaviour of the CamClone DiT: conditioning, variants, switches, errors, sizes, sharding."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from camclone_jax import models
from camclone_jax import utils
from camclone_jax.models.dit import skip_weight

CFG = models.DiTConfig(dim=32, ffn_dim=48, num_layers=2, num_heads=2, text_dim=8, freq_dim=16,
                       attention="xla")
SHAPE = (2, 2, 4, 6, 16)


def _inputs(seed=0, shape=SHAPE):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    lat, cam, cont = (jax.random.normal(k, shape) for k in keys[:3])
    txt = jax.random.normal(keys[3], (shape[0], 5, CFG.text_dim))
    return lat, cam, cont, txt


@pytest.fixture(scope="module")
def params():
    return models.init_params(CFG, 0)


def _apply(cfg, params, lat, txt, t=400.0, **kw):
    return models.DiT(cfg).apply({"params": params}, lat, jnp.full((lat.shape[0],), t), txt, **kw)


def test_references_change_the_target_prediction(params):
    lat, cam, cont, txt = _inputs()
    base = _apply(CFG, params, lat, txt, cam_latents=cam, content_latents=cont)
    assert base.shape == lat.shape and base.dtype == jnp.float32
    other_cam = _apply(CFG, params, lat, txt, cam_latents=cam + 1.0, content_latents=cont)
    other_cont = _apply(CFG, params, lat, txt, cam_latents=cam, content_latents=-cont)
    plain = _apply(CFG, params, lat, txt)
    for changed in (other_cam, other_cont, plain):
        assert float(jnp.abs(changed - base).max()) > 1e-3


def test_i2v_content_defaults_to_zeros(params):
    lat, cam, _, txt = _inputs(1)
    implicit = _apply(CFG, params, lat, txt, cam_latents=cam)
    explicit = _apply(CFG, params, lat, txt, cam_latents=cam, content_latents=jnp.zeros_like(lat))
    np.testing.assert_array_equal(np.asarray(implicit), np.asarray(explicit))


def test_batch_elements_are_independent(params):
    lat, cam, cont, txt = _inputs(2)
    both = _apply(CFG, params, lat, txt, cam_latents=cam, content_latents=cont)
    first = _apply(CFG, params, lat[:1], txt[:1], cam_latents=cam[:1], content_latents=cont[:1])
    np.testing.assert_allclose(np.asarray(both[:1]), np.asarray(first), atol=1e-5)


def test_channel_concat_and_spatial_attention_variants():
    lat, cam, cont, txt = _inputs(3)
    chan = CFG.replace(concat="channel")
    p = models.init_params(chan, 1)
    assert p["patch_embedding"]["kernel"].shape == (1, 2, 2, 48, 32)
    out = _apply(chan, p, lat, txt, cam_latents=cam, content_latents=cont)
    assert out.shape == lat.shape
    assert float(jnp.abs(out - _apply(chan, p, lat, txt, cam_latents=cam * 0)).max()) > 1e-3

    spatial = CFG.replace(spatial_attn=True)
    ps = models.init_params(spatial, 2)
    assert set(ps["blocks"]["spatial_attn"]["attn"]) == {"q", "k", "v", "o", "norm_q", "norm_k"}
    with_spatial = _apply(spatial, ps, lat, txt, cam_latents=cam)
    # Its output projection starts at zero: the block equals one without the 2D attention.
    no_spatial = {**ps, "blocks": {k: v for k, v in ps["blocks"].items() if k != "spatial_attn"}}
    np.testing.assert_allclose(np.asarray(with_spatial),
                               np.asarray(_apply(CFG, no_spatial, lat, txt, cam_latents=cam)),
                               atol=1e-5)
    o = ps["blocks"]["spatial_attn"]["attn"]["o"]
    o["kernel"] = 0.3 * jax.random.normal(jax.random.PRNGKey(9), o["kernel"].shape)
    assert float(jnp.abs(_apply(spatial, ps, lat, txt, cam_latents=cam) - with_spatial).max()) > 1e-3


def test_self_attn_paths_are_exactly_the_3d_attention(params):
    flat = utils.flatten_params(params)
    trainable = sorted(k for k in flat if "self_attn" in k)
    expected = sorted(f"blocks/self_attn/{m}/{leaf}" for m in "qkvo" for leaf in ("kernel", "bias"))
    expected += [f"blocks/self_attn/norm_{x}/scale" for x in "qk"]
    assert trainable == sorted(expected)
    # The same count as diffusers' attn1 (its 3D self-attention) for the released size.
    torch = pytest.importorskip("torch")
    from tests.torch_peers import diffusers

    from accelerate import init_empty_weights

    cfg = models.preset("wan2.1-1.3b-i2v")
    with init_empty_weights():
        peer = diffusers.WanTransformer3DModel(**cfg.to_diffusers())
    theirs = sum(p.numel() for n, p in peer.named_parameters() if ".attn1." in n)
    shapes = utils.flatten_params(models.param_shapes(cfg))
    ours = sum(int(np.prod(v.shape)) for k, v in shapes.items() if "self_attn" in k)
    assert ours == theirs and 280e6 < ours < 290e6  # the release's "about 283M"
    del torch


@pytest.mark.parametrize("name", models.PRESETS)
def test_preset_param_counts_equal_diffusers(name):
    pytest.importorskip("torch")
    from accelerate import init_empty_weights

    from tests.torch_peers import diffusers

    cfg = models.preset(name)
    with init_empty_weights():
        peer = diffusers.WanTransformer3DModel(**cfg.to_diffusers())
    assert models.count_params(models.param_shapes(cfg)) == sum(p.numel() for p in peer.parameters())


@pytest.mark.parametrize("kwargs, match", [
    (dict(cam_latents=jnp.zeros((2, 3, 4, 6, 16))), r"cam_latents shape \(2, 3, 4, 6, 16\) differs"),
    (dict(content_latents=jnp.zeros(SHAPE)), "content_latents needs cam_latents"),
    (dict(first_frame=jnp.zeros((2, 2, 4, 6, 20))), "no first-frame channels"),
    (dict(image_embeds=jnp.zeros((2, 3, 8))), "no image cross-attention"),
])
def test_bad_conditioning_raises(params, kwargs, match):
    lat, _, _, txt = _inputs()
    with pytest.raises(ValueError, match=match):
        _apply(CFG, params, lat, txt, **kwargs)


@pytest.mark.parametrize("shape, match", [
    ((2, 2, 5, 6, 16), r"\(2, 5, 6\) must be divisible by the patch size \(1, 2, 2\)"),
    ((2, 2, 4, 6, 4), r"latents has shape \(2, 2, 4, 6, 4\), expected \(batch, frames, height, width, 16\)"),
    ((2, 4, 6, 16), "latents has shape"),
])
def test_bad_latent_shapes_raise(params, shape, match):
    txt = jnp.zeros((2, 5, CFG.text_dim))
    with pytest.raises(ValueError, match=match):
        _apply(CFG, params, jnp.zeros(shape), txt)


def test_bad_text_and_i2v_inputs_raise():
    with pytest.raises(ValueError, match=r"text_embeds has shape \(2, 5, 3\)"):
        _apply(CFG, models.init_params(CFG), jnp.zeros(SHAPE), jnp.zeros((2, 5, 3)))
    i2v = CFG.replace(in_channels=36, image_dim=12)
    p = models.init_params(i2v)
    with pytest.raises(ValueError, match=r"needs first_frame of shape \(2, 2, 4, 6, 20\)"):
        _apply(i2v, p, jnp.zeros(SHAPE), jnp.zeros((2, 5, 8)), image_embeds=jnp.zeros((2, 3, 12)))
    with pytest.raises(ValueError, match="needs image_embeds"):
        _apply(i2v, p, jnp.zeros(SHAPE), jnp.zeros((2, 5, 8)), first_frame=jnp.zeros(SHAPE[:4] + (20,)))
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        models.DiTConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match="concat='sideways'"):
        models.DiTConfig(concat="sideways")


def test_first_frame_condition_layout():
    lat = jnp.ones((1, 3, 2, 2, 16))
    y = models.first_frame_condition(lat)
    assert y.shape == (1, 3, 2, 2, 20)
    np.testing.assert_array_equal(np.asarray(y[0, :, 0, 0, :4]), [[1] * 4, [0] * 4, [0] * 4])


def test_scan_unroll_and_remat_policies_agree(params):
    lat, cam, _, txt = _inputs(4)

    def loss(cfg, p):
        return jnp.square(_apply(cfg, p, lat, txt, cam_latents=cam)).mean()

    ref_val, ref_grad = jax.jit(jax.value_and_grad(lambda p: loss(CFG, p)))(params)
    for changes in (dict(scan_layers=False), dict(remat="full"), dict(remat="dots")):
        val, grad = jax.jit(jax.value_and_grad(lambda p: loss(CFG.replace(**changes), p)))(params)
        np.testing.assert_allclose(float(val), float(ref_val), rtol=1e-6)
        for a, b in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(ref_grad)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_bfloat16_compute_is_close_to_float32(params):
    lat, cam, cont, txt = _inputs(5)
    f32 = _apply(CFG, params, lat, txt, cam_latents=cam, content_latents=cont)
    bf16 = _apply(CFG.replace(dtype="bfloat16"), params, lat, txt, cam_latents=cam,
                  content_latents=cont)
    rel = float(jnp.linalg.norm(bf16 - f32) / jnp.linalg.norm(f32))
    assert rel < 3e-2
    bf16_params = models.init_params(CFG.replace(param_dtype="bfloat16"))
    assert bf16_params["blocks"]["self_attn"]["q"]["kernel"].dtype == jnp.bfloat16


def test_logical_axes_shard_params_and_activations_on_8_devices(params):
    assert len(jax.devices()) >= 8
    specs = models.params.logical_specs(CFG)
    for path, spec in utils.flatten_params(specs).items():
        assert len(spec) == utils.flatten_params(params)[path].ndim, path
    assert tuple(specs["blocks"]["self_attn"]["q"]["kernel"]) == ("layers", "embed", "heads")
    rules = (("batch", "data"), ("heads", "tensor"), ("mlp", "tensor"), ("embed", None),
             ("act_embed", None), ("layers", None), ("length", None), ("kv", None), ("in", None),
             ("mod", None))
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "tensor"))
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
    sharded = jax.device_put(params, shardings)
    assert tuple(sharded["blocks"]["ffn"]["fc1"]["kernel"].sharding.spec) == (None, None, "tensor")
    lat, cam, cont, txt = _inputs(6)

    @jax.jit
    def run(p, lat, cam, cont, txt):
        with nn.logical_axis_rules(rules):
            return _apply(CFG, p, lat, txt, cam_latents=cam, content_latents=cont)

    with mesh:
        out = run(sharded, lat, cam, cont, txt)
    ref = _apply(CFG, params, lat, txt, cam_latents=cam, content_latents=cont)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def test_sample_prediction_is_turned_into_a_velocity(params):
    """prediction="sample": the head's output x is returned as v = (x_t - x) / max(t, 0.05)."""
    lat, cam, cont, txt = _inputs()
    x_hat = _apply(CFG, params, lat, txt, t=400.0, cam_latents=cam, content_latents=cont)
    cfg = dataclasses.replace(CFG, prediction="sample")
    v = _apply(cfg, params, lat, txt, t=400.0, cam_latents=cam, content_latents=cont)
    np.testing.assert_allclose(v, (lat - x_hat) / 0.4, rtol=1e-5, atol=1e-5)
    v0 = _apply(cfg, params, lat, txt, t=0.0, cam_latents=cam, content_latents=cont)
    x0 = _apply(CFG, params, lat, txt, t=0.0, cam_latents=cam, content_latents=cont)
    np.testing.assert_allclose(v0, (lat - x0) / 0.05, rtol=1e-5, atol=1e-4)  # t clamped
    with pytest.raises(ValueError, match="prediction"):
        cfg.to_diffusers()


def test_skip_prediction_adds_the_head_to_the_best_linear_guess(params):
    """prediction="skip": x = c_skip(t) x_t + F for the head's output F, returned as
    v = (x_t - x) / max(t, 0.05); at t = 0 c_skip is 1 (x_t passes), at t = 1 it is 0 (the
    head alone, as "sample"); c_skip x_t is the least-squares linear estimate of an x of std
    skip_sigma."""
    lat, cam, cont, txt = _inputs()
    cfg = dataclasses.replace(CFG, prediction="skip", skip_sigma=0.3)
    for t in (0.0, 0.02, 0.4, 1.0):
        head = _apply(CFG, params, lat, txt, t=1000 * t, cam_latents=cam, content_latents=cont)
        v = _apply(cfg, params, lat, txt, t=1000 * t, cam_latents=cam, content_latents=cont)
        x = float(skip_weight(jnp.float32(t), 0.3)) * lat + head
        np.testing.assert_allclose(v, (lat - x) / max(t, 0.05), rtol=1e-5, atol=1e-4)
    assert (float(skip_weight(0.0, 0.3)), float(skip_weight(1.0, 0.3))) == (1.0, 0.0)
    rng = np.random.default_rng(0)  # c_skip is the regression of x on x_t
    x, z = 0.3 * rng.standard_normal(200_000), rng.standard_normal(200_000)
    x_t = 0.9 * x + 0.1 * z
    assert float(skip_weight(0.1, 0.3)) == pytest.approx(np.dot(x_t, x) / np.dot(x_t, x_t),
                                                         rel=0.01)
    with pytest.raises(ValueError, match="skip_sigma must be > 0"):
        dataclasses.replace(CFG, prediction="skip", skip_sigma=0.0).validate()

"""Numerical parity of our DiT with diffusers' WanTransformer3DModel (random tiny configs, f32).

Tolerance: max abs difference <= 1e-4 on outputs of magnitude ~1-10.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from camclone_jax import models
from camclone_jax.convert import transformer as conv
from camclone_jax.models import rope
from tests.torch_peers import random_wan, state_dict_numpy, tiny_wan_config, to_torch, torch

TOL = 1e-4


def _inputs(rng, cfg, frames=3, h=4, w=6, text_len=7, image_len=0):
    lat = rng.standard_normal((1, frames, h, w, 16)).astype(np.float32)
    txt = rng.standard_normal((1, text_len, cfg["text_dim"])).astype(np.float32)
    img = rng.standard_normal((1, image_len, cfg["image_dim"])).astype(np.float32) if image_len else None
    return lat, txt, img


def _torch_forward(model, x_cl, t, txt, img=None):
    """Runs diffusers on channels-last input; returns channels-last output."""
    with torch.no_grad():
        out = model(to_torch(x_cl).permute(0, 4, 1, 2, 3), to_torch(t), to_torch(txt),
                    encoder_hidden_states_image=None if img is None else to_torch(img),
                    return_dict=False)[0]
    return out.permute(0, 2, 3, 4, 1).numpy()


def _ours(diff_cfg, model):
    cfg = models.DiTConfig.from_diffusers(diff_cfg, attention="xla")
    return cfg, conv.params_from_torch(state_dict_numpy(model), cfg, "diffusers")


@pytest.mark.parametrize("backend", ["xla", "flash"])
def test_t2v_matches_diffusers(backend):
    diff_cfg = tiny_wan_config()
    model = random_wan(diff_cfg)
    cfg, params = _ours(diff_cfg, model)
    cfg = cfg.replace(attention=backend, flash_block_q=16, flash_block_kv=20)  # uneven tiles
    rng = np.random.default_rng(0)
    lat, txt, _ = _inputs(rng, diff_cfg)
    t = np.array([637.0], np.float32)
    ours = models.DiT(cfg).apply({"params": params}, jnp.asarray(lat), jnp.asarray(t), jnp.asarray(txt))
    ref = _torch_forward(model, lat, t, txt)
    assert ours.shape == ref.shape == lat.shape
    assert np.abs(np.asarray(ours) - ref).max() <= TOL


def test_i2v_matches_diffusers():
    # diffusers splits image/text context with a hard-coded text length of 512.
    diff_cfg = tiny_wan_config(image=True)
    model = random_wan(diff_cfg, seed=1)
    cfg, params = _ours(diff_cfg, model)
    rng = np.random.default_rng(1)
    lat, txt, img = _inputs(rng, diff_cfg, text_len=512, image_len=5)
    y = rng.standard_normal((1, 3, 4, 6, 20)).astype(np.float32)
    t = np.array([250.0], np.float32)
    ours = models.DiT(cfg).apply({"params": params}, jnp.asarray(lat), jnp.asarray(t),
                                 jnp.asarray(txt), image_embeds=jnp.asarray(img),
                                 first_frame=jnp.asarray(y))
    ref = _torch_forward(model, np.concatenate([lat, y], -1), t, txt, img)
    assert np.abs(np.asarray(ours) - ref).max() <= TOL


def test_camclone_frame_concat_matches_diffusers_on_concatenated_sequence():
    """[x_t | x_cam | x_cont] through diffusers, sliced to the target, equals our CamClone call."""
    diff_cfg = tiny_wan_config(image=True)
    model = random_wan(diff_cfg, seed=2)
    cfg, params = _ours(diff_cfg, model)
    rng = np.random.default_rng(2)
    lat, txt, img = _inputs(rng, diff_cfg, frames=2, text_len=512, image_len=3)
    cam, cont = (rng.standard_normal(lat.shape).astype(np.float32) for _ in range(2))
    y = rng.standard_normal((1, 2, 4, 6, 20)).astype(np.float32)
    t = np.array([900.0], np.float32)
    ours = models.DiT(cfg).apply({"params": params}, jnp.asarray(lat), jnp.asarray(t),
                                 jnp.asarray(txt), cam_latents=jnp.asarray(cam),
                                 content_latents=jnp.asarray(cont), image_embeds=jnp.asarray(img),
                                 first_frame=jnp.asarray(y))
    pad = lambda z: np.concatenate([z, np.zeros(z.shape[:-1] + (20,), np.float32)], -1)
    full = np.concatenate([np.concatenate([lat, y], -1), pad(cam), pad(cont)], axis=1)
    ref = _torch_forward(model, full, t, txt, img)[:, :2]
    assert ours.shape == lat.shape
    assert np.abs(np.asarray(ours) - ref).max() <= TOL


def test_rope_tables_match_diffusers():
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    for head_dim in (12, 128):
        peer = WanRotaryPosEmbed(head_dim, (1, 2, 2), 1024)
        cos_ref, sin_ref = peer(torch.zeros(1, 1, 5, 8, 12))  # grid (5, 4, 6)
        cos, sin = rope.rope_tables((5, 4, 6), head_dim)
        # diffusers stores each angle twice (interleaved); we store it once per pair.
        np.testing.assert_allclose(np.asarray(cos), cos_ref[0, :, 0, 0::2].numpy(), atol=1e-6)
        np.testing.assert_allclose(np.asarray(sin), sin_ref[0, :, 0, 1::2].numpy(), atol=1e-6)
    assert rope.axis_dims(128) == (44, 42, 42)

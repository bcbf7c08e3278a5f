"""The regex-masked optimizer: coverage errors, frozen params untouched, no state for them."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from camclone_jax import models
from camclone_jax.diffusion import flow
from camclone_jax.training import optim
from camclone_jax.utils import flatten_params

CFG = models.DiTConfig(dim=32, ffn_dim=48, num_layers=2, num_heads=2, text_dim=8, freq_dim=16)
RULES = [("self_attn", "train"), (".*", None)]


def test_every_param_must_be_matched():
    params = models.init_params(CFG)
    with pytest.raises(ValueError, match="match no optimizer rule, e.g. .*blocks/cross_attn"):
        optim.label_params(params, [("self_attn", "train"), ("ffn", None)])
    mask = flatten_params(optim.trainable_mask(params, RULES))
    assert {k for k, v in mask.items() if v} == {k for k in mask if "self_attn" in k}


def test_one_camclone_step_changes_exactly_self_attn():
    params = models.init_params(CFG, 0)
    tx = optim.make_optimizer(params, RULES, optim.warmup_cosine(1e-2, 0, 0), clip_norm=1.0)
    state = tx.init(params)
    # Adam moments exist for the 10 self_attn leaves only (mu and nu), nothing for the rest.
    arrays = [x for x in jax.tree_util.tree_leaves(state) if hasattr(x, "shape") and x.ndim > 0]
    n_train = sum(1 for k in flatten_params(params) if "self_attn" in k)
    assert len(arrays) == 2 * n_train

    ks = jax.random.split(jax.random.PRNGKey(1), 5)
    x, cam, z = (jax.random.normal(k, (2, 2, 4, 6, 16)) for k in ks[:3])
    text = jax.random.normal(ks[3], (2, 5, 8))
    t, _ = flow.sample_timesteps(ks[4], 2)

    def loss_fn(p):
        v = models.DiT(CFG).apply({"params": p}, flow.add_noise(x, z, t), flow.model_timesteps(t),
                                  text, cam_latents=cam)
        return flow.flow_loss(v, x, z)

    grads = jax.grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    for path, old in flatten_params(params).items():
        changed = not np.array_equal(np.asarray(old), np.asarray(flatten_params(new)[path]))
        assert changed == ("self_attn" in path), path


def test_group_scales_and_bad_rules():
    params = models.init_params(CFG)
    tx = optim.make_optimizer(params, [("self_attn/q", 0.0), ("self_attn", "train"), (".*", None)],
                              1e-2, clip_norm=None)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    flat = flatten_params(updates)
    assert float(jnp.abs(flat["blocks/self_attn/q/kernel"]).max()) == 0.0
    assert float(jnp.abs(flat["blocks/self_attn/k/kernel"]).max()) > 0.0
    with pytest.raises(ValueError, match="expected None, 'train' or a float"):
        optim.make_optimizer(params, [("self_attn", "fast"), (".*", None)], 1e-2)

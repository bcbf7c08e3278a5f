"""Mesh construction and the DiT's loss/gradients under every mesh layout on 8 fake devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camclone_jax import models, sharding
from camclone_jax.diffusion import flow
from camclone_jax.utils import flatten_params

CFG = models.DiTConfig(dim=32, ffn_dim=48, num_layers=2, num_heads=4, text_dim=8, freq_dim=16,
                       attention="xla")


def test_mesh_shape_resolution_and_errors():
    assert sharding.mesh_shape({"data": -1, "tensor": 2}, 8) == dict(data=4, fsdp=1, context=1, tensor=2)
    assert sharding.mesh_shape({}, 1) == dict(data=1, fsdp=1, context=1, tensor=1)
    for axes, match in (({"data": -1, "fsdp": -1}, "at most one axis"), ({"data": 3}, "use 3 devices"),
                        ({"data": -1, "tensor": 3}, "do not divide"), ({"pipeline": 2}, "unknown mesh axes")):
        with pytest.raises(ValueError, match=match):
            sharding.mesh_shape(axes, 8)
    assert sharding.make_mesh({"fsdp": -1}).shape == dict(data=1, fsdp=8, context=1, tensor=1)


def _loss(params, batch):
    lat, cam, cont, text, noise, t = batch
    v = models.DiT(CFG).apply({"params": params}, flow.add_noise(lat, noise, t),
                              flow.model_timesteps(t), text, cam_latents=cam, content_latents=cont)
    return flow.flow_loss(v, lat, noise)


@pytest.fixture(scope="module")
def problem():
    params = models.init_params(CFG, 0)
    ks = jax.random.split(jax.random.PRNGKey(0), 6)
    shape = (8, 2, 4, 6, 16)
    batch = tuple(jax.random.normal(k, shape) for k in ks[:3]) + (
        jax.random.normal(ks[3], (8, 5, 8)), jax.random.normal(ks[4], shape),
        jax.random.uniform(ks[5], (8,)))
    loss, grads = jax.jit(jax.value_and_grad(_loss))(params, batch)  # on one device
    return params, batch, float(loss), grads


@pytest.mark.parametrize("axes", [{"data": 8}, {"fsdp": 8}, {"data": 2, "tensor": 4},
                                  {"fsdp": 2, "context": 2, "tensor": 2}])
def test_same_loss_and_grads_as_one_device(problem, axes):
    params, batch, ref_loss, ref_grads = problem
    mesh = sharding.make_mesh(axes)
    param_shardings = sharding.logical_sharding(models.params.logical_specs(CFG), mesh)
    sharded = jax.device_put(params, param_shardings)
    inputs = tuple(jax.device_put(x, sharding.batch_sharding(mesh, x.ndim)) for x in batch)

    @jax.jit
    def step(p, b):
        with nn.logical_axis_rules(sharding.DEFAULT_RULES):
            return jax.value_and_grad(_loss)(p, b)

    with mesh:
        loss, grads = step(sharded, inputs)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    got, want = flatten_params(grads), flatten_params(ref_grads)
    for path in want:
        np.testing.assert_allclose(np.asarray(got[path]), np.asarray(want[path]), atol=2e-5,
                                   err_msg=path)
    q = flatten_params(sharded)["blocks/self_attn/q/kernel"].sharding.spec
    assert tuple(q) == (None, "fsdp", "tensor")  # layers, embed -> fsdp, heads -> tensor

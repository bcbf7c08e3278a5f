"""Sequence-parallel attention (Ulysses, ring) on 8 fake CPU devices equals one-device attention.

Tolerances: float32 with "highest" matmul precision (conftest); values atol 2e-6, gradients
atol 5e-6 (measured differences are ~1e-6 or below).
"""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camclone_jax import models, sharding
from camclone_jax.models import attention, context_parallel
from camclone_jax.models import attention_kernels as kernels
from camclone_jax.utils import flatten_params

ATOL, GRAD_ATOL = 2e-6, 5e-6


def _qkv(b, lq, lk, h, d=4, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(ks[0], (b, lq, h, d))  # [b, lq, h, d]
    k, v = (jax.random.normal(x, (b, lk, h, d)) for x in ks[1:3])  # [b, lk, h, d]
    cot = jax.random.normal(ks[3], (b, lq, h, d))  # output cotangent
    return q, k, v, cot


def _value_and_grads(fn, q, k, v, cot):
    out = fn(q, k, v)
    grads = jax.grad(lambda *a: (fn(*a) * cot).sum(), (0, 1, 2))(q, k, v)
    return out, grads


def _assert_matches_reference(fn, q, k, v, cot, mesh, legacy_mesh=False):
    """fn under ``mesh`` (jit) equals the reference attention, values and grads w.r.t. q, k, v.

    Returns the lowered program text.
    """
    ref_out, ref_grads = _value_and_grads(kernels.reference_attention, q, k, v, cot)
    run = jax.jit(lambda *a: _value_and_grads(fn, *a))
    if legacy_mesh and hasattr(mesh, "__enter__"):  # `with mesh:` (deprecated since jax 0.7)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with mesh:
                out, grads = run(q, k, v, cot)
                hlo = run.lower(q, k, v, cot).as_text()
    else:
        with jax.set_mesh(mesh):
            out, grads = run(q, k, v, cot)
            hlo = run.lower(q, k, v, cot).as_text()
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), atol=ATOL)
    for name, g, want in zip("qkv", grads, ref_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(want), atol=GRAD_ATOL,
                                   err_msg=f"d{name}")
    return hlo


def test_local_backends_mask_padded_keys():
    """kv_len masks trailing keys in every local backend, as the sequence-parallel paths need;
    jax.nn.dot_product_attention's key_value_seq_lengths (the cudnn path) means the same."""
    q, k, v, _ = _qkv(2, 7, 5, 2)
    ref = kernels.reference_attention(q, k, v)
    pad = lambda x: jnp.pad(x, ((0, 0), (0, 4), (0, 0), (0, 0)), constant_values=3.0)
    for backend in ("xla", "flash"):
        out = kernels.local_attention(q, pad(k), pad(v), backend=backend, block_q=3,
                                        block_kv=2, kv_len=5)  # last tile all padding
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=ATOL, err_msg=backend)
    lengths = jnp.full((2,), 5, jnp.int32)
    out = jax.nn.dot_product_attention(q, pad(k), pad(v), key_value_seq_lengths=lengths)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=ATOL)


# Lengths are uneven on purpose: 13 tokens over 4 or 8 shards; with 8 shards and 9 keys the
# last three key chunks are all padding (the ring merges fully masked hops).
CASES = {
    "self": dict(lq=13, lk=13, shard_kv=True),
    "cross_sharded_kv": dict(lq=13, lk=9, shard_kv=True),
    "cross_replicated_kv": dict(lq=11, lk=5, shard_kv=False),
}


@pytest.mark.parametrize("axes", [{"context": 8}, {"data": 2, "context": 4}],
                         ids=["context8", "data2xcontext4"])
@pytest.mark.parametrize("mode", ["ulysses", "ring"])
def test_sequence_parallel_equals_reference(axes, mode):
    mesh = sharding.make_mesh(axes)
    # The replicated-kv path has no collective; one mesh covers it (the DiT tests run it too).
    names = CASES if axes.get("context") == 8 else ("self", "cross_sharded_kv")
    for name in names:
        case = CASES[name]
        q, k, v, cot = _qkv(2, case["lq"], case["lk"], h=8, seed=len(name))
        fn = lambda q, k, v: attention.dot_product_attention(
            q, k, v, backend="flash", block_q=4, block_kv=2, context_parallel=mode,
            shard_kv=case["shard_kv"])
        hlo = _assert_matches_reference(fn, q, k, v, cot, mesh)
        collective = {"ulysses": "all_to_all", "ring": "collective_permute"}[mode]
        assert (collective in hlo) == case["shard_kv"], name  # replicated kv: no collective


@pytest.mark.parametrize("mode, heads, backend", [("ulysses", 4, "xla"), ("ring", 3, "xla"),
                                                  ("ring", 4, "flash")])
def test_tensor_axis_batch_replication_and_legacy_mesh(mode, heads, backend):
    """data x context x tensor mesh; batch 1 cannot split over data (replicated); 3 heads cannot
    split over tensor (replicated); the legacy ``with mesh:`` context works too."""
    mesh = sharding.make_mesh({"data": 2, "context": 2, "tensor": 2})
    q, k, v, cot = _qkv(1, 7, 7, heads)
    fn = lambda q, k, v: attention.dot_product_attention(q, k, v, backend=backend, block_q=2,
                                                         block_kv=3, context_parallel=mode)
    _assert_matches_reference(fn, q, k, v, cot, mesh, legacy_mesh=backend == "flash")
    axis, n, batch_axes, head_axes = context_parallel.plan(mesh, 1, heads)
    assert (axis, n, batch_axes) == ("context", 2, None)
    assert head_axes == ("tensor" if heads % 2 == 0 else None)


def test_fallbacks_and_errors():
    q, k, v, _ = _qkv(2, 6, 6, 4)
    ref = kernels.reference_attention(q, k, v)
    # No mesh, or a mesh whose context axis has size 1: the local backend, no shard_map.
    for mesh in (None, sharding.make_mesh({"data": 8})):
        fn = jax.jit(lambda q, k, v: attention.dot_product_attention(
            q, k, v, backend="xla", context_parallel="ring"))
        if mesh is None:
            out, hlo = fn(q, k, v), fn.lower(q, k, v).as_text()
        else:
            with jax.set_mesh(mesh):
                out, hlo = fn(q, k, v), fn.lower(q, k, v).as_text()
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)
        assert "shard_map" not in hlo and "collective_permute" not in hlo
    with jax.set_mesh(sharding.make_mesh({"context": 8})):  # 4 heads cannot split 8 ways
        with pytest.raises(ValueError, match="use context_parallel='ring'"):
            attention.dot_product_attention(q, k, v, context_parallel="ulysses")
    with pytest.raises(ValueError, match="context_parallel='magic' is not one of"):
        attention.dot_product_attention(q, k, v, context_parallel="magic")
    with pytest.raises(ValueError, match="context_parallel='magic'"):
        models.DiTConfig(context_parallel="magic")


# ------------------------------------------------------------------------------ full DiT
CFG = models.DiTConfig(dim=32, ffn_dim=48, num_layers=2, num_heads=4, text_dim=8, freq_dim=16,
                       attention="flash", flash_block_q=4, flash_block_kv=4)


@pytest.fixture(scope="module")
def dit_problem():
    params = models.init_params(CFG, 0)
    ks = jax.random.split(jax.random.PRNGKey(1), 4)
    shape = (2, 1, 4, 6, 16)  # 1 x 2 x 3 = 6 tokens per segment, 18 in all: uneven over 4
    lat, cam, cont = (jax.random.normal(x, shape) for x in ks[:3])
    txt = jax.random.normal(ks[3], (2, 5, CFG.text_dim))
    inputs = (lat, jnp.array([100.0, 700.0]), txt, cam, cont)
    return params, inputs, jax.jit(_dit(CFG))(params, *inputs)


def _dit(cfg):
    def apply(params, lat, t, txt, cam, cont):
        with nn.logical_axis_rules(sharding.DEFAULT_RULES):
            return models.DiT(cfg).apply({"params": params}, lat, t, txt, cam_latents=cam,
                                         content_latents=cont)  # [b, f, h, w, c]
    return apply


@pytest.mark.parametrize("mode", ["ulysses", "ring"])
def test_dit_forward_with_context_parallel_equals_unsharded(dit_problem, mode):
    params, inputs, ref = dit_problem
    mesh = sharding.make_mesh({"data": 2, "context": 4})
    run = jax.jit(_dit(CFG.replace(context_parallel=mode)))
    with jax.set_mesh(mesh):
        out = run(params, *inputs)
        hlo = run.lower(params, *inputs).as_text()
    assert {"ulysses": "all_to_all", "ring": "collective_permute"}[mode] in hlo
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def test_dit_gradients_with_ring_attention_under_remat(dit_problem):
    """Training path: ring's custom VJP inside remat'd, scanned blocks gives the same grads."""
    params, inputs, _ = dit_problem

    def loss(cfg):
        return lambda p: (_dit(cfg)(p, *inputs) ** 2).mean()

    ref_loss, ref_grads = jax.jit(jax.value_and_grad(loss(CFG)))(params)
    run = jax.jit(jax.value_and_grad(loss(CFG.replace(context_parallel="ring", remat="full"))))
    with jax.set_mesh(sharding.make_mesh({"data": 2, "context": 4})):
        got_loss, grads = run(params)
    # a sharded program reduces in another order than the reference: float32 last bits
    np.testing.assert_allclose(float(got_loss), float(ref_loss), rtol=1e-5)
    got, want = flatten_params(grads), flatten_params(ref_grads)
    for path in want:  # largest gradient entries are ~0.1
        np.testing.assert_allclose(np.asarray(got[path]), np.asarray(want[path]), atol=1e-5,
                                   err_msg=path)

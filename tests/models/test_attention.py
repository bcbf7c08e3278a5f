"""Attention: the blockwise (flash) XLA kernel equals the reference, values and grads; backends."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camclone_jax.models import attention
from camclone_jax.models import attention_kernels as kernels


@pytest.mark.parametrize("lq, lk, bq, bk", [(37, 37, 8, 16), (50, 13, 64, 5), (24, 24, 24, 24)])
def test_blockwise_equals_reference_with_uneven_tiles(lq, lk, bq, bk):
    ks = jax.random.split(jax.random.PRNGKey(lq + lk), 4)
    q = jax.random.normal(ks[0], (2, lq, 3, 8))
    k, v = (jax.random.normal(x, (2, lk, 3, 8)) for x in ks[1:3])
    ref = kernels.reference_attention(q, k, v)
    out = kernels.blockwise_attention(q, k, v, block_q=bq, block_kv=bk)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-6)

    cot = jax.random.normal(ks[3], ref.shape)
    g_ref = jax.grad(lambda *a: (kernels.reference_attention(*a) * cot).sum(), (0, 1, 2))(q, k, v)
    g_out = jax.grad(lambda *a: (kernels.blockwise_attention(*a, block_q=bq, block_kv=bk)
                                 * cot).sum(), (0, 1, 2))(q, k, v)
    for a, b in zip(g_out, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_reference_matches_jax_nn():
    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = (jax.random.normal(x, (1, 20, 2, 16)) for x in ks)
    np.testing.assert_allclose(np.asarray(kernels.reference_attention(q, k, v)),
                               np.asarray(jax.nn.dot_product_attention(q, k, v)), atol=1e-6)


def test_backend_resolution_and_errors():
    on_gpu = jax.default_backend() == "gpu"
    assert attention.resolve_backend("auto", jnp.bfloat16) == ("cudnn" if on_gpu else "flash")
    assert attention.resolve_backend("auto", jnp.float32) == "flash"
    assert attention.resolve_backend("xla", jnp.bfloat16) == "xla"
    q = jnp.zeros((1, 4, 2, 8))
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention.dot_product_attention(q, q, q, backend="magic")
    with pytest.raises(ValueError, match="shapes do not agree"):
        attention.dot_product_attention(q, jnp.zeros((1, 4, 3, 8)), jnp.zeros((1, 4, 3, 8)))


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN flash attention needs a GPU")
def test_cudnn_matches_reference_in_bf16():
    ks = jax.random.split(jax.random.PRNGKey(1), 3)
    q, k, v = (jax.random.normal(x, (2, 256, 4, 64), jnp.bfloat16) for x in ks)
    ref = kernels.reference_attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32))
    out = attention.dot_product_attention(q, k, v, backend="cudnn")
    assert float(jnp.abs(out.astype(jnp.float32) - ref).max()) < 2e-2

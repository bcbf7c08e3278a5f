"""Small building blocks of the DiT: dense layers with logical axes, norms, embeddings.

Every parameter carries logical axis names (``nn.with_logical_partitioning``) so sharding rules
in config map them onto a mesh: "embed" (model width), "heads" (packed q/k/v width), "mlp"
(FFN width), "vocab"-like input widths ("in"), and "layers" for the scanned block stack.
Norms run in float32 whatever the compute dtype, as Wan's FP32LayerNorm does.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

xavier = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros


def dense(features: int, axes: tuple[str | None, str | None], name: str, dtype, param_dtype,
          kernel_init=xavier, use_bias: bool = True) -> nn.Dense:
    """nn.Dense whose kernel and bias carry logical axis names."""
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(kernel_init, axes),
                    bias_init=nn.with_logical_partitioning(zeros, (axes[1],)))


def layer_norm(x: jnp.ndarray, eps: float) -> jnp.ndarray:
    """LayerNorm without affine parameters, in float32 (returns float32)."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


class AffineLayerNorm(nn.Module):
    """LayerNorm with scale and bias, computed in float32; output in ``dtype``."""

    eps: float
    dtype: str = "float32"
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones,
                                                                 (self.axis_name,)), (dim,))
        bias = self.param("bias", nn.with_logical_partitioning(zeros, (self.axis_name,)), (dim,))
        y = layer_norm(x, self.eps) * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        return y.astype(self.dtype)


class RMSNorm(nn.Module):
    """x / rms(x) * scale over the last axis (all heads at once), in float32."""

    eps: float
    dtype: str = "float32"
    axis_name: str = "heads"

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones,
                                                                 (self.axis_name,)),
                           (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
        return (y * scale.astype(jnp.float32)).astype(self.dtype)


def sinusoidal_embedding(t: jnp.ndarray, dim: int, max_period: float = 10000.0) -> jnp.ndarray:
    """Wan's timestep embedding [cos | sin] of t [batch] on the 0-1000 scale -> [batch, dim]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)  # [half]
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]  # [b, half]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)  # [b, dim]


def modulate(x: jnp.ndarray, shift: jnp.ndarray, scale: jnp.ndarray, eps: float, dtype):
    """norm(x) * (1 + scale) + shift, in float32, cast to ``dtype``."""
    return (layer_norm(x, eps) * (1.0 + scale) + shift).astype(dtype)


class MLP(nn.Module):
    """fc1 -> activation -> fc2; used for the time, text and FFN projections."""

    hidden: int
    out: int
    activation: str
    axes_in: tuple[str, str]
    axes_out: tuple[str, str]
    dtype: str = "float32"
    param_dtype: str = "float32"
    kernel_init: nn.initializers.Initializer = xavier

    @nn.compact
    def __call__(self, x):
        h = dense(self.hidden, self.axes_in, "fc1", self.dtype, self.param_dtype,
                  self.kernel_init)(x)
        if self.activation == "gelu_tanh":
            h = jax.nn.gelu(h, approximate=True)
        elif self.activation == "gelu":
            h = jax.nn.gelu(h, approximate=False)
        elif self.activation == "silu":
            h = jax.nn.silu(h)
        else:
            raise ValueError(f"unknown activation {self.activation!r}")
        return dense(self.out, self.axes_out, "fc2", self.dtype, self.param_dtype,
                     self.kernel_init)(h)

"""Building blocks of the Wan 2.1 causal 3D VAE (channels-last Flax Linen).

Every block takes ``(x, cache, first)`` and returns ``(y, new_cache)``:

* ``x`` is a video chunk ``[batch, frames, height, width, channels]``;
* ``cache`` is a nested dict (keyed like the params) holding, for every causal temporal
  convolution, the input frames just before this chunk; ``None`` means "no past" (zeros);
* ``first`` (a Python bool) marks the chunk that starts the video: the temporal resamplers
  treat its first frame specially (it passes through without temporal mixing).

Calling a block once on a whole video with ``cache=None, first=True`` is exactly the same
computation as calling it on the first frame and then on later chunks with the returned caches.
That equivalence is what makes the chunked, memory-bounded path of `vae.py` exact.

Parameter names mirror diffusers ``AutoencoderKLWan`` (``conv1/kernel``, ``norm1/gamma``,
``resample/kernel``, ``time_conv/kernel``...), kernels in Flax layout (``[kt, kh, kw, in, out]``
or ``[kh, kw, in, out]``). Inference only: dropout is never applied.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Cache = Any  # a nested dict of arrays, or None for "no past frames yet"
CACHE_FRAMES = 2  # frames of context a kernel-3 causal conv needs


def sub_cache(cache: Cache, *keys: str) -> Cache:
    """Returns ``cache[k0][k1]...`` or None where any level is missing."""
    for key in keys:
        if cache is None:
            return None
        cache = cache.get(key)
    return cache


# XLA:CPU runs its generic 3D convolution ~3x slower than the sum over time taps of 2D
# convolutions (Wan decoder sizes); the split costs about three chunk-sized buffers per conv
# (measured: encoder temporaries 52 -> 222 MiB at 64x64, still flat in the frame count).
# Other backends (cuDNN, TPU) keep the native op. Set to False for the lean native op on CPU
# (read at trace time: set it before the first call, or call jax.clear_caches()).
SPLIT_CONV3D_ON_CPU = True


def _conv(x, kernel, bias, strides, padding, dtype):
    """N-d channels-last convolution: x [b, *spatial, cin], kernel [*k, cin, cout]."""
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if (kernel.ndim == 5 and kernel.shape[0] > 1 and SPLIT_CONV3D_ON_CPU
            and jax.default_backend() == "cpu"):
        return _conv3d_as_2d(x, kernel, strides, padding) + bias.astype(dtype)
    nd = kernel.ndim - 2
    spec = "N" + "DHW"[3 - nd:] + "C"
    y = jax.lax.conv_general_dilated(
        x, kernel, window_strides=strides, padding=padding,
        dimension_numbers=(spec, spec[1:-1] + "IO", spec))  # [b, *spatial', cout]
    return y + bias.astype(dtype)


def _conv3d_as_2d(x, kernel, strides, padding):
    """A 3D convolution (no temporal padding) as the sum over time taps of 2D convolutions.

    x [b, t, h, w, cin], kernel [kt, kh, kw, cin, cout] -> [b, t', h', w', cout].
    """
    assert padding[0] == (0, 0), "temporal padding is done by the caller"
    kt, st = kernel.shape[0], strides[0]
    b, t = x.shape[:2]
    t_out = (t - kt) // st + 1
    y = 0
    for dt in range(kt):
        frames = x[:, dt:dt + st * (t_out - 1) + 1:st]  # [b, t', h, w, cin]
        frames = frames.reshape((b * t_out,) + frames.shape[2:])  # [b*t', h, w, cin]
        y = y + jax.lax.conv_general_dilated(
            frames, kernel[dt], window_strides=strides[1:], padding=padding[1:],
            dimension_numbers=("NHWC", "HWIO", "NHWC"))  # [b*t', h', w', cout]
    return y.reshape((b, t_out) + y.shape[1:])


class Conv2d(nn.Module):
    """Per-frame 2D convolution (the spatial part of the resamplers, the attention projections)."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: Any = "SAME"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x [n, h, w, cin] -> [n, h', w', features]."""
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return _conv(x, kernel, bias, (self.stride,) * 2, self.padding, self.dtype)  # [n, h', w', f]


class CausalConv3d(nn.Module):
    """3D convolution that looks only at the past in time.

    With ``causal`` (the default) the ``kt - 1`` frames before the chunk come from ``cache``
    (zeros at the start of the video) and height/width get 'same' zero padding; the returned
    cache holds the last ``kt - 1`` input frames. With ``causal=False`` the caller supplies the
    temporal context itself (the stride-2 temporal downsampler) and nothing is padded in time.
    """

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    stride: tuple[int, int, int] = (1, 1, 1)
    causal: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache: Cache = None):
        """x [b, f, h, w, cin], cache [b, kt-1, h, w, cin] -> (y [b, f', h, w, features], cache)."""
        kt, kh, kw = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (kt, kh, kw, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        new_cache = None
        if self.causal and kt > 1:
            if cache is None:
                cache = jnp.zeros((x.shape[0], kt - 1) + x.shape[2:], x.dtype)  # [b, kt-1, h, w, c]
            x = jnp.concatenate([cache.astype(x.dtype), x], axis=1)  # [b, kt-1+f, h, w, c]
            new_cache = x[:, -(kt - 1):]  # [b, kt-1, h, w, c]
        padding = ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2))
        y = _conv(x, kernel, bias, self.stride, padding, self.dtype)  # [b, f', h, w, features]
        return y, new_cache


class RMSNorm(nn.Module):
    """Wan's RMS norm: L2-normalise over channels, times sqrt(channels) and a learned gain."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x [..., c] -> [..., c]; computed in float32."""
        c = x.shape[-1]
        gamma = self.param("gamma", nn.initializers.ones, (c,))
        x32 = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True))  # [..., 1]
        y = x32 / jnp.maximum(norm, 1e-12) * (c ** 0.5) * gamma.astype(jnp.float32)
        return y.astype(self.dtype)


class ResidualBlock(nn.Module):
    """norm -> SiLU -> causal conv -> norm -> SiLU -> causal conv, plus a (1x1x1) shortcut."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache: Cache = None, first: bool = True):
        """x [b, f, h, w, cin] -> ([b, f, h, w, features], {'conv1', 'conv2'} caches)."""
        del first
        if x.shape[-1] != self.features:
            shortcut, _ = CausalConv3d(self.features, (1, 1, 1), dtype=self.dtype, name="conv_shortcut")(x)
        else:
            shortcut = x.astype(self.dtype)  # [b, f, h, w, c]
        h = nn.silu(RMSNorm(self.dtype, name="norm1")(x))
        h, c1 = CausalConv3d(self.features, dtype=self.dtype, name="conv1")(h, sub_cache(cache, "conv1"))
        h = nn.silu(RMSNorm(self.dtype, name="norm2")(h))
        h, c2 = CausalConv3d(self.features, dtype=self.dtype, name="conv2")(h, sub_cache(cache, "conv2"))
        return h + shortcut, {"conv1": c1, "conv2": c2}  # [b, f, h, w, features]


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no mixing across time)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache: Cache = None, first: bool = True):
        """x [b, f, h, w, c] -> ([b, f, h, w, c], {})."""
        del cache, first
        b, f, h, w, c = x.shape
        frames = x.reshape(b * f, h, w, c)  # [b*f, h, w, c]
        qkv = Conv2d(3 * c, 1, padding="VALID", dtype=self.dtype, name="to_qkv")(
            RMSNorm(self.dtype, name="norm")(frames))  # [b*f, h, w, 3c]
        q, k, v = jnp.split(qkv.reshape(b * f, h * w, 3 * c), 3, axis=-1)  # each [b*f, h*w, c]
        logits = jnp.einsum("nqc,nkc->nqk", q, k).astype(jnp.float32) / (c ** 0.5)  # [b*f, hw, hw]
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("nqk,nkc->nqc", weights, v).reshape(b * f, h, w, c)  # [b*f, h, w, c]
        out = Conv2d(c, 1, padding="VALID", dtype=self.dtype, name="proj")(out)
        return out.reshape(b, f, h, w, c) + x.astype(self.dtype), {}


def _interleave_time(y, c):
    """[b, f, h, w, 2c] (two frames stacked on channels) -> [b, 2f, h, w, c]."""
    b, f, h, w, _ = y.shape
    y = y.reshape(b, f, h, w, 2, c).transpose(0, 1, 4, 2, 3, 5)  # [b, f, 2, h, w, c]
    return y.reshape(b, 2 * f, h, w, c)


class Resample(nn.Module):
    """Spatial 2x down/up-sampling, optionally with 2x temporal down/up-sampling.

    * ``downsample2d``: zero-pad right/bottom by one, 3x3 conv with stride 2.
    * ``downsample3d``: the same, then a (3,1,1) stride-2 temporal conv; the first frame of the
      video passes through, later frames are convolved with the previous frame as context, so
      1 + 2k frames become 1 + k.
    * ``upsample2d``: nearest 2x upsampling and a 3x3 conv to ``features`` channels.
    * ``upsample3d``: first a causal (3,1,1) temporal conv to twice the channels whose two halves
      become two frames; the first frame of the video passes through and is never used as
      context, so 1 + k frames become 1 + 2k; then the spatial upsampling.
    """

    mode: str
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache: Cache = None, first: bool = True):
        """x [b, f, h, w, c] -> (y [b, f', h', w', features], {'time_conv': cache} or {})."""
        b, _, _, _, c = x.shape
        new_cache = {}
        if self.mode == "upsample3d":
            time_conv = CausalConv3d(2 * c, (3, 1, 1), dtype=self.dtype, name="time_conv")
            if first:
                head, rest = x[:, :1], x[:, 1:]  # [b, 1, h, w, c], [b, f-1, h, w, c]
                if rest.shape[1]:
                    rest, new_cache["time_conv"] = time_conv(rest)  # [b, f-1, h, w, 2c]
                    x = jnp.concatenate([head.astype(self.dtype), _interleave_time(rest, c)], axis=1)
                else:
                    new_cache["time_conv"] = jnp.zeros((b, CACHE_FRAMES) + x.shape[2:], x.dtype)
            else:
                y, new_cache["time_conv"] = time_conv(x, sub_cache(cache, "time_conv"))  # [b, f, h, w, 2c]
                x = _interleave_time(y, c)  # [b, 2f, h, w, c]

        f = x.shape[1]
        frames = x.reshape((b * f,) + x.shape[2:])  # [b*f, h, w, c]
        if self.mode.startswith("upsample"):
            frames = jnp.repeat(jnp.repeat(frames, 2, axis=1), 2, axis=2)  # [b*f, 2h, 2w, c]
            frames = Conv2d(self.features, 3, padding=((1, 1), (1, 1)), dtype=self.dtype,
                            name="resample")(frames)  # [b*f, 2h, 2w, features]
        else:
            frames = Conv2d(self.features, 3, stride=2, padding=((0, 1), (0, 1)), dtype=self.dtype,
                            name="resample")(frames)  # [b*f, h/2, w/2, features]
        x = frames.reshape((b, f) + frames.shape[1:])  # [b, f, h', w', features]

        if self.mode == "downsample3d":
            time_conv = CausalConv3d(self.features, (3, 1, 1), stride=(2, 1, 1), causal=False,
                                     dtype=self.dtype, name="time_conv")
            if first:
                if f >= 3:
                    y, _ = time_conv(x)  # [b, (f-1)/2, h', w', features]
                    y = jnp.concatenate([x[:, :1], y], axis=1)  # [b, 1+(f-1)/2, h', w', features]
                else:
                    y = x[:, :1]  # [b, 1, h', w', features]
            else:
                context = sub_cache(cache, "time_conv").astype(x.dtype)  # [b, 1, h', w', features]
                y, _ = time_conv(jnp.concatenate([context, x], axis=1))  # [b, f/2, h', w', features]
            new_cache["time_conv"] = x[:, -1:]  # [b, 1, h', w', features]
            x = y
        return x, new_cache


class Indexed(nn.Module):
    """A named group whose children are called ``0``, ``1``, ... (like a torch ModuleList).

    Each call builds (on init) or reuses child ``index`` from ``make(name=...)`` and runs it, so
    parameter paths read ``down_blocks/3/conv1/kernel`` as in diffusers.
    """

    @nn.compact
    def __call__(self, index: int, make: Callable[..., nn.Module], *args):
        """Runs child ``index`` (built by ``make``) on ``args``."""
        return make(name=str(index))(*args)


class MidBlock(nn.Module):
    """Residual block, attention, residual block (resnets/0, attentions/0, resnets/1)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache: Cache = None, first: bool = True):
        """x [b, f, h, w, c] -> ([b, f, h, w, c], cache)."""
        c = x.shape[-1]
        resnets, attentions = Indexed(name="resnets"), Indexed(name="attentions")
        res = functools.partial(ResidualBlock, c, self.dtype)
        x, c0 = resnets(0, res, x, sub_cache(cache, "resnets", "0"), first)
        x, _ = attentions(0, functools.partial(AttentionBlock, self.dtype), x, None, first)
        x, c1 = resnets(1, res, x, sub_cache(cache, "resnets", "1"), first)
        return x, {"resnets": {"0": c0, "1": c1}}


class UpBlock(nn.Module):
    """Decoder stage: ``num_res_blocks + 1`` residual blocks, then an optional upsampler."""

    features: int
    num_res_blocks: int
    upsample_mode: str | None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache: Cache = None, first: bool = True):
        """x [b, f, h, w, cin] -> ([b, f', h', w', features or features // 2], cache)."""
        resnets = Indexed(name="resnets")
        new_cache: dict = {"resnets": {}}
        for j in range(self.num_res_blocks + 1):
            x, new_cache["resnets"][str(j)] = resnets(
                j, functools.partial(ResidualBlock, self.features, self.dtype), x,
                sub_cache(cache, "resnets", str(j)), first)
        if self.upsample_mode is not None:
            make = functools.partial(Resample, self.upsample_mode, self.features // 2, self.dtype)
            x, up_cache = Indexed(name="upsamplers")(0, make, x, sub_cache(cache, "upsamplers", "0"), first)
            new_cache["upsamplers"] = {"0": up_cache}
        return x, new_cache

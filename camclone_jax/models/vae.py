"""The Wan 2.1 causal 3D VAE (diffusers ``AutoencoderKLWan``, original ``WanVAE``) in Flax.

Channels-last video ``[batch, frames, height, width, 3]`` in [-1, 1] with ``1 + 4k`` frames
becomes a latent ``[batch, 1 + k, height / 8, width / 8, z_dim]`` (Wan 2.1: z_dim 16) and back.

    vae = WanVAE(config)                       # or: config, params = convert.load_vae(path)
    params = vae.init_params(jax.random.key(0))
    latents = vae.encode(params, video)        # normalised posterior mean
    mean, logvar = vae.encode_moments(params, video)   # unnormalised
    video = vae.decode(params, latents)        # clamped to [-1, 1]

Three ways to run, all giving the same result (up to float rounding; tiling approximately):

* chunked (default): as the original, the encoder sees frame 0 alone and then chunks of 4
  frames, the decoder one latent frame at a time; every causal conv carries the last frames of
  its input in a cache. The chunk loop is a ``lax.scan``, so it compiles once per shape and its
  activation memory is that of one chunk, whatever the video length.
* whole (``chunked=False``): one pass over all frames; faster where memory allows.
* tiled (``tiled=True`` or ``config.tiling``): large frames are cut into overlapping tiles of
  ``config.tile_sample_size`` pixels every ``config.tile_sample_stride`` pixels, each tile is
  run (chunked) in a ``lax.map`` and the results are blended linearly over the overlaps.

Inference only: ``dropout`` is kept for config parity and never applied.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax.models.base import ConfigBase
from camclone_jax.models.vae_layers import (
    CausalConv3d, Indexed, MidBlock, Resample, ResidualBlock, RMSNorm, UpBlock, sub_cache)
from camclone_jax.models.vae_tiling import tiled_apply

WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
CHUNK_FRAMES = 4  # frames per encoder chunk after the first frame, as in the original
VALUE_LIMIT = 1.5  # |value| above this means the video is not scaled to [-1, 1]


# ------------------------------------------------------------------------------------ config
@dataclasses.dataclass(frozen=True)
class WanVAEConfig(ConfigBase):
    """Hyper-parameters of the Wan 2.1 VAE; the defaults are the released Wan 2.1 model.

    Field names follow diffusers ``AutoencoderKLWan`` (including its spelling ``temperal``);
    ``attn_scales`` must stay empty (see ``__post_init__``).
    ``tile_sample_size``/``tile_sample_stride`` are (height, width) in pixels, multiples of the
    spatial factor; ``tiling`` turns tiling on by default; ``dtype`` is the compute dtype.
    """

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    in_channels: int = 3
    out_channels: int = 3
    tiling: bool = False
    tile_sample_size: tuple[int, int] = (256, 256)
    tile_sample_stride: tuple[int, int] = (192, 192)
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean",
                     "latents_std", "tile_sample_size", "tile_sample_stride"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "temperal_downsample", tuple(bool(t) for t in self.temperal_downsample))
        object.__setattr__(self, "latents_mean", tuple(float(v) for v in self.latents_mean))
        object.__setattr__(self, "latents_std", tuple(float(v) for v in self.latents_std))
        levels = len(self.dim_mult) - 1
        if self.attn_scales:
            raise ValueError(f"attn_scales={self.attn_scales} is not supported: attention outside the "
                             "middle blocks cannot run in the chunked path of the original Wan code or "
                             "of diffusers either (their encoders pass a cache the attention block "
                             "does not take), so no released Wan VAE uses it")
        if levels < 1:
            raise ValueError(f"dim_mult needs at least 2 entries, got {self.dim_mult}")
        if len(self.temperal_downsample) < levels:
            raise ValueError(f"temperal_downsample needs {levels} entries (one per downsampling "
                             f"level), got {self.temperal_downsample}")
        if sum(self.temperal_downsample[:levels]) > 2:
            raise ValueError("at most 2 temporal downsamplings are supported (4-frame chunks), got "
                             f"temperal_downsample={self.temperal_downsample}")
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ValueError(f"latents_mean/latents_std need z_dim={self.z_dim} values, got "
                             f"{len(self.latents_mean)}/{len(self.latents_std)}")
        if any(s <= 0 for s in self.latents_std):
            raise ValueError(f"latents_std must be positive, got {self.latents_std}")
        f = self.spatial_factor
        for name in ("tile_sample_size", "tile_sample_stride"):
            value = getattr(self, name)
            if len(value) != 2 or any(v <= 0 or v % f for v in value):
                raise ValueError(f"{name} must be two positive multiples of {f} pixels, got {value}")
        if any(s > t for s, t in zip(self.tile_sample_stride, self.tile_sample_size)):
            raise ValueError(f"tile_sample_stride {self.tile_sample_stride} exceeds tile_sample_size "
                             f"{self.tile_sample_size}: tiles would leave gaps")
        jnp.dtype(self.dtype)  # raises on an unknown dtype name

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent pixel along height and width (8 for Wan 2.1)."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame after the first (4 for Wan 2.1)."""
        return 2 ** sum(self.temperal_downsample[:len(self.dim_mult) - 1])

    def num_latent_frames(self, frames: int) -> int:
        """1 + 4k video frames -> 1 + 4k / temporal_factor latent frames."""
        return 1 + (frames - 1) // self.temporal_factor


# ------------------------------------------------------------------------------------ modules
class Encoder(nn.Module):
    """Video chunk -> 2 * z_dim channels (mean and log-variance before quant_conv)."""

    config: WanVAEConfig

    @nn.compact
    def __call__(self, x, cache=None, first=True):
        """x [b, f, h, w, in] -> ([b, f', h/8, w/8, 2z], cache)."""
        cfg, dtype = self.config, jnp.dtype(self.config.dtype)
        dims = [cfg.base_dim * m for m in (1,) + cfg.dim_mult]
        new: dict = {"down_blocks": {}}
        x, new["conv_in"] = CausalConv3d(dims[0], dtype=dtype, name="conv_in")(x, sub_cache(cache, "conv_in"))
        blocks, k = Indexed(name="down_blocks"), 0
        for i, out_dim in enumerate(dims[1:]):
            layers = [functools.partial(ResidualBlock, out_dim, dtype)] * cfg.num_res_blocks
            if i != len(cfg.dim_mult) - 1:
                mode = "downsample3d" if cfg.temperal_downsample[i] else "downsample2d"
                layers.append(functools.partial(Resample, mode, out_dim, dtype))
            for make in layers:
                x, new["down_blocks"][str(k)] = blocks(
                    k, make, x, sub_cache(cache, "down_blocks", str(k)), first)
                k += 1
        x, new["mid_block"] = MidBlock(dtype, name="mid_block")(x, sub_cache(cache, "mid_block"), first)
        x = nn.silu(RMSNorm(dtype, name="norm_out")(x))
        x, new["conv_out"] = CausalConv3d(2 * cfg.z_dim, dtype=dtype, name="conv_out")(
            x, sub_cache(cache, "conv_out"))
        return x, new  # [b, f', h/8, w/8, 2z]


class Decoder(nn.Module):
    """Latent chunk -> video chunk (not clamped)."""

    config: WanVAEConfig

    @nn.compact
    def __call__(self, x, cache=None, first=True):
        """x [b, l, h, w, z] -> ([b, f, 8h, 8w, out], cache)."""
        cfg, dtype = self.config, jnp.dtype(self.config.dtype)
        dims = [cfg.base_dim * m for m in (cfg.dim_mult[-1],) + cfg.dim_mult[::-1]]
        temperal_upsample = cfg.temperal_downsample[:len(cfg.dim_mult) - 1][::-1]
        new: dict = {"up_blocks": {}}
        x, new["conv_in"] = CausalConv3d(dims[0], dtype=dtype, name="conv_in")(x, sub_cache(cache, "conv_in"))
        x, new["mid_block"] = MidBlock(dtype, name="mid_block")(x, sub_cache(cache, "mid_block"), first)
        blocks = Indexed(name="up_blocks")
        for i, out_dim in enumerate(dims[1:]):
            mode = None
            if i != len(cfg.dim_mult) - 1:
                mode = "upsample3d" if temperal_upsample[i] else "upsample2d"
            make = functools.partial(UpBlock, out_dim, cfg.num_res_blocks, mode, dtype)
            x, new["up_blocks"][str(i)] = blocks(i, make, x, sub_cache(cache, "up_blocks", str(i)), first)
        x = nn.silu(RMSNorm(dtype, name="norm_out")(x))
        x, new["conv_out"] = CausalConv3d(cfg.out_channels, dtype=dtype, name="conv_out")(
            x, sub_cache(cache, "conv_out"))
        return x, new  # [b, f, 8h, 8w, out]


class Autoencoder(nn.Module):
    """Encoder + quant_conv and post_quant_conv + decoder, one chunk at a time."""

    config: WanVAEConfig

    def setup(self):
        dtype = jnp.dtype(self.config.dtype)
        self.encoder = Encoder(self.config)
        self.quant_conv = CausalConv3d(2 * self.config.z_dim, (1, 1, 1), dtype=dtype)
        self.post_quant_conv = CausalConv3d(self.config.z_dim, (1, 1, 1), dtype=dtype)
        self.decoder = Decoder(self.config)

    def encode_chunk(self, x, cache=None, first=True):
        """x [b, f, h, w, in] -> (moments [b, f', h/8, w/8, 2z] in float32, cache)."""
        h, cache = self.encoder(x, cache, first)
        moments, _ = self.quant_conv(h)
        return moments.astype(jnp.float32), cache

    def decode_chunk(self, z, cache=None, first=True):
        """z [b, l, h, w, z] (unnormalised) -> (video [b, f, 8h, 8w, out] in float32, cache)."""
        x, _ = self.post_quant_conv(z)
        y, cache = self.decoder(x, cache, first)
        return y.astype(jnp.float32), cache

    def __call__(self, video):
        """Whole-video encode then decode of the mean (used to create the parameters)."""
        moments, _ = self.encode_chunk(video)
        return self.decode_chunk(moments[..., :self.config.z_dim])[0]


# ------------------------------------------------------------------------- chunked / whole runs
def _run_causal(run_chunk, x, chunk: int, chunked: bool):
    """Runs ``run_chunk(x, cache, first) -> (y, cache)`` causally over the frames of x.

    Whole: one call on all frames. Chunked: frame 0 alone, then a ``lax.scan`` over chunks of
    ``chunk`` frames carrying the cache; each step slices its chunk from x and writes its output
    into a preallocated result, so no stacked copy of the input or output is made.
    x [b, 1 + n*chunk, ...] -> [b, f0 + n*f1, ...].
    """
    if not chunked:
        return run_chunk(x, None, True)[0]
    head, cache = run_chunk(x[:, :1], None, True)  # [b, f0, ...]
    n = (x.shape[1] - 1) // chunk
    if n == 0:
        return head
    step = jax.eval_shape(lambda c, xs: run_chunk(xs, c, False)[0], cache, x[:, 1:1 + chunk])
    per = step.shape[1]  # output frames per chunk
    out = jnp.zeros((x.shape[0], head.shape[1] + n * per) + step.shape[2:], step.dtype)
    out = jax.lax.dynamic_update_slice_in_dim(out, head.astype(step.dtype), 0, axis=1)

    def body(carry, i):
        cache, out = carry
        xs = jax.lax.dynamic_slice_in_dim(x, 1 + i * chunk, chunk, axis=1)  # [b, chunk, ...]
        y, cache = run_chunk(xs, cache, False)  # [b, per, ...]
        out = jax.lax.dynamic_update_slice_in_dim(out, y, head.shape[1] + i * per, axis=1)
        return (cache, out), None

    (_, out), _ = jax.lax.scan(body, (cache, out), jnp.arange(n))
    return out


# --------------------------------------------------------------------------- jitted entry points
# Static arguments: ``config`` with its tiling fields reset (`_arch`), so changing tile sizes does
# not recompile the untiled path; ``tiles`` = ((tile_h, tile_w), (stride_h, stride_w)) in pixels
# or None for no tiling.
@functools.partial(jax.jit, static_argnames=("config", "chunked", "tiles"))
def _encode_moments(params, video, *, config: WanVAEConfig, chunked: bool, tiles):
    """video [b, f, h, w, in] -> moments [b, l, h/8, w/8, 2z] (float32)."""
    module = Autoencoder(config)

    def run_chunk(x, cache, first):
        return module.apply({"params": params}, x, cache, first, method=Autoencoder.encode_chunk)

    def run(x):
        return _run_causal(run_chunk, x, CHUNK_FRAMES, chunked)

    if tiles:
        return tiled_apply(run, video, tiles[0], tiles[1], 1 / config.spatial_factor)
    return run(video)


@functools.partial(jax.jit, static_argnames=("config", "chunked", "tiles"))
def _decode(params, z, *, config: WanVAEConfig, chunked: bool, tiles):
    """z [b, l, h, w, z] (unnormalised) -> video [b, f, 8h, 8w, out] clamped to [-1, 1]."""
    module = Autoencoder(config)

    def run_chunk(x, cache, first):
        return module.apply({"params": params}, x, cache, first, method=Autoencoder.decode_chunk)

    def run(x):
        return _run_causal(run_chunk, x, 1, chunked)

    if tiles:
        f = config.spatial_factor
        video = tiled_apply(run, z, (tiles[0][0] // f, tiles[0][1] // f),
                            (tiles[1][0] // f, tiles[1][1] // f), f)
    else:
        video = run(z)
    return jnp.clip(video, -1.0, 1.0)


def _arch(config: WanVAEConfig) -> WanVAEConfig:
    """The config with the tiling fields at their defaults (the architecture alone)."""
    default = WanVAEConfig.__dataclass_fields__
    return dataclasses.replace(config, **{k: default[k].default for k in (
        "tiling", "tile_sample_size", "tile_sample_stride")})


def _random_params(shapes, rng):
    """Draws parameters for a tree of shapes by leaf name: kernels LeCun-normal (one truncated
    normal draw for all of them, sliced), biases zero, gamma one."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    sizes = [int(np.prod(leaf.shape)) if path[-1].key == "kernel" else 0 for path, leaf in paths]
    noise = np.asarray(jax.random.truncated_normal(rng, -2.0, 2.0, (sum(sizes),))) / 0.87962566
    leaves, offset = [], 0
    for size, (path, leaf) in zip(sizes, paths):
        if size:
            fan_in = size // leaf.shape[-1]
            value = noise[offset:offset + size].reshape(leaf.shape) / np.sqrt(fan_in)
            leaves.append(value.astype(leaf.dtype))
            offset += size
        else:
            fill = 1.0 if path[-1].key == "gamma" else 0.0
            leaves.append(np.full(leaf.shape, fill, leaf.dtype))
    return jax.tree_util.tree_map(jnp.asarray, jax.tree_util.tree_unflatten(treedef, leaves))


# ------------------------------------------------------------------------------ input checks
def check_video(video, config: WanVAEConfig):
    """Raises ValueError naming what is wrong with a video meant for `WanVAE.encode`."""
    shape = tuple(video.shape)
    if len(shape) != 5:
        raise ValueError(f"video must be 5-D (batch, frames, height, width, channels), got shape {shape}")
    b, f, h, w, c = shape
    if c != config.in_channels:
        hint = " (channels-first input? move channels last)" if f == config.in_channels else ""
        raise ValueError(f"video has {c} channels in its last axis, expected {config.in_channels}{hint}; "
                         f"shape {shape}")
    if (f - 1) % CHUNK_FRAMES:
        k = (f - 1) // CHUNK_FRAMES
        raise ValueError(f"video has {f} frames; the frame count must be 1 + 4k (e.g. {1 + 4 * k} or "
                         f"{1 + 4 * (k + 1)})")
    sf = config.spatial_factor
    if h % sf or w % sf:
        raise ValueError(f"video height and width must be divisible by {sf}, got {h}x{w}")
    if not jnp.issubdtype(video.dtype, jnp.floating):
        raise ValueError(f"video dtype is {video.dtype}; expected floats in [-1, 1] "
                         "(e.g. frames / 127.5 - 1 for uint8 frames)")
    try:
        lo, hi = float(jnp.min(video)), float(jnp.max(video))
    except jax.errors.ConcretizationTypeError:
        return  # traced inside the caller's jit: values are unknown here
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("video values contain NaN or infinity")
    if lo < -VALUE_LIMIT or hi > VALUE_LIMIT:
        raise ValueError(f"video values span [{lo:.3g}, {hi:.3g}], far outside [-1, 1]; scale "
                         "pixels to [-1, 1] (e.g. frames / 127.5 - 1 for 0..255 values)")


def check_latents(latents, config: WanVAEConfig):
    """Raises ValueError naming what is wrong with latents meant for `WanVAE.decode`."""
    shape = tuple(latents.shape)
    if len(shape) != 5:
        raise ValueError(f"latents must be 5-D (batch, frames, height, width, channels), got shape {shape}")
    if shape[-1] != config.z_dim:
        raise ValueError(f"latents have {shape[-1]} channels in their last axis, expected "
                         f"z_dim={config.z_dim}; shape {shape}")
    if min(shape) == 0:
        raise ValueError(f"latents have an empty axis: shape {shape}")


# ------------------------------------------------------------------------------------ the API
class WanVAE:
    """The Wan 2.1 VAE as pure functions of a plain parameter dict (see the module docstring)."""

    def __init__(self, config: WanVAEConfig | None = None):
        self.config = config or WanVAEConfig()
        self.module = Autoencoder(self.config)

    def param_shapes(self) -> dict:
        """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (traced, nothing computed)."""
        sf = self.config.spatial_factor
        video = jax.ShapeDtypeStruct((1, 1 + CHUNK_FRAMES, sf, sf, self.config.in_channels), jnp.float32)
        return jax.eval_shape(self.module.init, jax.random.key(0), video)["params"]

    def init_params(self, rng) -> dict:
        """Random parameters (nested dict, paths as in diffusers: ``encoder/conv_in/kernel``).

        Kernels are LeCun-normal, biases zero, norm gains one. The values are drawn from the
        shapes directly rather than by running ``module.init``, whose forward pass would cost a
        full XLA compile (or a slow eager run) of the model.
        """
        return _random_params(self.param_shapes(), rng)

    def _static(self, tiled: bool | None, chunked: bool, height: int, width: int) -> dict:
        """The static jit arguments; tiling only where a frame exceeds a tile."""
        cfg = self.config
        use = cfg.tiling if tiled is None else bool(tiled)
        tile, stride = cfg.tile_sample_size, cfg.tile_sample_stride
        tiles = (tile, stride) if use and (height > tile[0] or width > tile[1]) else None
        return dict(config=_arch(cfg), chunked=bool(chunked), tiles=tiles)

    def normalize(self, z):
        """Unnormalised latents -> (z - latents_mean) / latents_std."""
        mean = jnp.asarray(self.config.latents_mean, jnp.float32)
        return (z - mean) / jnp.asarray(self.config.latents_std, jnp.float32)

    def denormalize(self, latents):
        """Normalised latents -> latents * latents_std + latents_mean."""
        std = jnp.asarray(self.config.latents_std, jnp.float32)
        return latents * std + jnp.asarray(self.config.latents_mean, jnp.float32)

    def encode_moments(self, params, video, *, chunked: bool = True, tiled: bool | None = None):
        """video [b, 1+4k, h, w, 3] in [-1, 1] -> (mean, logvar) each [b, 1+k, h/8, w/8, z],
        unnormalised; logvar clamped to [-30, 20] as the diffusers posterior does."""
        check_video(video, self.config)
        video = jnp.asarray(video)
        moments = _encode_moments(params, video, **self._static(tiled, chunked, *video.shape[2:4]))
        mean, logvar = jnp.split(moments, 2, axis=-1)  # each [b, l, h/8, w/8, z]
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def encode(self, params, video, *, sample_rng=None, chunked: bool = True,
               tiled: bool | None = None):
        """video [b, 1+4k, h, w, 3] in [-1, 1] -> normalised latents [b, 1+k, h/8, w/8, z].

        The posterior mean (as Wan pipelines use it), or a sample when ``sample_rng`` is given.
        """
        mean, logvar = self.encode_moments(params, video, chunked=chunked, tiled=tiled)
        z = mean
        if sample_rng is not None:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(sample_rng, mean.shape, mean.dtype)
        return self.normalize(z)

    def decode(self, params, latents, *, chunked: bool = True, tiled: bool | None = None):
        """Normalised latents [b, l, h, w, z] -> video [b, 1 + 4(l-1), 8h, 8w, 3] in [-1, 1]."""
        check_latents(latents, self.config)
        z = self.denormalize(jnp.asarray(latents, jnp.float32))
        sf = self.config.spatial_factor
        return _decode(params, z, **self._static(tiled, chunked, z.shape[2] * sf, z.shape[3] * sf))

    def decode_unnormalized(self, params, z, *, chunked: bool = True, tiled: bool | None = None):
        """Like `decode` for unnormalised latents (what diffusers' ``AutoencoderKLWan.decode`` takes)."""
        check_latents(z, self.config)
        z, sf = jnp.asarray(z, jnp.float32), self.config.spatial_factor
        return _decode(params, z, **self._static(tiled, chunked, z.shape[2] * sf, z.shape[3] * sf))

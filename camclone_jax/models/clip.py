"""CLIP ViT-H/14 vision tower as Wan 2.1 I2V uses it, and its image preprocessing.

Model (equal to transformers' ``CLIPVisionModel`` up to ``hidden_states[-2]`` and to Wan's
``VisionTransformer.forward(use_31_block=True)``): patch embedding (a 14x14 stride-14 conv, no
bias) -> [class token | 256 patches] + learned positions -> pre LayerNorm -> pre-norm blocks
(LayerNorm -> MHA with q/k/v/o biases, scale 1/sqrt(head_dim) -> residual; LayerNorm -> fc1 ->
GELU (exact; quick_gelu per config) -> fc2 -> residual). Wan I2V conditions on the hidden
states of the penultimate layer: the output here is the stream after ``num_layers - skip_last``
blocks, [b, 257, 1280]; the last block, the post LayerNorm and the projection are never run and
are not stored in our params. LayerNorms run in float32.

Inputs are channels-last pixel values [b, 224, 224, 3], already normalised with CLIP's mean/std
(``preprocess_images``).

Parameter paths (blocks stacked on a leading "layers" axis):
  patch_embedding/kernel [p, p, 3, dim]   cls_embedding [dim]   pos_embedding [1 + n, dim]
  pre_norm/{scale,bias}
  blocks/norm1/{scale,bias}  blocks/attn/{q,k,v,o}/{kernel,bias}
  blocks/norm2/{scale,bias}  blocks/{fc1,fc2}/{kernel,bias}
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax.models.base import ConfigBase, init_plain, prepare_params, shapes_plain
from camclone_jax.models.layers import AffineLayerNorm, dense

KIND = "clip"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ACTIVATIONS = ("gelu", "quick_gelu")
_normal = nn.initializers.normal


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig(ConfigBase):
    """Sizes and switches of the vision tower (defaults: open-clip XLM-RoBERTa ViT-H/14, Wan I2V).

    Attributes:
      image_size, patch_size: input side and patch side (224 and 14 -> 256 patches + 1 class).
      dim, num_heads, mlp_dim: widths.
      num_layers: blocks of the checkpoint (32 for ViT-H).
      skip_last: trailing blocks not run (1: penultimate-layer features, as Wan I2V).
      activation: "gelu" (exact; Wan's ViT-H) or "quick_gelu" (x * sigmoid(1.702 x)).
      eps: LayerNorm epsilon.
      dtype / param_dtype / scan_layers: execution switches, as in the DiT.
    """

    image_size: int = 224
    patch_size: int = 14
    dim: int = 1280
    num_heads: int = 16
    mlp_dim: int = 5120
    num_layers: int = 32
    skip_last: int = 1
    activation: str = "gelu"
    eps: float = 1e-5
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = True

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size "
                             f"{self.patch_size}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of num_heads {self.num_heads}")
        if not 0 <= self.skip_last < self.num_layers:
            raise ValueError(f"skip_last must be in [0, num_layers), got {self.skip_last}")

    @property
    def num_tokens(self) -> int:
        """Class token plus patches (257 for 224/14)."""
        return 1 + (self.image_size // self.patch_size) ** 2

    @property
    def used_layers(self) -> int:
        """Blocks that are run and stored."""
        return self.num_layers - self.skip_last

    @classmethod
    def from_transformers(cls, config: Mapping[str, Any], **overrides) -> "CLIPVisionConfig":
        """From a transformers ``CLIPVisionConfig`` dict, or a ``CLIPConfig`` (its vision_config)."""
        config = config.get("vision_config", config)
        if config.get("num_channels", 3) != 3:
            raise ValueError(f"num_channels {config['num_channels']} != 3 is not supported")
        return cls.from_keys(config, TRANSFORMERS_KEYS, overrides)


# our field -> transformers' CLIPVisionConfig key, or (key, default)
TRANSFORMERS_KEYS = dict(
    image_size=("image_size", 224), patch_size="patch_size", dim="hidden_size",
    num_heads="num_attention_heads", mlp_dim="intermediate_size", num_layers="num_hidden_layers",
    activation=("hidden_act", "quick_gelu"), eps=("layer_norm_eps", 1e-5))
VIT_H_14 = CLIPVisionConfig()


class Attention(nn.Module):
    """Multi-head self-attention with biases, softmax in float32."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        b, n, _ = x.shape
        h, hd = cfg.num_heads, cfg.dim // cfg.num_heads
        proj = functools.partial(dense, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        q = proj(cfg.dim, ("embed", "heads"), "q")(x).reshape(b, n, h, hd)  # [b, n, h, hd]
        k = proj(cfg.dim, ("embed", "heads"), "k")(x).reshape(b, n, h, hd)  # [b, n, h, hd]
        v = proj(cfg.dim, ("embed", "heads"), "v")(x).reshape(b, n, h, hd)  # [b, n, h, hd]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                            preferred_element_type=jnp.float32) * hd ** -0.5  # [b, h, n, n]
        weights = jax.nn.softmax(logits, axis=-1).astype(cfg.dtype)  # [b, h, n, n]
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, cfg.dim)  # [b, n, dim]
        return proj(cfg.dim, ("heads", "embed"), "o")(out)  # [b, n, dim]


class VisionBlock(nn.Module):
    """Pre-norm transformer block; scanned as ``(x, None) -> (x, None)``."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, x, _):
        cfg = self.config
        y = AffineLayerNorm(cfg.eps, cfg.dtype, name="norm1")(x)  # [b, n, dim]
        x = x + Attention(cfg, name="attn")(y).astype(x.dtype)  # [b, n, dim]
        y = AffineLayerNorm(cfg.eps, cfg.dtype, name="norm2")(x)  # [b, n, dim]
        y = dense(cfg.mlp_dim, ("embed", "mlp"), "fc1", cfg.dtype, cfg.param_dtype)(y)
        if cfg.activation == "quick_gelu":
            y = y * jax.nn.sigmoid(1.702 * y)  # [b, n, mlp]
        else:
            y = jax.nn.gelu(y, approximate=False)  # [b, n, mlp]
        y = dense(cfg.dim, ("mlp", "embed"), "fc2", cfg.dtype, cfg.param_dtype)(y)
        return x + y.astype(x.dtype), None


class CLIPVisionTower(nn.Module):
    """Pixels [b, H, W, 3] (normalised) -> penultimate-layer tokens [b, 1 + n, dim]."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, pixels):
        cfg = self.config
        p, s = cfg.patch_size, cfg.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (s, s, 3):
            raise ValueError(f"pixels have shape {tuple(pixels.shape)}, expected (batch, {s}, {s}, "
                             "3), channels-last and preprocessed (see preprocess_images)")
        b, g = pixels.shape[0], s // p
        kernel = self.param("patch_embedding", nn.with_logical_partitioning(
            nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3),
            (None, None, None, "embed")), (p, p, 3, cfg.dim), cfg.param_dtype)
        patches = pixels.astype(cfg.dtype).reshape(b, g, p, g, p, 3).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(b, g * g, p * p * 3)  # [b, n, p*p*3]
        x = patches @ kernel.reshape(p * p * 3, cfg.dim).astype(cfg.dtype)  # [b, n, dim]
        cls = self.param("cls_embedding", nn.with_logical_partitioning(
            _normal(cfg.dim ** -0.5), ("embed",)), (cfg.dim,), cfg.param_dtype)
        pos = self.param("pos_embedding", nn.with_logical_partitioning(
            _normal(cfg.dim ** -0.5), (None, "embed")), (cfg.num_tokens, cfg.dim), cfg.param_dtype)
        cls = jnp.broadcast_to(cls.astype(cfg.dtype), (b, 1, cfg.dim))  # [b, 1, dim]
        x = jnp.concatenate([cls, x], axis=1) + pos.astype(cfg.dtype)[None]  # [b, 1+n, dim]
        x = AffineLayerNorm(cfg.eps, cfg.dtype, name="pre_norm")(x)  # [b, 1+n, dim]
        stack = nn.scan(VisionBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                        length=cfg.used_layers,
                        unroll=1 if cfg.scan_layers else cfg.used_layers,
                        metadata_params={nn.PARTITION_NAME: "layers"})
        x, _ = stack(cfg, name="blocks")(x, None)
        return x  # [b, 1+n, dim]


# ------------------------------------------------------------------------------- params
def _init_boxed(cfg: CLIPVisionConfig, rng):
    pixels = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    return CLIPVisionTower(cfg).init(rng, pixels)["params"]


init_clip_params = functools.partial(init_plain, _init_boxed)  # (config, rng=0) -> params
clip_param_shapes = functools.partial(shapes_plain, _init_boxed)  # (config) -> shapes tree


@functools.partial(jax.jit, static_argnums=0)
def _encode(cfg: CLIPVisionConfig, params, pixels):
    return CLIPVisionTower(cfg).apply({"params": params}, pixels)


def encode_images(config: CLIPVisionConfig, params, pixels) -> jnp.ndarray:
    """Jitted tower on preprocessed pixels [b, S, S, 3] -> [b, 257, dim]."""
    return _encode(config, prepare_params(config, params), jnp.asarray(pixels, jnp.float32))


# -------------------------------------------------------------------------- preprocessing
def _cubic_weights(in_size: int, out_size: int, a: float = -0.75) -> tuple[np.ndarray, np.ndarray]:
    """Taps [out, 4] and weights [out, 4] of PyTorch's bicubic resize (align_corners=False,
    no antialiasing, edge indices clamped)."""
    scale = in_size / out_size
    src = (np.arange(out_size) + 0.5) * scale - 0.5  # [out]
    x0 = np.floor(src)
    t = (src - x0)[:, None]  # [out, 1]
    d = np.abs(np.arange(-1, 3)[None, :] - t)  # [out, 4] distances to the 4 taps
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    w = np.where(d <= 1, near, far)  # [out, 4]
    taps = np.clip(x0[:, None].astype(np.int64) + np.arange(-1, 3)[None, :], 0, in_size - 1)
    return taps, w


def resize_bicubic(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of [b, H, W, c] float images, equal to ``torch.nn.functional.interpolate(
    mode='bicubic', align_corners=False)`` (which Wan I2V uses)."""
    images = np.asarray(images, np.float32)
    ty, wy = _cubic_weights(images.shape[1], height)
    tx, wx = _cubic_weights(images.shape[2], width)
    rows = np.einsum("bokwc,ok->bowc", images[:, ty], wy)  # [b, height, W, c]
    return np.einsum("bhokc,ok->bhoc", rows[:, :, tx], wx).astype(np.float32)  # [b, h, w, c]


def preprocess_images(images, size: int = 224, mode: str = "wan") -> np.ndarray:
    """Images -> CLIP pixel values [b, size, size, 3], normalised with CLIP's mean/std.

    ``images``: [b, H, W, 3] (or [H, W, 3]) uint8 in [0, 255] or float in [-1, 1] (Wan's video
    range). ``mode``: "wan" resizes straight to size x size (as Wan I2V's ``CLIPModel.visual``
    does, aspect ratio not kept); "crop" resizes the shortest side to ``size`` then centre-crops
    (as CLIPImageProcessor does, but with PyTorch-style non-antialiased bicubic).
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images have shape {tuple(np.shape(images))}, expected (batch, H, W, 3)")
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else (x.astype(np.float32) + 1) / 2
    if mode == "wan":
        x = resize_bicubic(x, size, size)  # [b, size, size, 3]
    elif mode == "crop":
        h, w = x.shape[1:3]
        nh, nw = (size, max(size, round(w * size / h))) if h <= w else (
            max(size, round(h * size / w)), size)
        x = resize_bicubic(x, nh, nw)  # [b, nh, nw, 3]
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[:, top:top + size, left:left + size]  # [b, size, size, 3]
    else:
        raise ValueError(f"unknown mode {mode!r}; choose 'wan' or 'crop'")
    return ((x - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)).astype(np.float32)

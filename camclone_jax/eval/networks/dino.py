"""DINO (v1) ViT image features as transformers' ``ViTModel`` computes them, and their input
preprocessing, for VBench's Subject Consistency (which uses DINO ViT-B/16).

Model (equal to ``ViTModel(...).last_hidden_state``, e.g. facebook/dino-vitb16): patch embedding
(a p x p stride-p conv with bias, run as a matmul on flattened patches; pixels past the last
whole patch are dropped, as the conv drops them) -> [class token | patches] + learned positions
-> pre-norm blocks (LayerNorm -> MHA with q/k/v/o biases -> residual; LayerNorm -> fc1 -> GELU
(exact) -> fc2 -> residual; the block is ``clip.VisionBlock``, the same ViT block) -> final
LayerNorm. The feature is the class token of the output, [b, dim]; the pooler (dense + tanh) of
``ViTModel`` is never run, as DINO's own models have none.

Inputs of any size: when the patch grid differs from the checkpoint's (image_size /
patch_size square), the position table is resized like transformers'
``interpolate_pos_encoding``: bicubic (a = -0.75), align_corners=False, output size given, no
antialiasing; the class position is kept. (DINO's torch.hub code, which VBench loads, resizes
with ``scale_factor=(g' + 0.1) / g`` instead, so on non-square inputs its features differ
slightly from transformers' and ours.)

Inputs are channels-last pixel values [b, H, W, 3] normalised with ImageNet's mean/std
(``preprocess_frames``).

Parameter paths (blocks stacked on a leading "layers" axis):
  patch_embedding/{kernel [p, p, 3, dim], bias [dim]}   cls_embedding [dim]
  pos_embedding [1 + (S/p)^2, dim]
  blocks/norm1/{scale,bias}  blocks/attn/{q,k,v,o}/{kernel,bias}
  blocks/norm2/{scale,bias}  blocks/{fc1,fc2}/{kernel,bias}
  norm/{scale,bias}
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax.models.base import ConfigBase, prepare_params, shapes_plain
from camclone_jax.models.clip import ACTIVATIONS, VisionBlock, _cubic_weights
from camclone_jax.models.layers import AffineLayerNorm

KIND = "dino"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESS_MODES = ("vbench", "square")
_normal = nn.initializers.normal


@dataclasses.dataclass(frozen=True)
class DinoConfig(ConfigBase):
    """Sizes of the ViT (defaults: DINO ViT-B/16, facebook/dino-vitb16).

    Attributes:
      image_size, patch_size: the checkpoint's square input side and patch side (224 and 16:
        a 14 x 14 position table); other input sizes interpolate the table.
      dim, num_heads, mlp_dim, num_layers: hidden size, attention heads, MLP width, blocks.
      eps: LayerNorm epsilon (``layer_norm_eps``; DINO 1e-6).
      activation: "gelu" (exact, transformers' "gelu") or "quick_gelu".
      dtype / param_dtype / scan_layers: execution switches, as in the CLIP tower.
    Field names follow ``CLIPVisionConfig``, so the shared ``clip.VisionBlock`` reads them.
    """

    image_size: int = 224
    patch_size: int = 16
    dim: int = 768
    num_heads: int = 12
    mlp_dim: int = 3072
    num_layers: int = 12
    eps: float = 1e-6
    activation: str = "gelu"
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

    @property
    def grid(self) -> int:
        """Side of the checkpoint's position table (14 for 224 / 16)."""
        return self.image_size // self.patch_size

    @classmethod
    def from_transformers(cls, config: Mapping[str, Any], **overrides) -> "DinoConfig":
        """From a transformers ``ViTConfig`` dict (config.json of ``ViTModel``), by
        ``TRANSFORMERS_KEYS``."""
        problems = []
        if config.get("num_channels", 3) != 3:
            problems.append(f"num_channels {config['num_channels']} != 3")
        if not config.get("qkv_bias", True):
            problems.append("qkv_bias=False (DINO's q/k/v have biases)")
        for key in ("image_size", "patch_size"):
            if not isinstance(config.get(key, 0), int):
                problems.append(f"non-square {key} {config[key]}")
        if problems:
            raise ValueError("unsupported ViT config: " + "; ".join(problems))
        return cls.from_keys(config, TRANSFORMERS_KEYS, overrides)


# our field -> transformers' ViTConfig key, or (key, default)
TRANSFORMERS_KEYS = dict(
    image_size=("image_size", 224), patch_size=("patch_size", 16), dim="hidden_size",
    num_heads="num_attention_heads", mlp_dim="intermediate_size", num_layers="num_hidden_layers",
    eps=("layer_norm_eps", 1e-12), activation=("hidden_act", "gelu"))
DINO_VITB16 = DinoConfig()


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] matrix of PyTorch's bicubic resize along one axis (align_corners=False, output
    size given, no antialiasing, edge taps clamped); the identity when the sizes agree."""
    taps, w = _cubic_weights(in_size, out_size)  # [out, 4] each
    m = np.zeros((out_size, in_size), np.float64)
    np.add.at(m, (np.arange(out_size)[:, None], taps), w)
    return m.astype(np.float32)


def interpolate_positions(pos: jnp.ndarray, grid: int, height: int, width: int) -> jnp.ndarray:
    """Position table [1 + grid^2, dim] -> [1 + height * width, dim] for a height x width patch
    grid (transformers' ``interpolate_pos_encoding``); unchanged for the checkpoint's grid."""
    if (height, width) == (grid, grid):
        return pos
    table = pos[1:].reshape(grid, grid, pos.shape[-1])  # [g, g, dim]
    wy = jnp.asarray(bicubic_matrix(grid, height))  # [height, g]
    wx = jnp.asarray(bicubic_matrix(grid, width))  # [width, g]
    table = jnp.einsum("hi,wj,ijd->hwd", wy, wx, table.astype(jnp.float32),
                       precision=jax.lax.Precision.HIGHEST)  # [height, width, dim]
    return jnp.concatenate([pos[:1], table.reshape(height * width, -1).astype(pos.dtype)])


class PatchEmbedding(nn.Module):
    """Stride-p p x p conv with bias as a matmul: pixels [b, H, W, 3] -> [b, H/p * W/p, dim]
    (row-major patch order, the conv's flatten order); trailing partial patches are dropped."""

    config: DinoConfig

    @nn.compact
    def __call__(self, pixels):
        cfg, p = self.config, self.config.patch_size
        b, gh, gw = pixels.shape[0], pixels.shape[1] // p, pixels.shape[2] // p
        kernel = self.param("kernel", nn.with_logical_partitioning(
            nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3),
            (None, None, None, "embed")), (p, p, 3, cfg.dim), cfg.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                          (cfg.dim,), cfg.param_dtype)
        x = pixels[:, :gh * p, :gw * p].astype(cfg.dtype)  # [b, gh*p, gw*p, 3]
        x = x.reshape(b, gh, p, gw, p, 3).transpose(0, 1, 3, 2, 4, 5)  # [b, gh, gw, p, p, 3]
        x = x.reshape(b, gh * gw, p * p * 3)  # [b, n, p*p*3]
        x = x @ kernel.reshape(p * p * 3, cfg.dim).astype(cfg.dtype)  # [b, n, dim]
        return x + bias.astype(cfg.dtype)  # [b, n, dim]


class DinoViT(nn.Module):
    """Pixels [b, H, W, 3] (ImageNet-normalised) -> final-norm tokens [b, 1 + n, dim]
    (``ViTModel.last_hidden_state``; token 0 is the DINO feature)."""

    config: DinoConfig

    @nn.compact
    def __call__(self, pixels):
        cfg, p = self.config, self.config.patch_size
        if pixels.ndim != 4 or pixels.shape[-1] != 3 or min(pixels.shape[1:3]) < p:
            raise ValueError(f"pixels have shape {tuple(pixels.shape)}, expected (batch, H, W, 3) "
                             f"channels-last with H, W >= patch size {p} (see preprocess_frames)")
        b, gh, gw = pixels.shape[0], pixels.shape[1] // p, pixels.shape[2] // p
        x = PatchEmbedding(cfg, name="patch_embedding")(pixels)  # [b, gh*gw, dim]
        cls = self.param("cls_embedding", nn.with_logical_partitioning(
            _normal(0.02), ("embed",)), (cfg.dim,), cfg.param_dtype)
        pos = self.param("pos_embedding", nn.with_logical_partitioning(
            _normal(0.02), (None, "embed")), (1 + cfg.grid ** 2, cfg.dim), cfg.param_dtype)
        pos = interpolate_positions(pos, cfg.grid, gh, gw)  # [1 + gh*gw, dim]
        cls = jnp.broadcast_to(cls.astype(cfg.dtype), (b, 1, cfg.dim))  # [b, 1, dim]
        x = jnp.concatenate([cls, x], axis=1) + pos.astype(cfg.dtype)[None]  # [b, 1+n, dim]
        stack = nn.scan(VisionBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                        length=cfg.num_layers, unroll=1 if cfg.scan_layers else cfg.num_layers,
                        metadata_params={nn.PARTITION_NAME: "layers"})
        x, _ = stack(cfg, name="blocks")(x, None)  # [b, 1+n, dim]
        return AffineLayerNorm(cfg.eps, cfg.dtype, name="norm")(x)  # [b, 1+n, dim]


# ------------------------------------------------------------------------------- params
def _init_boxed(cfg: DinoConfig, rng):
    pixels = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    return DinoViT(cfg).init(rng, pixels)["params"]


dino_param_shapes = functools.partial(shapes_plain, _init_boxed)  # (config) -> shapes tree


@functools.partial(jax.jit, static_argnums=0)
def _encode(cfg: DinoConfig, params, pixels):
    return DinoViT(cfg).apply({"params": params}, pixels)


def encode_images(config: DinoConfig, params, pixels) -> jnp.ndarray:
    """Jitted ViT on preprocessed pixels [b, H, W, 3] -> last hidden states [b, 1 + n, dim]
    (one compilation per input shape)."""
    return _encode(config, prepare_params(config, params), jnp.asarray(pixels, jnp.float32))


def cls_features(config: DinoConfig, params, pixels) -> jnp.ndarray:
    """DINO features: the class token of ``encode_images``, [b, dim] (not normalised)."""
    return encode_images(config, params, pixels)[:, 0]  # [b, dim]


# -------------------------------------------------------------------------- preprocessing
def _linear_taps(in_size: int, out_size: int):
    """Lower taps [out], upper taps [out] and upper weights [out, 1] of PyTorch's bilinear
    resize (align_corners=False, output size given, no antialiasing)."""
    f32 = np.float32
    scale = np.float64(f32(in_size) / f32(out_size))  # float32, as PyTorch's CPU kernel
    # scale * (i + 0.5) - 0.5 rounded to float32 once (a fused multiply-add, as PyTorch's CPU
    # kernel computes it; rounding twice moves weights by up to 1e-5 on 480 -> 224)
    src = np.maximum((scale * (np.arange(out_size) + 0.5) - 0.5).astype(f32), f32(0))  # [out]
    lo = src.astype(np.int64)  # [out] floor (src >= 0)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, (src - lo.astype(f32))[:, None]


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of float images [b, H, W, c], equal to ``torch.nn.functional.interpolate(
    mode='bilinear', align_corners=False, antialias=False)`` (torchvision's tensor ``Resize``
    with antialias=False, as VBench calls it)."""
    x = np.asarray(images, np.float32)
    lo, hi, t = _linear_taps(x.shape[2], width)  # along width first, as PyTorch's kernel
    x = x[:, :, lo] * (1 - t)[None, None] + x[:, :, hi] * t[None, None]  # [b, H, width, c]
    lo, hi, t = _linear_taps(x.shape[1], height)
    x = x[:, lo] * (1 - t)[None, :, :, None] + x[:, hi] * t[None, :, :, None]  # [b, h, w, c]
    return x.astype(np.float32)


def vbench_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Output (height, width) of torchvision's ``Resize(size)``: the shorter side becomes
    ``size``, the longer ``int(size * long / short)`` (truncated)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def preprocess_frames(frames, size: int = 224, mode: str = "vbench") -> np.ndarray:
    """Frames uint8 [b, H, W, 3] (or [H, W, 3]) -> DINO pixel values [b, h, w, 3] float32.

    ``mode``: "vbench" (VBench's ``dino_transform``: the shorter side resized to ``size`` with
    the aspect ratio kept, bilinear without antialiasing, rounded back to uint8 as torchvision
    does for uint8 tensors; the model then interpolates its positions) or "square" (resized to
    size x size, no rounding). Then /255 and ImageNet mean/std.
    """
    x = np.asarray(frames)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [b, H, W, 3], got {x.dtype} "
                         f"{list(np.shape(frames))}")
    if mode == "vbench":
        x = np.round(resize_bilinear(x, *vbench_size(x.shape[1], x.shape[2], size)))  # [b, h, w, 3]
    elif mode == "square":
        x = resize_bilinear(x, size, size)  # [b, size, size, 3]
    else:
        raise ValueError(f"unknown mode {mode!r}; choose from {PREPROCESS_MODES}")
    x = x.astype(np.float32) / 255.0
    return ((x - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)).astype(np.float32)

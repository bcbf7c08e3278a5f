"""RAFT optical flow (Teed & Deng 2020) in Flax, laid out as torchvision's port of it.

Channels-last throughout: images [batch, height, width, 3] in [-1, 1] (torchvision's
``Raft_*_Weights.transforms()`` and the original RAFT both map uint8 RGB x to 2 * x / 255 - 1),
height and width multiples of 8; the flow is [batch, height, width, 2] as (dx, dy) in pixels,
from image1 to image2.

The pieces (the RAFT paper, sections 3.1-3.3 and appendix B, with torchvision's variants):
  * feature encoder on both images and context encoder on image1: a 7x7 stride-2 stem, three
    stages of two residual (raft_large) or bottleneck (raft_small) blocks with strides 1, 2, 2
    and a 1x1 output conv: features at 1/8 resolution. Norms as torchvision uses them: instance
    norm without affine parameters in the feature encoders, batch norm (eval mode: running
    statistics, kept in ``params`` with the affine ones) in raft_large's context encoder, none
    in raft_small's. The context output is split into the GRU's initial hidden state (tanh) and
    the context (relu).
  * all-pairs correlation volume <f1(i, j), f2(k, l)> / sqrt(C), pooled over (k, l) into a
    pyramid of ``corr_levels`` levels (2x2 average pooling, odd sizes floored).
  * lookup: around the current match of every pixel, a (2r+1)^2 window on every level,
    bilinearly sampled with torch ``grid_sample(align_corners=True)`` semantics (zero outside).
  * update block (shared weights, ``iters`` times in a ``nn.scan``): motion encoder of
    (correlation, flow), ConvGRU (raft_small, one 3x3) or SepConvGRU (raft_large, 1x5 then 5x1),
    flow head -> delta flow. The flow is upsampled x8 every iteration: convex combination of the
    3x3 coarse neighbours with a predicted mask (raft_large) or bilinear (raft_small).

Parameter paths mirror torchvision's module names (``feature_encoder/layer2_0/conv1/conv/kernel``
is ``feature_encoder.layer2.0.convnormrelu1.0.weight``; ``update/gru/gru1/convz/kernel`` is
``update_block.recurrent_block.convgru1.convz.weight``); convert/raft.py maps them.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax.models.base import ConfigBase

NORMS = ("instance", "batch", "none")
BLOCKS = ("residual", "bottleneck")
EPS = 1e-5  # torch's BatchNorm2d / InstanceNorm2d default
UPSAMPLE = 8  # the encoders downsample by 8; the flow is upsampled by as much


@dataclasses.dataclass(frozen=True)
class RaftConfig(ConfigBase):
    """Sizes of a RAFT; the defaults are torchvision's ``raft_large`` (see ``small()``).

    *_layers: the encoder's 5 widths (stem, stage 1, 2, 3, output); *_block: "residual" or
    "bottleneck"; *_norm: "instance", "batch" or "none". corr_levels / corr_radius: the pyramid.
    motion_corr_layers: 1 or 2 widths of the correlation convs; motion_flow_layers: the 2 widths
    of the flow convs; motion_out: the motion encoder's output width (flow included).
    hidden: GRU state width (the first `hidden` context channels). gru_kernels: one (kh, kw) per
    ConvGRU in sequence. mask_hidden: width of the upsampling mask predictor, None for bilinear.
    """
    feature_layers: tuple = (64, 64, 96, 128, 256)
    feature_block: str = "residual"
    feature_norm: str = "instance"
    context_layers: tuple = (64, 64, 96, 128, 256)
    context_block: str = "residual"
    context_norm: str = "batch"
    corr_levels: int = 4
    corr_radius: int = 4
    motion_corr_layers: tuple = (256, 192)
    motion_flow_layers: tuple = (128, 64)
    motion_out: int = 128
    hidden: int = 128
    gru_kernels: tuple = ((1, 5), (5, 1))
    flow_head_hidden: int = 256
    mask_hidden: int | None = 256
    mask_multiplier: float = 0.25

    def __post_init__(self):
        for name in ("feature", "context"):
            layers = getattr(self, f"{name}_layers")
            if len(layers) != 5:
                raise ValueError(f"{name}_layers needs 5 widths, got {layers}")
            if getattr(self, f"{name}_block") not in BLOCKS:
                raise ValueError(f"{name}_block must be one of {BLOCKS}")
            if getattr(self, f"{name}_norm") not in NORMS:
                raise ValueError(f"{name}_norm must be one of {NORMS}")
        if self.context_layers[-1] <= self.hidden:
            raise ValueError(f"context_layers[-1] ({self.context_layers[-1]}) must exceed "
                             f"hidden ({self.hidden}): the context is what is left after it")
        if len(self.motion_corr_layers) not in (1, 2) or len(self.motion_flow_layers) != 2:
            raise ValueError("motion_corr_layers needs 1 or 2 widths, motion_flow_layers 2")

    @classmethod
    def large(cls, **overrides) -> "RaftConfig":
        """torchvision's ``raft_large`` (5.3M parameters; raft-things is these weights)."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides) -> "RaftConfig":
        """torchvision's ``raft_small`` (1.0M parameters)."""
        return cls(**{**dict(
            feature_layers=(32, 32, 64, 96, 128), feature_block="bottleneck",
            feature_norm="instance", context_layers=(32, 32, 64, 96, 160),
            context_block="bottleneck", context_norm="none", corr_levels=4, corr_radius=3,
            motion_corr_layers=(96,), motion_flow_layers=(64, 32), motion_out=82, hidden=96,
            gru_kernels=((3, 3),), flow_head_hidden=128, mask_hidden=None), **overrides})


# ------------------------------------------------------------------------------- layers
def conv(features, kernel, stride=1, name=None):
    """A torch-style Conv2d with bias and 'same' padding k // 2 (all RAFT convs have odd k)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return nn.Conv(features, (kh, kw), strides=stride, padding=((kh // 2, kh // 2), (kw // 2, kw // 2)),
                   name=name)


class Norm(nn.Module):
    """Instance norm (no affine), batch norm in eval mode (scale, bias, mean, var all in
    ``params``) or nothing."""
    kind: str

    @nn.compact
    def __call__(self, x):  # [batch, h, w, c]
        if self.kind == "none":
            return x
        if self.kind == "instance":
            mean = x.mean(axis=(1, 2), keepdims=True)  # [batch, 1, 1, c]
            var = jnp.square(x - mean).mean(axis=(1, 2), keepdims=True)  # biased, as torch
            return (x - mean) * jax.lax.rsqrt(var + EPS)
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        return (x - mean) * jax.lax.rsqrt(var + EPS) * scale + bias


class ConvNorm(nn.Module):
    """conv -> norm -> relu (torchvision's ``Conv2dNormActivation``; relu optional)."""
    features: int
    kernel: int = 3
    stride: int = 1
    norm: str = "none"
    relu: bool = True

    @nn.compact
    def __call__(self, x):  # [batch, h, w, c_in]
        x = conv(self.features, self.kernel, self.stride, name="conv")(x)  # [batch, h', w', f]
        x = Norm(self.norm, name="norm")(x)
        return nn.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
    """Two 3x3 ConvNorms (the first strided), a 1x1 projection when strided, relu(x + y)."""
    features: int
    norm: str
    stride: int = 1

    @nn.compact
    def __call__(self, x):  # [batch, h, w, c_in]
        y = ConvNorm(self.features, 3, self.stride, self.norm, name="conv1")(x)  # [batch, h', w', f]
        y = ConvNorm(self.features, 3, 1, self.norm, name="conv2")(y)
        if self.stride != 1:
            x = ConvNorm(self.features, 1, self.stride, self.norm, relu=False, name="downsample")(x)
        return nn.relu(x + y)


class BottleneckBlock(nn.Module):
    """1x1 to f/4, 3x3 (strided) at f/4, 1x1 to f; a 1x1 projection when strided; relu(x + y)."""
    features: int
    norm: str
    stride: int = 1

    @nn.compact
    def __call__(self, x):  # [batch, h, w, c_in]
        mid = self.features // 4
        y = ConvNorm(mid, 1, 1, self.norm, name="conv1")(x)  # [batch, h, w, f/4]
        y = ConvNorm(mid, 3, self.stride, self.norm, name="conv2")(y)  # [batch, h', w', f/4]
        y = ConvNorm(self.features, 1, 1, self.norm, name="conv3")(y)  # [batch, h', w', f]
        if self.stride != 1:
            x = ConvNorm(self.features, 1, self.stride, self.norm, relu=False, name="downsample")(x)
        return nn.relu(x + y)


class Encoder(nn.Module):
    """Feature / context encoder: stem, 3 stages of 2 blocks (strides 1, 2, 2), 1x1 out: 1/8 size."""
    layers: tuple
    block: str
    norm: str

    @nn.compact
    def __call__(self, x):  # [batch, H, W, 3]
        block = ResidualBlock if self.block == "residual" else BottleneckBlock
        x = ConvNorm(self.layers[0], 7, 2, self.norm, name="stem")(x)  # [batch, H/2, W/2, l0]
        for stage, stride in zip((1, 2, 3), (1, 2, 2)):
            width = self.layers[stage]
            x = block(width, self.norm, stride, name=f"layer{stage}_0")(x)
            x = block(width, self.norm, 1, name=f"layer{stage}_1")(x)
        return conv(self.layers[4], 1, name="out")(x)  # [batch, H/8, W/8, l4]


# ------------------------------------------------------------------------------- correlation
def grid_sample(img, coords):
    """torch ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=True)`` with
    absolute pixel coordinates: img [n, h, w, c], coords [n, ..., 2] as (x, y) with x in
    [0, w - 1] on the pixel centres -> [n, ..., c]. Corners outside the image count as 0."""
    n, h, w, c = img.shape
    x, y = coords[..., 0], coords[..., 1]  # [n, ...]
    x0, y0 = jnp.floor(x), jnp.floor(y)
    flat = img.reshape(n, h * w, c)  # [n, h*w, c]
    out = 0.0
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        weight = (1 - jnp.abs(x - xi)) * (1 - jnp.abs(y - yi))  # [n, ...]
        inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
        idx = (jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)).astype(jnp.int32)
        vals = jnp.take_along_axis(flat, idx.reshape(n, -1, 1), axis=1)  # [n, points, c]
        vals = vals.reshape(*x.shape, c)  # [n, ..., c]
        out = out + vals * jnp.where(inside, weight, 0.0)[..., None]
    return out


def corr_pyramid(fmap1, fmap2, levels):
    """All-pairs correlation [b*h*w, h_l, w_l, 1] per level: <f1(i,j), f2(k,l)> / sqrt(C),
    pooled 2x2 over (k, l) level after level (odd sizes floored, as avg_pool2d does)."""
    b, h, w, c = fmap1.shape
    corr = jnp.einsum("bijc,bklc->bijkl", fmap1, fmap2) / jnp.sqrt(jnp.float32(c))  # [b, h, w, h, w]
    corr = corr.reshape(b * h * w, h, w, 1)  # [b*h*w, h, w, 1]
    pyramid = [corr]
    for _ in range(levels - 1):
        n, hh, ww, _ = corr.shape
        corr = corr[:, :hh // 2 * 2, :ww // 2 * 2]
        corr = corr.reshape(n, hh // 2, 2, ww // 2, 2, 1).mean(axis=(2, 4))  # [n, hh/2, ww/2, 1]
        pyramid.append(corr)
    return pyramid


def corr_lookup(pyramid, coords, radius):
    """Correlation features [b, h, w, levels*(2r+1)^2] around coords [b, h, w, 2] (x, y).

    On level l the window centre is coords / 2^l; channel a*(2r+1) + c of a level is the offset
    (dx, dy) = (a - r, c - r) (torchvision's order: x offset major)."""
    b, h, w, _ = coords.shape
    d = jnp.arange(-radius, radius + 1, dtype=jnp.float32)  # [2r+1]
    delta = jnp.stack(jnp.meshgrid(d, d, indexing="ij"), axis=-1)  # [2r+1, 2r+1, 2] (dx, dy)
    centre = coords.reshape(b * h * w, 1, 1, 2)  # [b*h*w, 1, 1, 2]
    out = []
    for level, corr in enumerate(pyramid):
        pts = centre / 2 ** level + delta  # [b*h*w, 2r+1, 2r+1, 2]
        out.append(grid_sample(corr, pts).reshape(b, h, w, -1))  # [b, h, w, (2r+1)^2]
    return jnp.concatenate(out, axis=-1)  # [b, h, w, levels*(2r+1)^2]


def coords_grid(b, h, w):
    """Pixel coordinates [b, h, w, 2] as (x, y)."""
    y, x = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
    return jnp.broadcast_to(jnp.stack([x, y], axis=-1), (b, h, w, 2))


# ------------------------------------------------------------------------------- update
class MotionEncoder(nn.Module):
    """convs over correlation and flow, fused, with the flow appended: [.., motion_out]."""
    corr_layers: tuple
    flow_layers: tuple
    out: int

    @nn.compact
    def __call__(self, flow, corr):  # [b, h, w, 2], [b, h, w, levels*(2r+1)^2]
        c = ConvNorm(self.corr_layers[0], 1, name="convcorr1")(corr)  # [b, h, w, cl0]
        if len(self.corr_layers) == 2:
            c = ConvNorm(self.corr_layers[1], 3, name="convcorr2")(c)  # [b, h, w, cl1]
        f = ConvNorm(self.flow_layers[0], 7, name="convflow1")(flow)  # [b, h, w, fl0]
        f = ConvNorm(self.flow_layers[1], 3, name="convflow2")(f)  # [b, h, w, fl1]
        m = ConvNorm(self.out - 2, 3, name="out")(jnp.concatenate([c, f], -1))  # [b, h, w, out-2]
        return jnp.concatenate([m, flow], axis=-1)  # [b, h, w, out]


class ConvGRU(nn.Module):
    """h' = (1 - z) h + z tanh(conv_q([r h, x])), z, r = sigmoid(conv([h, x]))."""
    hidden: int
    kernel: tuple

    @nn.compact
    def __call__(self, h, x):  # [b, h, w, hidden], [b, h, w, c]
        hx = jnp.concatenate([h, x], axis=-1)  # [b, h, w, hidden + c]
        z = nn.sigmoid(conv(self.hidden, self.kernel, name="convz")(hx))  # [b, h, w, hidden]
        r = nn.sigmoid(conv(self.hidden, self.kernel, name="convr")(hx))
        q = jnp.tanh(conv(self.hidden, self.kernel, name="convq")(jnp.concatenate([r * h, x], -1)))
        return (1 - z) * h + z * q


class Recurrent(nn.Module):
    """ConvGRUs in sequence (one 3x3: ConvGRU; 1x5 then 5x1: SepConvGRU)."""
    hidden: int
    kernels: tuple

    @nn.compact
    def __call__(self, h, x):
        for i, kernel in enumerate(self.kernels):
            h = ConvGRU(self.hidden, tuple(kernel), name=f"gru{i + 1}")(h, x)  # [b, h, w, hidden]
        return h


class FlowHead(nn.Module):
    """conv3x3 -> relu -> conv3x3 to the delta flow [b, h, w, 2]."""
    hidden: int

    @nn.compact
    def __call__(self, h):
        return conv(2, 3, name="conv2")(nn.relu(conv(self.hidden, 3, name="conv1")(h)))


class MaskPredictor(nn.Module):
    """The convex upsampling weights [b, h, w, 9*8*8] (times torchvision's 0.25)."""
    hidden: int
    multiplier: float

    @nn.compact
    def __call__(self, h):
        x = ConvNorm(self.hidden, 3, name="conv1")(h)  # [b, h, w, hidden]
        return self.multiplier * conv(9 * UPSAMPLE * UPSAMPLE, 1, name="out")(x)  # [b, h, w, 576]


def upsample_convex(flow, mask):
    """flow [b, h, w, 2] at 1/8 -> [b, 8h, 8w, 2]: each fine pixel a softmax-weighted (convex)
    combination of the 3x3 coarse neighbours of its cell (zero-padded), times 8. mask
    [b, h, w, 576] is ordered (neighbour ky*3+kx, sub-row, sub-col) as in torchvision."""
    b, h, w, _ = flow.shape
    f = UPSAMPLE
    weights = jax.nn.softmax(mask.reshape(b, h, w, 9, f, f), axis=3)  # [b, h, w, 9, f, f]
    padded = jnp.pad(f * flow, ((0, 0), (1, 1), (1, 1), (0, 0)))  # [b, h+2, w+2, 2]
    neighbours = jnp.stack([padded[:, ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)],
                           axis=3)  # [b, h, w, 9, 2]
    up = jnp.einsum("bhwkij,bhwkc->bhiwjc", weights, neighbours)  # [b, h, f, w, f, 2]
    return up.reshape(b, h * f, w * f, 2)


def _interp_matrix(n_in, n_out):
    """[n_out, n_in] weights of 1-D linear interpolation with align_corners=True."""
    m = np.zeros((n_out, n_in), np.float32)
    scale = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(0)
    src = np.arange(n_out, dtype=np.float32) * scale
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    np.add.at(m, (np.arange(n_out), i0), 1 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def upsample_bilinear(flow):
    """flow [b, h, w, 2] at 1/8 -> [b, 8h, 8w, 2], bilinear with align_corners=True, times 8."""
    _, h, w, _ = flow.shape
    my, mx = _interp_matrix(h, UPSAMPLE * h), _interp_matrix(w, UPSAMPLE * w)
    return UPSAMPLE * jnp.einsum("oh,bhwc,pw->bopc", my, flow, mx)  # [b, 8h, 8w, 2]


class UpdateStep(nn.Module):
    """One refinement (run by ``nn.scan``, the same weights every time): lookup, motion
    encoder, GRU, flow head, and the x8 upsampled flow of this iteration."""
    config: RaftConfig

    @nn.compact
    def __call__(self, carry, pyramid, context, coords0):
        cfg = self.config
        hidden, coords1 = carry  # [b, h, w, hidden], [b, h, w, 2]
        corr = corr_lookup(pyramid, coords1, cfg.corr_radius)  # [b, h, w, levels*(2r+1)^2]
        flow = coords1 - coords0  # [b, h, w, 2]
        motion = MotionEncoder(cfg.motion_corr_layers, cfg.motion_flow_layers, cfg.motion_out,
                               name="motion_encoder")(flow, corr)  # [b, h, w, motion_out]
        x = jnp.concatenate([context, motion], axis=-1)  # [b, h, w, ctx + motion_out]
        hidden = Recurrent(cfg.hidden, cfg.gru_kernels, name="gru")(hidden, x)
        coords1 = coords1 + FlowHead(cfg.flow_head_hidden, name="flow_head")(hidden)
        if cfg.mask_hidden is None:
            up = upsample_bilinear(coords1 - coords0)  # [b, 8h, 8w, 2]
        else:
            mask = MaskPredictor(cfg.mask_hidden, cfg.mask_multiplier, name="mask")(hidden)
            up = upsample_convex(coords1 - coords0, mask)  # [b, 8h, 8w, 2]
        return (hidden, coords1), up


class RAFT(nn.Module):
    """RAFT: images [b, H, W, 3] in [-1, 1] (H, W multiples of 8) -> the flow after each of
    ``iters`` refinements [iters, b, H, W, 2] (dx, dy in pixels; the last is the estimate)."""
    config: RaftConfig = RaftConfig()

    @nn.compact
    def __call__(self, image1, image2, iters: int = 12):
        cfg = self.config
        b, height, width, _ = image1.shape
        if height % 8 or width % 8 or image2.shape != image1.shape:
            raise ValueError(f"images must have one shape with H, W multiples of 8, got "
                             f"{image1.shape} and {image2.shape}")
        fmaps = Encoder(cfg.feature_layers, cfg.feature_block, cfg.feature_norm,
                        name="feature_encoder")(jnp.concatenate([image1, image2]))  # [2b, H/8, W/8, f]
        fmap1, fmap2 = fmaps[:b], fmaps[b:]
        h, w = fmap1.shape[1:3]
        if min(h, w) < 2 ** (cfg.corr_levels - 1):
            raise ValueError(f"images of {height}x{width} are too small for {cfg.corr_levels} "
                             f"correlation levels: need H/8 and W/8 >= {2 ** (cfg.corr_levels - 1)}")
        pyramid = corr_pyramid(fmap1, fmap2, cfg.corr_levels)
        ctx = Encoder(cfg.context_layers, cfg.context_block, cfg.context_norm,
                      name="context_encoder")(image1)  # [b, h, w, c]
        hidden, context = jnp.tanh(ctx[..., :cfg.hidden]), nn.relu(ctx[..., cfg.hidden:])
        coords0 = coords_grid(b, h, w)  # [b, h, w, 2]
        steps = nn.scan(UpdateStep, variable_broadcast="params", split_rngs={"params": False},
                        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=iters)
        _, flows = steps(cfg, name="update")((hidden, coords0), pyramid, context, coords0)
        return flows  # [iters, b, H, W, 2]


def normalize(frames):
    """uint8 RGB [..., 3] -> float32 in [-1, 1] as torchvision's RAFT transforms do."""
    return (jnp.asarray(frames, jnp.float32) / 255.0 - 0.5) / 0.5


def raft_param_shapes(cfg: RaftConfig):
    """Nested {path: ShapeDtypeStruct} of a RAFT's params (no memory allocated)."""
    model = RAFT(cfg)
    size = 8 * 2 ** (cfg.corr_levels - 1)
    x = jnp.zeros((1, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, x, 1))["params"]

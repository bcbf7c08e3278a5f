"""DiT configuration: the Wan 2.1 transformer sizes plus CamClone and scaling switches.

``DiTConfig`` is a frozen dataclass (hashable, so it can be a Flax module attribute). It maps
one-to-one onto diffusers' ``WanTransformer3DModel`` config (``from_diffusers`` /
``to_diffusers``) for the fields the architecture has in common; the rest are ours:
CamClone conditioning (``concat``, ``spatial_attn``), the cost-cutting options of the
condition tokens (``cam_downsample``, ``cond_drop``, ``cond_attention``) and execution (dtypes,
attention backend, scan/remat).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from camclone_jax.models.base import ConfigBase


CONCAT_MODES = ("frame", "channel")
COND_ATTENTION = ("full", "joint", "segment")
PREDICTIONS = ("velocity", "sample", "skip")
TIMESTEP_ROUNDING = ("none", "bfloat16")
ATTENTION_BACKENDS = ("auto", "xla", "flash", "cudnn")
CONTEXT_PARALLEL = ("none", "ulysses", "ring")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class DiTConfig(ConfigBase):
    """Architecture and execution settings of the CamClone DiT.

    Attributes:
      dim: model width (num_heads * head_dim).
      ffn_dim: hidden width of the feed-forward network.
      num_layers: transformer blocks.
      num_heads: attention heads; head_dim = dim // num_heads.
      in_channels: channels the patch embedding sees per segment: the latent channels, plus the
        first-frame mask (4) and first-frame latent channels for the I2V base (36 for Wan I2V).
      out_channels: predicted (latent) channels.
      text_dim: width of the text-encoder embeddings (4096 for umT5-XXL).
      freq_dim: sinusoidal timestep embedding width.
      image_dim: CLIP image-token width (1280) for the I2V base; None for T2V.
      patch_size: (t, h, w) patch of the latent.
      eps: epsilon of the block norms and q/k RMS norms.
      cross_attn_norm: affine LayerNorm before the cross-attention (Wan: True).
      qk_norm: RMS-normalise q and k over all heads (Wan: True).
      rope_theta: RoPE base.
      rope_max_seq_len: maximum positions per axis (diffusers' table size; checked at call).
      concat: how the camera/content references join the target: "frame" (CamCloneMaster,
        tokens appended along the frame axis) or "channel" (the paper's ablation).
      spatial_attn: the paper's block variant with a 2D per-frame self-attention before the 3D
        attention (not in Wan weights; its output projection starts at zero).
      dtype: compute dtype; params_dtype: storage dtype of freshly initialised params.
      attention: "xla" (reference, any device), "flash" (blockwise online-softmax XLA),
        "cudnn" (cuDNN flash attention on GPU), or "auto" (cudnn on GPU with a 16-bit dtype,
        flash elsewhere).
      flash_block_q / flash_block_kv: tile sizes of the blockwise attention. The defaults (128
        queries against up to 8192 keys, so usually one key tile and no rescaling) were the
        fastest forward and backward in benchmarks/dit.py on CPU.
      prediction: what the head predicts: "velocity" (Wan: v = z - x) or "sample" (the clean x,
        turned into v = (x_t - x) / max(t, 0.05) inside the model, so training and sampling still
        see a velocity). "sample" is for narrow models on high-dimensional tokens (pixel space):
        a velocity head must reproduce the noise through the model's width, a sample head only
        the image (as in Li & He, "Back to Basics: Let Denoising Generative Models Denoise").
        "skip": a sample head on a skip connection, x = c_skip(t) x_t + F, where
        c_skip = (1 - t) s^2 / ((1 - t)^2 s^2 + t^2) (s = ``skip_sigma``) is the best linear
        guess of detail of std s from x_t = (1 - t) x + t z (EDM's c_skip, Karras et al.): x_t
        passes through once the noise is below that detail (low t), and the head alone
        predicts x at high t, as "sample" does. Set s to the error a sample head cannot get
        below (the detail it cannot draw through its width): 0.2 for a 64-wide model on the
        192-value tokens of configs/clone_3d.py (docs/results.md).
      skip_sigma: s of prediction "skip".
      timestep_rounding: "none", or "bfloat16": timesteps are rounded to bfloat16 before the
        time embedding, as the public release's training and sampling cast them (up to 2.0
        off on the 0-1000 scale); for its checkpoints (``sample --timestep_rounding``).
      context_parallel: sequence parallel attention over the mesh's context axis: "none",
        "ulysses" (all-to-all sequence <-> heads; heads per tensor shard must divide by the
        context size) or "ring" (key/value chunks passed round with ppermute); see
        models/context_parallel.py. Needs a mesh in scope (``jax.set_mesh``); a no-op without
        one or with a context axis of size 1.
      scan_layers: run the blocks with ``nn.scan`` (one compiled block; params stacked on a
        leading "layers" axis). The param layout is always stacked, whatever this says.
      remat: rematerialisation policy per block: none, full, dots, dots_no_batch.

    Cost-cutting options for the tripled sequence of frame concatenation (the paper's stated
    limitation). They change no parameter, so a checkpoint loads under any of them, but they do
    change the function (fine-tune with the option on). Defaults reproduce the release exactly.
    All need ``concat="frame"`` and no ``spatial_attn``.
      cam_downsample: spatial average-pooling factor of the camera-reference latents before
        patchify (camera motion is global): k gives k^2 fewer camera tokens. The pooled tokens
        keep the spatial extent of the target in RoPE: token (i, j) of the pooled grid sits at
        height/width positions (k i, k j), the position of the top-left target token it
        covers (integer positions shared with the target grid; temporal positions unchanged).
        Latent height and width must be multiples of k times the patch size.
      cond_drop: "latent drop", training only: each example keeps a random subset of
        round((1 - cond_drop) n) of the n tokens of each reference segment (camera and content
        separately; a fixed count, so shapes are static) and the rest are removed from the
        sequence, their RoPE positions travelling with the kept tokens. Active only when the
        DiT gets a ``cond_drop_key`` (training/step.py passes one); sampling keeps every token.
      cond_attention: "full" (the release: every token attends to every token, one timestep
        modulates all), or block-sparse: target tokens attend to every token while condition
        tokens attend only to condition tokens: "joint" (camera and content references
        together) or "segment" (each reference only to itself, the cheapest). Condition tokens
        are then modulated with the fixed timestep 0 (they are clean), so they depend on neither
        the noisy target nor t: their keys/values are computed once per sample and cached
        across denoising steps (``DiT.build_cond_cache``, ``cond_cache=``).
    """

    dim: int = 1536
    ffn_dim: int = 8960
    num_layers: int = 30
    num_heads: int = 12
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    image_dim: int | None = None
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    cross_attn_norm: bool = True
    qk_norm: bool = True
    rope_theta: float = 10000.0
    rope_max_seq_len: int = 1024
    concat: str = "frame"
    spatial_attn: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention: str = "auto"
    flash_block_q: int = 128
    flash_block_kv: int = 8192
    context_parallel: str = "none"
    prediction: str = "velocity"
    skip_sigma: float = 0.2
    scan_layers: bool = True
    remat: str = "none"
    cam_downsample: int = 1
    cond_drop: float = 0.0
    cond_attention: str = "full"
    timestep_rounding: str = "none"

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        problems = []
        if self.dim % self.num_heads:
            problems.append(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        elif (self.dim // self.num_heads) % 2:
            problems.append(f"head_dim {self.dim // self.num_heads} must be even for RoPE")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            problems.append(f"patch_size must be three positive ints, got {self.patch_size}")
        if self.in_channels < self.out_channels:
            problems.append(f"in_channels {self.in_channels} < out_channels {self.out_channels}")
        if not self.skip_sigma > 0:
            problems.append(f"skip_sigma must be > 0, got {self.skip_sigma}")
        for name, value, allowed in (("concat", self.concat, CONCAT_MODES),
                                     ("attention", self.attention, ATTENTION_BACKENDS),
                                     ("prediction", self.prediction, PREDICTIONS),
                                     ("context_parallel", self.context_parallel,
                                      CONTEXT_PARALLEL),
                                     ("remat", self.remat, REMAT_POLICIES),
                                     ("cond_attention", self.cond_attention, COND_ATTENTION),
                                     ("timestep_rounding", self.timestep_rounding,
                                      TIMESTEP_ROUNDING),
                                     ("dtype", self.dtype, DTYPES),
                                     ("param_dtype", self.param_dtype, DTYPES)):
            if value not in allowed:
                problems.append(f"{name}={value!r} is not one of {allowed}")
        if int(self.cam_downsample) != self.cam_downsample or self.cam_downsample < 1:
            problems.append(f"cam_downsample must be a positive integer, got {self.cam_downsample}")
        if not 0.0 <= self.cond_drop < 1.0:
            problems.append(f"cond_drop must be in [0, 1), got {self.cond_drop}")
        if self.cuts_cost and (self.concat != "frame" or self.spatial_attn):
            problems.append("cam_downsample, cond_drop and cond_attention need concat='frame' "
                            f"without spatial_attn (got concat={self.concat!r}, "
                            f"spatial_attn={self.spatial_attn})")
        if problems:
            raise ValueError("invalid DiTConfig: " + "; ".join(problems))

    @property
    def cuts_cost(self) -> bool:
        """Whether any cost-cutting option (cam_downsample, cond_drop, cond_attention) is on."""
        return self.cam_downsample != 1 or self.cond_drop > 0 or self.cond_attention != "full"

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def cond_channels(self) -> int:
        """Channels of the I2V first-frame condition (mask + image latent); 0 for T2V."""
        return self.in_channels - self.out_channels

    @property
    def patch_in_channels(self) -> int:
        """Input channels of the patch embedding (tripled by channel concatenation)."""
        return self.in_channels * (3 if self.concat == "channel" else 1)

    # ---------------------------------------------------------------- diffusers interop
    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], **overrides) -> "DiTConfig":
        """Builds a config from a diffusers ``WanTransformer3DModel`` config dict."""
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        qk = config.get("qk_norm", "rms_norm_across_heads")
        if qk not in (None, "rms_norm_across_heads"):
            raise ValueError(f"unsupported diffusers qk_norm={qk!r}: only 'rms_norm_across_heads'")
        if config.get("pos_embed_seq_len") is not None:
            raise ValueError("unsupported diffusers pos_embed_seq_len (Wan FLF2V image position "
                             "embedding); CamCloneMaster's base does not use it")
        added_kv = config.get("added_kv_proj_dim")
        heads, head_dim = config.get("num_attention_heads", 40), config.get("attention_head_dim", 128)
        image_dim = config.get("image_dim")
        if added_kv is not None and added_kv != heads * head_dim:
            raise ValueError(f"added_kv_proj_dim {added_kv} != inner dim {heads * head_dim}")
        if (added_kv is None) != (image_dim is None):
            raise ValueError("image_dim and added_kv_proj_dim must be set together (I2V)")
        in_ch = config.get("in_channels", 16)
        kwargs = dict(
            dim=heads * head_dim, num_heads=heads, ffn_dim=config.get("ffn_dim", 13824),
            num_layers=config.get("num_layers", 40), in_channels=in_ch,
            out_channels=config.get("out_channels") or in_ch,
            text_dim=config.get("text_dim", 4096), freq_dim=config.get("freq_dim", 256),
            image_dim=image_dim, patch_size=tuple(config.get("patch_size", (1, 2, 2))),
            eps=config.get("eps", 1e-6), cross_attn_norm=config.get("cross_attn_norm", True),
            qk_norm=qk is not None, rope_max_seq_len=config.get("rope_max_seq_len", 1024))
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_diffusers(self) -> dict[str, Any]:
        """The diffusers ``WanTransformer3DModel`` config dict of this architecture."""
        if self.concat != "frame" or self.spatial_attn or self.prediction != "velocity":
            raise ValueError("only concat='frame', velocity prediction, no spatial_attn exists "
                             f"in diffusers (got concat={self.concat!r}, spatial_attn="
                             f"{self.spatial_attn}, prediction={self.prediction!r})")
        return {
            "_class_name": "WanTransformer3DModel",
            "patch_size": list(self.patch_size), "num_attention_heads": self.num_heads,
            "attention_head_dim": self.head_dim, "in_channels": self.in_channels,
            "out_channels": self.out_channels, "text_dim": self.text_dim,
            "freq_dim": self.freq_dim, "ffn_dim": self.ffn_dim, "num_layers": self.num_layers,
            "cross_attn_norm": self.cross_attn_norm,
            "qk_norm": "rms_norm_across_heads" if self.qk_norm else None, "eps": self.eps,
            "image_dim": self.image_dim,
            "added_kv_proj_dim": self.dim if self.image_dim is not None else None,
            "rope_max_seq_len": self.rope_max_seq_len, "pos_embed_seq_len": None,
        }


# Published Wan 2.1 sizes; "i2v" is the 36-channel adaptation with CLIP image tokens that the
# public CamCloneMaster checkpoint uses.
_WAN_SIZES = {
    "1.3b": dict(dim=1536, ffn_dim=8960, num_layers=30, num_heads=12),
    "14b": dict(dim=5120, ffn_dim=13824, num_layers=40, num_heads=40),
}
_WAN_TASKS = {
    "t2v": dict(in_channels=16, out_channels=16, image_dim=None),
    "i2v": dict(in_channels=36, out_channels=16, image_dim=1280),
}
PRESETS = tuple(f"wan2.1-{s}-{t}" for s in _WAN_SIZES for t in _WAN_TASKS)


def preset(name: str, **overrides) -> DiTConfig:
    """A published architecture by name, e.g. ``preset("wan2.1-1.3b-i2v", dtype="bfloat16")``."""
    try:
        _, size, task = name.split("-")
        kwargs = {**_WAN_SIZES[size], **_WAN_TASKS[task]}
    except (ValueError, KeyError):
        raise ValueError(f"unknown preset {name!r}; known: {PRESETS}") from None
    kwargs.update(overrides)
    return DiTConfig(**kwargs)

"""DiT weights: diffusers ``WanTransformer3DModel`` and original Wan / DiffSynth layouts <-> ours.

One table names every tensor three ways (our param path, the diffusers key, the original Wan
2.1 / DiffSynth key, which the released CamCloneMaster checkpoint uses) with the layout change
between PyTorch and us:
  linear  torch weight [out, in]            <-> kernel [in, out] (+ bias)
  conv    torch weight [dim, c, pt, ph, pw] <-> kernel [pt, ph, pw, c, dim]
  table   torch [1, n, dim]                 <-> [n, dim]
  vector  unchanged
Per-block tensors are stacked on a leading layer axis on our side.
"""

from __future__ import annotations

import math
import os
import re
from typing import Mapping

import numpy as np

from camclone_jax import utils
from camclone_jax.convert import io
from camclone_jax.models.config import DiTConfig
from camclone_jax.models.params import param_shapes

KIND = "dit"
FORMATS = ("diffusers", "original")

# (our path, diffusers name, original name, layout); "linear"/"norm" entries expand to
# kernel+bias / scale(+bias).
_TOP = [
    ("patch_embedding", "patch_embedding", "patch_embedding", "conv"),
    ("time_embedding/fc1", "condition_embedder.time_embedder.linear_1", "time_embedding.0", "linear"),
    ("time_embedding/fc2", "condition_embedder.time_embedder.linear_2", "time_embedding.2", "linear"),
    ("time_projection", "condition_embedder.time_proj", "time_projection.1", "linear"),
    ("text_embedding/fc1", "condition_embedder.text_embedder.linear_1", "text_embedding.0", "linear"),
    ("text_embedding/fc2", "condition_embedder.text_embedder.linear_2", "text_embedding.2", "linear"),
    ("head/modulation", "scale_shift_table", "head.modulation", "table"),
    ("head/proj", "proj_out", "head.head", "linear"),
]
_IMAGE = [
    ("img_emb/norm_in", "condition_embedder.image_embedder.norm1", "img_emb.proj.0", "affine_norm"),
    ("img_emb/mlp/fc1", "condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1", "linear"),
    ("img_emb/mlp/fc2", "condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3", "linear"),
    ("img_emb/norm_out", "condition_embedder.image_embedder.norm2", "img_emb.proj.4", "affine_norm"),
]
_BLOCK = [("modulation", "scale_shift_table", "modulation", "table")]
for _ours, _diff, _orig in (("self_attn", "attn1", "self_attn"), ("cross_attn", "attn2", "cross_attn")):
    _BLOCK += [(f"{_ours}/{p}", f"{_diff}.{d}", f"{_orig}.{p}", "linear")
               for p, d in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"))]
_QK_NORM = [(f"{a}/norm_{x}", f"{d}.norm_{x}", f"{a}.norm_{x}", "rms_norm")
            for a, d in (("self_attn", "attn1"), ("cross_attn", "attn2")) for x in "qk"]
_CROSS_NORM = [("norm_cross", "norm2", "norm3", "affine_norm")]
_FFN = [("ffn/fc1", "ffn.net.0.proj", "ffn.0", "linear"), ("ffn/fc2", "ffn.net.2", "ffn.2", "linear")]
_BLOCK_IMAGE = [("cross_attn/k_img", "attn2.add_k_proj", "cross_attn.k_img", "linear"),
                ("cross_attn/v_img", "attn2.add_v_proj", "cross_attn.v_img", "linear")]
_BLOCK_IMAGE_NORM = [("cross_attn/norm_k_img", "attn2.norm_added_k", "cross_attn.norm_k_img", "rms_norm")]

_SUFFIXES = {"linear": (("kernel", "weight"), ("bias", "bias")),
             "affine_norm": (("scale", "weight"), ("bias", "bias")),
             "rms_norm": (("scale", "weight"),),
             "conv": (("kernel", "weight"), ("bias", "bias")),
             "table": ((None, None),), "vector": ((None, None),)}


def _entries(cfg: DiTConfig):
    """Yields (our path, torch key by format, layout, per_block) for every tensor."""
    if cfg.concat != "frame" or cfg.spatial_attn:
        raise ValueError("PyTorch Wan checkpoints hold no weights for concat='channel' or "
                         "spatial_attn; convert with the default architecture switches")
    top = _TOP + (_IMAGE if cfg.image_dim is not None else [])
    block = _BLOCK + _FFN + (_QK_NORM if cfg.qk_norm else []) + (
        _CROSS_NORM if cfg.cross_attn_norm else [])
    if cfg.image_dim is not None:
        block += _BLOCK_IMAGE + (_BLOCK_IMAGE_NORM if cfg.qk_norm else [])
    for per_block, table in ((False, top), (True, block)):
        for ours, diff, orig, layout in table:
            for our_leaf, torch_leaf in _SUFFIXES[layout]:
                path = ours if our_leaf is None else f"{ours}/{our_leaf}"
                path = f"blocks/{path}" if per_block else path
                keys = {"diffusers": diff, "original": orig}
                if torch_leaf is not None:
                    keys = {k: f"{v}.{torch_leaf}" for k, v in keys.items()}
                kind = "vector" if our_leaf in ("bias", "scale") else layout
                yield path, keys, kind, per_block


def _to_torch_layout(x: np.ndarray, kind: str) -> np.ndarray:
    if kind in ("linear", "affine_norm", "rms_norm") and x.ndim == 2:
        return x.T
    if kind == "conv":
        return x.transpose(4, 3, 0, 1, 2)
    if kind == "table":
        return x[None]
    return x


def _from_torch_layout(x: np.ndarray, kind: str) -> np.ndarray:
    if kind in ("linear", "affine_norm", "rms_norm") and x.ndim == 2:
        return x.T
    if kind == "conv":
        return x.transpose(2, 3, 4, 1, 0)
    if kind == "table":
        return x[0]
    return x


def _torch_shape(shape: tuple, kind: str) -> tuple:
    """The torch-side shape of one of our tensors (no data touched)."""
    if kind in ("linear", "affine_norm", "rms_norm") and len(shape) == 2:
        return tuple(reversed(shape))
    if kind == "conv":
        return (shape[4], shape[3], *shape[:3])
    if kind == "table":
        return (1, *shape)
    return tuple(shape)


def _block_key(key: str, i: int) -> str:
    return f"blocks.{i}.{key}"


def detect_format(state: Mapping[str, np.ndarray]) -> str:
    """'diffusers' or 'original' from the key names."""
    if any(k.startswith("condition_embedder.") or ".attn1." in k for k in state):
        return "diffusers"
    if any(k.startswith(("time_embedding.", "head.head")) or ".self_attn." in k for k in state):
        return "original"
    raise io.WeightFileError("cannot tell the checkpoint layout: neither diffusers "
                             "WanTransformer3DModel nor original Wan keys found "
                             f"(first keys: {sorted(state)[:5]})")


def strip_prefix(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drops a wrapper prefix shared by every key (e.g. 'model.', 'dit.', 'pipe.dit.')."""
    keys = list(state)
    for prefix in ("pipe.dit.", "model.diffusion_model.", "model.", "dit.", "module.",
                   "diffusion_model.", "transformer."):
        if keys and all(k.startswith(prefix) for k in keys):
            return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


# --------------------------------------------------------------------------------- conversion
def params_from_torch(state: Mapping[str, np.ndarray], cfg: DiTConfig, fmt: str,
                      dtype=np.float32) -> dict:
    """Torch state dict (diffusers or original keys) -> our nested params (numpy)."""
    shapes = utils.flatten_params(param_shapes(cfg))
    expected = {}
    for path, keys, kind, per_block in _entries(cfg):
        shape = shapes[path].shape[1:] if per_block else shapes[path].shape
        for i in range(cfg.num_layers if per_block else 1):
            key = _block_key(keys[fmt], i) if per_block else keys[fmt]
            expected[key] = _torch_shape(shape, kind)
    io.check_state_dict(state, expected, f"{fmt} transformer checkpoint")
    flat = {}
    for path, keys, kind, per_block in _entries(cfg):
        if per_block:
            layers = [_from_torch_layout(state[_block_key(keys[fmt], i)], kind)
                      for i in range(cfg.num_layers)]
            flat[path] = np.stack(layers).astype(dtype)
        else:
            flat[path] = _from_torch_layout(state[keys[fmt]], kind).astype(dtype)
    return utils.unflatten_params(flat)


def params_to_torch(params: Mapping, cfg: DiTConfig, fmt: str = "diffusers",
                    dtype=np.float32) -> dict[str, np.ndarray]:
    """Our nested params -> torch state dict in the given key layout (numpy, contiguous)."""
    flat = utils.flatten_params(params)
    state = {}
    for path, keys, kind, per_block in _entries(cfg):
        value = np.asarray(flat[path])
        if per_block:
            for i in range(cfg.num_layers):
                state[_block_key(keys[fmt], i)] = _to_torch_layout(value[i], kind)
        else:
            state[keys[fmt]] = _to_torch_layout(value, kind)
    return {k: np.ascontiguousarray(v).astype(dtype) for k, v in state.items()}


def infer_config(state: Mapping[str, np.ndarray], fmt: str, head_dim: int = 128,
                 **overrides) -> DiTConfig:
    """Architecture from tensor shapes (for files without a config.json).

    The head count is not visible in shapes. Wan uses head_dim 128 at every size, so a width
    that is a multiple of 128 gets dim // 128 heads; any other width is ambiguous and needs
    ``num_heads`` in ``overrides`` (``--config_json '{"num_heads": N}'``).
    """
    k = dict(zip(("patch", "ffn", "text", "freq", "head", "img"), (
        ("patch_embedding.weight", "blocks.0.ffn.net.0.proj.weight",
         "condition_embedder.text_embedder.linear_1.weight",
         "condition_embedder.time_embedder.linear_1.weight", "proj_out.weight",
         "condition_embedder.image_embedder.norm1.weight") if fmt == "diffusers" else
        ("patch_embedding.weight", "blocks.0.ffn.0.weight", "text_embedding.0.weight",
         "time_embedding.0.weight", "head.head.weight", "img_emb.proj.0.weight"))))
    missing = [key for name, key in k.items() if name != "img" and key not in state]
    if missing:
        raise io.WeightFileError(f"cannot infer the architecture: missing {missing}")
    dim, in_ch, *patch = state[k["patch"]].shape
    if "num_heads" not in overrides and (dim < head_dim or dim % head_dim):
        raise io.WeightFileError(
            f"cannot infer the head count of a {dim}-wide transformer (Wan's heads are "
            f"{head_dim} wide, and {dim} is not a multiple of {head_dim}): give it, e.g. "
            f"--config_json '{{\"num_heads\": N}}' (or config=/num_heads= in Python)")
    layers = 1 + max(int(m.group(1)) for key in state if (m := re.match(r"blocks\.(\d+)\.", key)))
    kwargs = dict(dim=dim, in_channels=in_ch, patch_size=tuple(patch), num_layers=layers,
                  ffn_dim=state[k["ffn"]].shape[0], text_dim=state[k["text"]].shape[1],
                  freq_dim=state[k["freq"]].shape[1], num_heads=dim // head_dim,
                  out_channels=state[k["head"]].shape[0] // math.prod(patch),
                  image_dim=state[k["img"]].shape[0] if k["img"] in state else None,
                  cross_attn_norm=any(".norm2.weight" in key or ".norm3.weight" in key
                                      for key in state),
                  qk_norm=any("norm_q" in key for key in state))
    kwargs.update(overrides)
    return DiTConfig(**kwargs)


# ---------------------------------------------------------------------------------- files
def load_transformer(path: str, config: DiTConfig | None = None, **overrides):
    """Loads DiT weights from any supported source: returns (DiTConfig, params as numpy).

    ``path``: a diffusers model directory (config.json + safetensors, sharded or not), an
    original Wan / DiffSynth / CamCloneMaster file (.safetensors, .pth, .ckpt), or a directory
    written by ``save_transformer``. ``config`` (or ``overrides`` of DiTConfig fields, e.g.
    dtype) fixes the architecture where the file has none.
    """
    if io.is_converted_dir(path):
        kind, cfg_dict, params = io.load_converted(path)
        if kind != KIND:
            raise io.WeightFileError(f"{path} holds a converted {kind!r}, not a transformer")
        if config is not None:
            return config, params  # the caller checks its architecture against the params
        cfg = DiTConfig.from_dict({**cfg_dict, **overrides})
        _check_converted_shapes(path, cfg, params)
        return cfg, params
    if os.path.isdir(path):
        diff_cfg = utils.read_json(os.path.join(path, "config.json"))
        if diff_cfg.get("_class_name", "WanTransformer3DModel") != "WanTransformer3DModel":
            raise io.WeightFileError(f"{path}: config.json describes {diff_cfg['_class_name']}, "
                                     "not WanTransformer3DModel")
        cfg = config or DiTConfig.from_diffusers(diff_cfg, **overrides)
        return cfg, params_from_torch(io.read_state_dict(path), cfg, "diffusers")
    state = strip_prefix(io.read_state_dict(path))
    fmt = detect_format(state)
    cfg = config or infer_config(state, fmt, **overrides)
    return cfg, params_from_torch(state, cfg, fmt)


def _check_converted_shapes(path: str, cfg: DiTConfig, params):
    """Raises WeightFileError when a converted directory's config.json does not describe its
    params (an edited or mismatched config: the model would fail deep inside flax)."""
    want = utils.flatten_params(param_shapes(cfg))
    got = utils.flatten_params(params)
    bad = [f"{k} {tuple(got[k].shape)} vs {tuple(want[k].shape)}" for k in want
           if k in got and tuple(got[k].shape) != tuple(want[k].shape)]
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if bad or missing or extra:
        parts = [f"{what} {names[:4]}{' ...' if len(names) > 4 else ''}" for what, names in (
            ("shapes (params vs config):", bad), ("missing:", missing), ("unexpected:", extra))
            if names]
        raise io.WeightFileError(f"{path}/config.json does not describe its params: "
                                 + "; ".join(parts))


def save_transformer(path: str, config: DiTConfig, params, *, source: str = "",
                     overwrite: bool = False):
    """Writes our converted format (config.json + orbax params), atomically."""
    io.save_converted(path, KIND, config.to_dict(), params, source=source, overwrite=overwrite)


def export_transformer(config: DiTConfig, params, out_dir: str, *, fmt: str = "diffusers",
                       overwrite: bool = False, dtype=np.float32):
    """Writes a diffusers directory (config.json + safetensors) or an original-layout file.

    fmt="diffusers": ``out_dir`` becomes a directory loadable by
    ``WanTransformer3DModel.from_pretrained``. fmt="original": ``out_dir`` is a single
    .safetensors file with Wan/DiffSynth keys.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {FORMATS}")
    state = params_to_torch(params, config, fmt, dtype)
    io.write_pytorch_weights(out_dir, state, overwrite=overwrite,
                             config_json=None if fmt == "original" else config.to_diffusers(),
                             weights_name="diffusion_pytorch_model.safetensors")

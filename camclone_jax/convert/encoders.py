"""Text and image encoder weights: transformers / original Wan / open_clip layouts -> ours.

umT5 (kind "t5"): transformers ``UMT5EncoderModel`` (``shared.weight``,
``encoder.block.N.layer.0.SelfAttention.q.weight``, ...) or Wan's
``models_t5_umt5-xxl-enc-bf16.pth`` (``token_embedding.weight``, ``blocks.N.attn.q.weight``,
``blocks.N.pos_embedding.embedding.weight``, ``blocks.N.ffn.gate.0.weight``, ...).
CLIP vision tower (kind "clip"): transformers ``CLIPVisionModel``
(``vision_model.encoder.layers.N.self_attn.q_proj.weight``, ...), Wan's
``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (``visual.transformer.N.attn.to_qkv``)
or open_clip (``visual.transformer.resblocks.N.attn.in_proj_weight``); the text tower and
projection heads of a full CLIP file are ignored, as Wan I2V never runs them.

Layout changes: torch linear weight [out, in] <-> kernel [in, out]; conv [dim, c, p, p] <->
[p, p, c, dim]; per-layer tensors stacked on a leading axis on our side; fused q/k/v
([3*dim, dim]) split into q, k, v.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Mapping

import ml_dtypes
import numpy as np

from camclone_jax import utils
from camclone_jax.convert import io
from camclone_jax.models.clip import CLIPVisionConfig, clip_param_shapes
from camclone_jax.models.t5 import T5Config, t5_param_shapes

T5_FORMATS = ("transformers", "original")
CLIP_FORMATS = ("transformers", "original", "open_clip")

# umT5 rows: (our path, transformers key, Wan key, layout); "{i}" is the layer index.
_T5_TOP = [
    ("token_embedding/embedding", "shared.weight", "token_embedding.weight", "same"),
    ("norm/scale", "encoder.final_layer_norm.weight", "norm.weight", "same"),
]
_T5_BLOCK = [
    ("norm1/scale", "encoder.block.{i}.layer.0.layer_norm.weight", "blocks.{i}.norm1.weight", "same"),
    ("pos_embedding", "encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight",
     "blocks.{i}.pos_embedding.embedding.weight", "same"),
    ("norm2/scale", "encoder.block.{i}.layer.1.layer_norm.weight", "blocks.{i}.norm2.weight", "same"),
    ("ffn/gate/kernel", "encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight",
     "blocks.{i}.ffn.gate.0.weight", "linear"),
    ("ffn/fc1/kernel", "encoder.block.{i}.layer.1.DenseReluDense.wi_1.weight",
     "blocks.{i}.ffn.fc1.weight", "linear"),
    ("ffn/fc2/kernel", "encoder.block.{i}.layer.1.DenseReluDense.wo.weight",
     "blocks.{i}.ffn.fc2.weight", "linear"),
] + [(f"attn/{p}/kernel", f"encoder.block.{{i}}.layer.0.SelfAttention.{p}.weight",
      f"blocks.{{i}}.attn.{p}.weight", "linear") for p in "qkvo"]


def _affine(ours: str, torch_name: str, kind: str = "linear"):
    """Rows of a torch Linear (weight, bias) or LayerNorm (weight, bias)."""
    first = ("kernel", "linear") if kind == "linear" else ("scale", "same")
    return [(f"{ours}/{first[0]}", f"{torch_name}.weight", first[1]),
            (f"{ours}/bias", f"{torch_name}.bias", "same")]


def _clip_rows(fmt: str):
    """(top rows, block rows) of (our path or q/k/v paths, torch key, layout) for a format."""
    qkv = (("attn/q/kernel", "attn/k/kernel", "attn/v/kernel"),
           ("attn/q/bias", "attn/k/bias", "attn/v/bias"))
    if fmt == "transformers":
        pre, blk = "vision_model.", "vision_model.encoder.layers.{i}."
        top = [("patch_embedding", pre + "embeddings.patch_embedding.weight", "conv"),
               ("cls_embedding", pre + "embeddings.class_embedding", "same"),
               ("pos_embedding", pre + "embeddings.position_embedding.weight", "same"),
               *_affine("pre_norm", pre + "pre_layrnorm", "norm")]
        block = [*_affine("norm1", blk + "layer_norm1", "norm"),
                 *_affine("norm2", blk + "layer_norm2", "norm"),
                 *[r for p in "qkv" for r in _affine(f"attn/{p}", f"{blk}self_attn.{p}_proj")],
                 *_affine("attn/o", blk + "self_attn.out_proj"),
                 *_affine("fc1", blk + "mlp.fc1"), *_affine("fc2", blk + "mlp.fc2")]
    elif fmt == "original":
        pre, blk = "visual.", "visual.transformer.{i}."
        top = [("patch_embedding", pre + "patch_embedding.weight", "conv"),
               ("cls_embedding", pre + "cls_embedding", "lead2"),
               ("pos_embedding", pre + "pos_embedding", "lead1"),
               *_affine("pre_norm", pre + "pre_norm", "norm")]
        block = [*_affine("norm1", blk + "norm1", "norm"), *_affine("norm2", blk + "norm2", "norm"),
                 (qkv[0], blk + "attn.to_qkv.weight", "qkv_w"),
                 (qkv[1], blk + "attn.to_qkv.bias", "qkv_b"),
                 *_affine("attn/o", blk + "attn.proj"),
                 *_affine("fc1", blk + "mlp.0"), *_affine("fc2", blk + "mlp.2")]
    elif fmt == "open_clip":
        pre, blk = "visual.", "visual.transformer.resblocks.{i}."
        top = [("patch_embedding", pre + "conv1.weight", "conv"),
               ("cls_embedding", pre + "class_embedding", "same"),
               ("pos_embedding", pre + "positional_embedding", "same"),
               *_affine("pre_norm", pre + "ln_pre", "norm")]
        block = [*_affine("norm1", blk + "ln_1", "norm"), *_affine("norm2", blk + "ln_2", "norm"),
                 (qkv[0], blk + "attn.in_proj_weight", "qkv_w"),
                 (qkv[1], blk + "attn.in_proj_bias", "qkv_b"),
                 *_affine("attn/o", blk + "attn.out_proj"),
                 *_affine("fc1", blk + "mlp.c_fc"), *_affine("fc2", blk + "mlp.c_proj")]
    else:
        raise ValueError(f"unknown CLIP format {fmt!r}; choose from {CLIP_FORMATS}")
    return top, block


def _from_torch(x: np.ndarray, layout: str):
    """One torch tensor -> our array (or a tuple of three for fused q/k/v)."""
    if layout == "linear":
        return x.T
    if layout == "conv":
        return x.transpose(2, 3, 1, 0)  # [dim, c, p, p] -> [p, p, c, dim]
    if layout in ("lead1", "lead2"):
        return x.reshape(x.shape[int(layout[-1]):])
    if layout == "qkv_w":
        return tuple(w.T for w in np.split(x, 3, axis=0))
    if layout == "qkv_b":
        return tuple(np.split(x, 3, axis=0))
    return x


def _torch_shape(shape: tuple, layout: str) -> tuple:
    """The torch-side shape of one of our tensors (of one of q/k/v for fused layouts)."""
    if layout == "linear":
        return tuple(reversed(shape))
    if layout == "conv":
        return (shape[3], shape[2], shape[0], shape[1])
    if layout in ("lead1", "lead2"):
        return (1,) * int(layout[-1]) + tuple(shape)
    if layout == "qkv_w":
        return (3 * shape[1], shape[0])
    if layout == "qkv_b":
        return (3 * shape[0],)
    return tuple(shape)


def _convert(state: Mapping[str, np.ndarray], top, block, num_layers: int, shapes: Mapping,
             what: str, dtype) -> dict:
    """Checks ``state`` against the rows (our path(s), torch key, layout) and builds our params."""
    def first(ours):
        return ours[0] if isinstance(ours, tuple) else ours

    expected = {key: _torch_shape(shapes[first(ours)].shape, layout) for ours, key, layout in top}
    for ours, key, layout in block:
        shape = _torch_shape(shapes[f"blocks/{first(ours)}"].shape[1:], layout)
        expected.update({key.format(i=i): shape for i in range(num_layers)})
    io.check_state_dict(state, expected, what)
    flat = {}
    for ours, key, layout in top:
        flat[ours] = _from_torch(np.asarray(state[key]), layout).astype(dtype)
    for ours, key, layout in block:
        layers = [_from_torch(np.asarray(state[key.format(i=i)]), layout)
                  for i in range(num_layers)]
        if isinstance(ours, tuple):  # fused q/k/v: one stack per projection
            for j, path in enumerate(ours):
                flat[f"blocks/{path}"] = np.stack([t[j] for t in layers]).astype(dtype)
        else:
            flat[f"blocks/{ours}"] = np.stack(layers).astype(dtype)
    return utils.unflatten_params(flat)


def _np_dtype(name: str):
    """numpy dtype of a config dtype name (bfloat16 via ml_dtypes)."""
    return ml_dtypes.bfloat16 if name == "bfloat16" else np.dtype(name)


def _num_layers(state: Mapping, pattern: str) -> int:
    found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    if not found:
        raise io.WeightFileError(f"no layer keys matching {pattern!r} (first keys: "
                                 f"{sorted(state)[:5]})")
    return 1 + max(found)


# ------------------------------------------------------------------------------------ umT5
def detect_t5_format(state: Mapping[str, np.ndarray]) -> str:
    """'transformers' or 'original' (Wan) from the key names."""
    if any(k.startswith("encoder.block.") for k in state):
        return "transformers"
    if any(k.startswith("blocks.") and ".attn." in k for k in state):
        return "original"
    raise io.WeightFileError("cannot tell the umT5 checkpoint layout: neither transformers "
                             "UMT5EncoderModel nor Wan T5Encoder keys found (first keys: "
                             f"{sorted(state)[:5]})")


def _t5_state(state: Mapping[str, np.ndarray]) -> dict:
    """Normalises transformers' tied embedding names (``shared`` / ``encoder.embed_tokens``) and
    drops the decoder and LM head of a full ``UMT5ForConditionalGeneration`` checkpoint (the
    text encoder never runs them)."""
    state = {k: v for k, v in state.items() if not k.startswith(("decoder.", "lm_head."))}
    tied = state.pop("encoder.embed_tokens.weight", None)
    if tied is not None and "shared.weight" not in state:
        state["shared.weight"] = tied
    return state


def infer_t5_config(state: Mapping[str, np.ndarray], fmt: str, **overrides) -> T5Config:
    """T5Config from tensor shapes (Wan's .pth has no config; max_distance defaults to 128)."""
    col = T5_FORMATS.index(fmt)
    key = {p: keys[col].format(i=0) for p, *keys, _ in _T5_TOP + _T5_BLOCK}
    missing = [k for k in (key["token_embedding/embedding"], key["pos_embedding"],
                           key["attn/q/kernel"], key["ffn/fc1/kernel"]) if k not in state]
    if missing:
        raise io.WeightFileError(f"cannot infer the umT5 architecture: missing {missing}")
    vocab, dim = state[key["token_embedding/embedding"]].shape
    buckets, heads = state[key["pos_embedding"]].shape
    pattern = r"encoder\.block\.(\d+)\." if fmt == "transformers" else r"blocks\.(\d+)\."
    kwargs = dict(vocab_size=vocab, dim=dim, num_heads=heads, num_buckets=buckets,
                  head_dim=state[key["attn/q/kernel"]].shape[0] // heads,
                  ffn_dim=state[key["ffn/fc1/kernel"]].shape[0],
                  num_layers=_num_layers(state, pattern))
    kwargs.update(overrides)
    return T5Config(**kwargs)


def t5_params_from_torch(state: Mapping[str, np.ndarray], cfg: T5Config, fmt: str,
                         dtype=np.float32) -> dict:
    """Torch state dict (transformers or Wan keys) -> our nested umT5 params (numpy)."""
    if fmt not in T5_FORMATS:
        raise ValueError(f"unknown umT5 format {fmt!r}; choose from {T5_FORMATS}")
    shapes = utils.flatten_params(t5_param_shapes(cfg))
    col = 1 + T5_FORMATS.index(fmt)
    top, block = ([(r[0], r[col], r[3]) for r in rows] for rows in (_T5_TOP, _T5_BLOCK))
    return _convert(_t5_state(state) if fmt == "transformers" else state, top, block,
                    cfg.num_layers, shapes, f"{fmt} umT5 checkpoint", dtype)


def _load_converted(path: str, kind: str, from_dict: Callable, overrides):
    got, cfg_dict, params = io.load_converted(path)
    if got != kind:
        raise io.WeightFileError(f"{path} holds a converted {got!r}, not {kind!r}")
    return from_dict({**cfg_dict, **overrides}), params


def load_t5(path: str, **overrides):
    """Loads umT5 encoder weights: returns (T5Config, params as numpy in ``param_dtype``).

    ``path``: a transformers ``UMT5EncoderModel`` directory (config.json + safetensors), Wan's
    ``models_t5_umt5-xxl-enc-bf16.pth`` (or any file with its keys), or a directory written by
    ``save_t5``. ``overrides`` are T5Config fields (e.g. dtype="bfloat16").
    """
    if io.is_converted_dir(path):
        return _load_converted(path, "t5", T5Config.from_dict, overrides)
    if os.path.isdir(path):
        hf = utils.read_json(os.path.join(path, "config.json"))
        cfg = T5Config.from_transformers(hf, **overrides)
        return cfg, t5_params_from_torch(io.read_state_dict(path), cfg, "transformers",
                                         _np_dtype(cfg.param_dtype))
    state = io.read_state_dict(path)
    fmt = detect_t5_format(state)
    state = _t5_state(state) if fmt == "transformers" else state
    cfg = infer_t5_config(state, fmt, **overrides)
    return cfg, t5_params_from_torch(state, cfg, fmt, _np_dtype(cfg.param_dtype))


def t5_params_to_torch(params: Mapping, cfg: T5Config, fmt: str = "transformers",
                       dtype=np.float32) -> dict[str, np.ndarray]:
    """Our nested umT5 params -> a torch state dict in the given key layout (numpy)."""
    if fmt not in T5_FORMATS:
        raise ValueError(f"unknown umT5 format {fmt!r}; choose from {T5_FORMATS}")
    flat, col = utils.flatten_params(params), 1 + T5_FORMATS.index(fmt)
    state = {}
    for row in _T5_TOP:
        state[row[col]] = _from_torch(np.asarray(flat[row[0]]), row[3])  # transpose is its inverse
    for row in _T5_BLOCK:
        stacked = np.asarray(flat[f"blocks/{row[0]}"])
        for i in range(cfg.num_layers):
            state[row[col].format(i=i)] = _from_torch(stacked[i], row[3])
    if fmt == "transformers":
        state["encoder.embed_tokens.weight"] = state["shared.weight"]
    return {k: np.ascontiguousarray(v).astype(dtype) for k, v in state.items()}


def t5_config_to_transformers(cfg: T5Config) -> dict:
    """A transformers ``UMT5Config`` dict (config.json of ``UMT5EncoderModel``)."""
    return {"architectures": ["UMT5EncoderModel"], "model_type": "umt5",
            "vocab_size": cfg.vocab_size, "d_model": cfg.dim, "d_kv": cfg.head_dim,
            "d_ff": cfg.ffn_dim, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
            "relative_attention_num_buckets": cfg.num_buckets,
            "relative_attention_max_distance": cfg.max_distance,
            "layer_norm_epsilon": cfg.eps, "feed_forward_proj": "gated-gelu",
            "dropout_rate": 0.0, "is_encoder_decoder": False, "use_cache": False}


def export_t5(config: T5Config, params, out_dir: str, *, fmt: str = "transformers",
              overwrite: bool = False, dtype=np.float32):
    """Writes a transformers ``UMT5EncoderModel`` directory (config.json + model.safetensors),
    or with fmt="original" a single .safetensors file with Wan's T5Encoder keys."""
    state = t5_params_to_torch(params, config, fmt, dtype)
    io.write_pytorch_weights(out_dir, state, overwrite=overwrite,
                             config_json=None if fmt == "original" else t5_config_to_transformers(config),
                             weights_name="model.safetensors")


def save_t5(path: str, config: T5Config, params, *, source: str = "", overwrite: bool = False):
    """Writes our converted format (config.json + orbax params) atomically, kind "t5"."""
    io.save_converted(path, "t5", config.to_dict(), params, source=source, overwrite=overwrite)


# ------------------------------------------------------------------------------------ CLIP
def _clip_state(state: Mapping[str, np.ndarray]) -> dict:
    """Adds the ``vision_model.`` prefix that newer transformers omit when saving a bare
    ``CLIPVisionModel`` (keys like ``embeddings.patch_embedding.weight``)."""
    bare = ("embeddings.", "encoder.layers.", "pre_layrnorm.", "post_layernorm.")
    if any(k.startswith("vision_model.") for k in state) or not any(
            k.startswith(bare) for k in state):
        return dict(state)
    return {(f"vision_model.{k}" if k.startswith(bare) else k): v for k, v in state.items()}


def detect_clip_format(state: Mapping[str, np.ndarray]) -> str:
    """'transformers', 'original' (Wan) or 'open_clip' from the key names (after
    ``_clip_state``)."""
    if any(k.startswith("vision_model.") for k in state):
        return "transformers"
    if "visual.conv1.weight" in state:
        return "open_clip"
    if "visual.patch_embedding.weight" in state:
        return "original"
    raise io.WeightFileError("cannot tell the CLIP checkpoint layout: no transformers "
                             "(vision_model.*), Wan (visual.patch_embedding) or open_clip "
                             f"(visual.conv1) keys (first keys: {sorted(state)[:5]})")


def _clip_unused(key: str, fmt: str, used_layers: int) -> bool:
    """Keys Wan I2V never runs: the text tower, projection heads, the post norm and the blocks
    past the penultimate-layer output."""
    prefix = "vision_model." if fmt == "transformers" else "visual."
    if not key.startswith(prefix):
        return True  # text tower, logit scale, projections of a full CLIP checkpoint
    rest = key[len(prefix):]
    if rest in ("embeddings.position_ids", "head", "proj") or rest.startswith(
            ("post_layernorm.", "post_norm.", "ln_post.")):
        return True
    m = re.match(r"(?:encoder\.layers|transformer\.resblocks|transformer)\.(\d+)\.", rest)
    return bool(m) and int(m.group(1)) >= used_layers


_CLIP_LAYER_RE = {"transformers": r"vision_model\.encoder\.layers\.(\d+)\.",
                  "original": r"visual\.transformer\.(\d+)\.",
                  "open_clip": r"visual\.transformer\.resblocks\.(\d+)\."}


def infer_clip_config(state: Mapping[str, np.ndarray], fmt: str, **overrides) -> CLIPVisionConfig:
    """CLIPVisionConfig from tensor shapes (for .pth files without a config).

    The head count is not visible in shapes: it defaults to dim // 80 (ViT-H/14: 16 heads of
    80) when that divides, else dim // 64; pass ``num_heads`` to override.
    """
    top, block = _clip_rows(fmt)
    key = {(r[0] if isinstance(r[0], str) else r[0][0]): r[1] for r in top + block}
    needed = [key["patch_embedding"], key["pos_embedding"], key["fc1/kernel"].format(i=0)]
    missing = [k for k in needed if k not in state]
    if missing:
        raise io.WeightFileError(f"cannot infer the CLIP architecture: missing {missing}")
    dim, _, patch, _ = state[key["patch_embedding"]].shape
    tokens = state[key["pos_embedding"]].shape[-2]
    side = int(round((tokens - 1) ** 0.5))
    kwargs = dict(dim=dim, patch_size=patch, image_size=side * patch,
                  num_heads=dim // 80 if dim % 80 == 0 else max(1, dim // 64),
                  mlp_dim=state[key["fc1/kernel"].format(i=0)].shape[0],
                  num_layers=_num_layers(state, _CLIP_LAYER_RE[fmt]), activation="gelu")
    kwargs.update(overrides)
    return CLIPVisionConfig(**kwargs)


def clip_params_from_torch(state: Mapping[str, np.ndarray], cfg: CLIPVisionConfig, fmt: str,
                           dtype=np.float32) -> dict:
    """Torch state dict (transformers, Wan or open_clip keys) -> our nested CLIP params."""
    top, block = _clip_rows(fmt)
    state = _clip_state(state) if fmt == "transformers" else state
    kept = {k: v for k, v in state.items() if not _clip_unused(k, fmt, cfg.used_layers)}
    shapes = utils.flatten_params(clip_param_shapes(cfg))
    return _convert(kept, top, block, cfg.used_layers, shapes, f"{fmt} CLIP vision checkpoint",
                    dtype)


def load_clip(path: str, **overrides):
    """Loads the CLIP vision tower: returns (CLIPVisionConfig, params as numpy).

    ``path``: a transformers ``CLIPVisionModel`` / ``CLIPModel`` directory (config.json +
    safetensors), Wan's ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``, an open_clip
    state dict file, or a directory written by ``save_clip``. ``overrides`` are
    CLIPVisionConfig fields (e.g. num_heads for files without a config).
    """
    if io.is_converted_dir(path):
        return _load_converted(path, "clip", CLIPVisionConfig.from_dict, overrides)
    if os.path.isdir(path):
        cfg = CLIPVisionConfig.from_transformers(
            utils.read_json(os.path.join(path, "config.json")), **overrides)
        return cfg, clip_params_from_torch(io.read_state_dict(path), cfg, "transformers",
                                           _np_dtype(cfg.param_dtype))
    state = _clip_state(io.read_state_dict(path))
    fmt = detect_clip_format(state)
    cfg = infer_clip_config(state, fmt, **overrides)
    return cfg, clip_params_from_torch(state, cfg, fmt, _np_dtype(cfg.param_dtype))


def save_clip(path: str, config: CLIPVisionConfig, params, *, source: str = "",
              overwrite: bool = False):
    """Writes our converted format (config.json + orbax params) atomically, kind "clip"."""
    io.save_converted(path, "clip", config.to_dict(), params, source=source, overwrite=overwrite)

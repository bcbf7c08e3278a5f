"""Wan 2.1 VAE weights: diffusers ``AutoencoderKLWan`` and original ``Wan2.1_VAE.pth`` <-> ours.

Our parameter paths mirror the diffusers keys (``encoder.down_blocks.5.resample.1.weight`` is
``encoder/down_blocks/5/resample/kernel``); tensors change layout only:

* convolution ``weight [out, in, *k]`` <-> ``kernel [*k, in, out]`` (3D convs 5-D, 2D convs 4-D);
* RMS-norm ``gamma [c, 1, 1, 1]`` (``[c, 1, 1]`` in attention blocks) <-> ``gamma [c]``.

The original Wan repository (``wan/modules/vae.py``) names the same tensors differently
(`original_key` maps a diffusers key to it):

* ``conv1`` / ``conv2`` (top level) = ``quant_conv`` / ``post_quant_conv``;
* ``{encoder,decoder}.conv1`` = ``conv_in``; ``head.0`` = ``norm_out``; ``head.2`` = ``conv_out``;
* ``middle.0`` / ``middle.1`` / ``middle.2`` = ``mid_block.resnets.0`` / ``attentions.0`` / ``resnets.1``;
* ``encoder.downsamples.k`` = ``encoder.down_blocks.k`` (the same flat list);
* ``decoder.upsamples.k`` is flat: stage i holds ``num_res_blocks + 1`` residual blocks then its
  upsampler, so ``up_blocks.i.resnets.j`` = ``upsamples.{i*(num_res_blocks+2)+j}`` and
  ``up_blocks.i.upsamplers.0`` = ``upsamples.{i*(num_res_blocks+2)+num_res_blocks+1}``;
* inside a residual block ``residual.0/2/3/6`` = ``norm1/conv1/norm2/conv2``, ``shortcut`` =
  ``conv_shortcut``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping

import jax
import numpy as np

from camclone_jax.convert.io import (
    WeightFileError, check_state_dict, is_converted_dir, load_converted, read_state_dict,
    save_converted, write_safetensors)
from camclone_jax.models.vae import WanVAE, WanVAEConfig
from camclone_jax.utils import atomic_dir, flatten_params, read_json, unflatten_params

KIND = "vae"
DIFFUSERS_CLASS = "AutoencoderKLWan"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
_CONFIG_FIELDS = ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales",
                  "temperal_downsample", "dropout", "latents_mean", "latents_std",
                  "in_channels", "out_channels")
_KNOWN_PREFIXES = ("model.", "vae.", "first_stage_model.")


# ------------------------------------------------------------------------------------ config
def vae_config_from_diffusers(config_json: dict) -> WanVAEConfig:
    """An ``AutoencoderKLWan`` config.json dict -> `WanVAEConfig`; errors name what is unsupported."""
    meta = {k: v for k, v in config_json.items() if k.startswith("_")}
    fields = {k: v for k, v in config_json.items() if not k.startswith("_")}
    if meta.get("_class_name", DIFFUSERS_CLASS) != DIFFUSERS_CLASS:
        raise ValueError(f"config is for {meta['_class_name']}, expected {DIFFUSERS_CLASS}")
    extra = {"decoder_base_dim", "is_residual", "patch_size", "scale_factor_temporal",
             "scale_factor_spatial"}
    unknown = sorted(set(fields) - set(_CONFIG_FIELDS) - extra)
    if unknown:
        raise ValueError(f"unsupported {DIFFUSERS_CLASS} config keys: {unknown}")
    problems = []
    if fields.get("is_residual"):
        problems.append("is_residual=True (the Wan 2.2 VAE) is not supported, only Wan 2.1")
    if fields.get("patch_size") not in (None, 1):
        problems.append(f"patch_size={fields['patch_size']} is not supported (Wan 2.2 VAE)")
    dbd = fields.get("decoder_base_dim")
    if dbd is not None and dbd != fields.get("base_dim", WanVAEConfig.base_dim):
        problems.append(f"decoder_base_dim={dbd} different from base_dim is not supported")
    if problems:
        raise ValueError("unsupported AutoencoderKLWan config values: " + "; ".join(problems))
    # scale_factor_temporal/spatial are pipeline metadata (diffusers writes its defaults 4/8 even
    # where the architecture differs); the factors follow from dim_mult/temperal_downsample.
    return WanVAEConfig(**{k: fields[k] for k in _CONFIG_FIELDS if k in fields})


def vae_config_to_diffusers(config: WanVAEConfig) -> dict:
    """`WanVAEConfig` -> an ``AutoencoderKLWan`` config.json dict."""
    out = {"_class_name": DIFFUSERS_CLASS, "_diffusers_version": "0.33.0"}
    for key in _CONFIG_FIELDS:
        value = getattr(config, key)
        out[key] = list(value) if isinstance(value, tuple) else value
    out["scale_factor_temporal"] = config.temporal_factor
    out["scale_factor_spatial"] = config.spatial_factor
    return out


# ------------------------------------------------------------------------------- key layouts
def _diffusers_key(path: str) -> str:
    """``encoder/down_blocks/5/resample/kernel`` -> ``encoder.down_blocks.5.resample.1.weight``."""
    parts = path.split("/")
    parts = [("resample.1" if p == "resample" else p) for p in parts[:-1]] + [
        "weight" if parts[-1] == "kernel" else parts[-1]]
    return ".".join(parts)


def _torch_shape(path: str, shape: tuple) -> tuple:
    """Our leaf shape -> the shape of the same tensor in the PyTorch layouts."""
    parts = path.split("/")
    if parts[-1] == "kernel":
        return (shape[-1], shape[-2]) + tuple(shape[:-2])
    if parts[-1] == "gamma":
        return tuple(shape) + ((1, 1) if parts[-2] == "norm" else (1, 1, 1))
    return tuple(shape)


def _to_torch(path: str, value: np.ndarray) -> np.ndarray:
    """Our leaf -> PyTorch layout (transposed kernels, broadcastable gammas)."""
    value = np.asarray(value)
    if path.endswith("/kernel"):
        nd = value.ndim
        return np.ascontiguousarray(np.transpose(value, (nd - 1, nd - 2) + tuple(range(nd - 2))))
    return value.reshape(_torch_shape(path, value.shape))


def _from_torch(path: str, value: np.ndarray) -> np.ndarray:
    """PyTorch layout -> our leaf (float32)."""
    value = np.asarray(value).astype(np.float32)
    if path.endswith("/kernel"):
        return np.ascontiguousarray(np.transpose(value, tuple(range(2, value.ndim)) + (1, 0)))
    if path.endswith("/gamma"):
        return value.reshape(value.shape[0])
    return value


def _param_table(config: WanVAEConfig) -> dict[str, tuple[str, tuple]]:
    """{diffusers key: (our path, torch shape)} for every parameter of ``config``."""
    shapes = flatten_params(WanVAE(config).param_shapes())
    return {_diffusers_key(p): (p, _torch_shape(p, s.shape)) for p, s in shapes.items()}


_RESIDUAL_ORIGINAL = {"norm1": ["residual", "0"], "conv1": ["residual", "2"],
                      "norm2": ["residual", "3"], "conv2": ["residual", "6"],
                      "conv_shortcut": ["shortcut"]}
_MIDDLE_ORIGINAL = {("resnets", "0"): "0", ("attentions", "0"): "1", ("resnets", "1"): "2"}


def original_key(key: str, config: WanVAEConfig) -> str:
    """A diffusers ``AutoencoderKLWan`` key -> the same tensor's key in ``Wan2.1_VAE.pth``."""
    parts = key.split(".")
    if parts[0] in ("quant_conv", "post_quant_conv"):
        return ".".join([{"quant_conv": "conv1", "post_quant_conv": "conv2"}[parts[0]]] + parts[1:])
    top, name, rest = parts[0], parts[1], parts[2:]

    def block(tail):
        return _RESIDUAL_ORIGINAL.get(tail[0], [tail[0]]) + tail[1:]

    if name == "conv_in":
        out = ["conv1"] + rest
    elif name == "norm_out":
        out = ["head", "0"] + rest
    elif name == "conv_out":
        out = ["head", "2"] + rest
    elif name == "mid_block":
        out = ["middle", _MIDDLE_ORIGINAL[(rest[0], rest[1])]] + block(rest[2:])
    elif name == "down_blocks":
        out = ["downsamples", rest[0]] + block(rest[1:])
    elif name == "up_blocks":
        stage, per_stage = int(rest[0]), config.num_res_blocks + 2
        index = int(rest[2]) if rest[1] == "resnets" else config.num_res_blocks + 1
        out = ["upsamples", str(stage * per_stage + index)] + block(rest[3:])
    else:
        raise KeyError(f"no original Wan VAE name for {key}")
    return ".".join([top] + out)


# ------------------------------------------------------------------------------- conversions
def vae_params_from_diffusers(state: Mapping[str, np.ndarray], config: WanVAEConfig) -> dict:
    """A diffusers ``AutoencoderKLWan`` state dict -> our nested params (float32 numpy)."""
    table = _param_table(config)
    check_state_dict(state, {k: shape for k, (_, shape) in table.items()},
                     f"{DIFFUSERS_CLASS} state dict")
    return unflatten_params({path: _from_torch(path, state[k]) for k, (path, _) in table.items()})


def vae_params_from_original(state: Mapping[str, np.ndarray], config: WanVAEConfig) -> dict:
    """An original ``Wan2.1_VAE.pth`` state dict -> our nested params (float32 numpy)."""
    table = {original_key(k, config): (k, shape) for k, (_, shape) in _param_table(config).items()}
    check_state_dict(state, {k: shape for k, (_, shape) in table.items()},
                     "original Wan 2.1 VAE state dict")
    return vae_params_from_diffusers({table[k][0]: v for k, v in state.items()}, config)


def vae_params_to_diffusers(params: Mapping, config: WanVAEConfig) -> dict[str, np.ndarray]:
    """Our params -> a diffusers ``AutoencoderKLWan`` state dict (float32 numpy, torch layouts)."""
    flat = flatten_params(params)
    table = _param_table(config)
    expected = {path: shape for _, (path, shape) in table.items()}
    got = {path: jax.ShapeDtypeStruct(_torch_shape(path, np.shape(v)), np.float32)
           for path, v in flat.items()}
    check_state_dict(got, expected, "params")
    return {_diffusers_key(p): _to_torch(p, np.asarray(v, np.float32)) for p, v in flat.items()}


# ------------------------------------------------------------------------------------ files
def _strip_prefix(state: dict) -> dict:
    """Drops a wrapper prefix (``model.``, ``vae.``, ``first_stage_model.``) shared by all keys."""
    for prefix in _KNOWN_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _params_from_state(state: dict, config: WanVAEConfig, source: str) -> dict:
    """Detects the key layout (diffusers or original) of a single weight file and converts it."""
    state = _strip_prefix(state)
    if "encoder.conv_in.weight" in state:
        return vae_params_from_diffusers(state, config)
    if "encoder.conv1.weight" in state:
        return vae_params_from_original(state, config)
    raise WeightFileError(f"{source}: not a Wan VAE state dict (neither encoder.conv_in.weight nor "
                          f"encoder.conv1.weight present; first keys: {sorted(state)[:5]})")


def load_vae(path: str, config: WanVAEConfig | None = None,
             **overrides) -> tuple[WanVAEConfig, dict]:
    """Loads (config, params) from any supported source.

    ``overrides`` replace fields of the config that is found or inferred (e.g. tiling sizes).

    ``path`` is a diffusers ``AutoencoderKLWan`` directory (``config.json`` + safetensors; a
    pipeline root with a ``vae/`` folder also works), a single ``.pth``/``.safetensors`` file in
    the original or the diffusers key layout (config: ``config`` or the Wan 2.1 defaults), or a
    directory written by `save_vae`. Params come back as float32 numpy arrays.
    """
    if overrides:
        config, params = load_vae(path, config)
        return dataclasses.replace(config, **overrides), params
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such VAE weight file or directory: {path}")
    if os.path.isdir(path) and is_converted_dir(path):
        kind, stored, params = load_converted(path)
        if kind != KIND:
            raise WeightFileError(f"{path} holds a converted {kind!r}, not a {KIND!r}")
        stored_config = WanVAEConfig.from_dict(stored)
        if config is not None and config != stored_config:
            raise ValueError(f"{path}: the config passed differs from the stored one {stored_config}")
        params = unflatten_params({k: np.asarray(v, np.float32) for k, v in flatten_params(params).items()})
        vae_params_to_diffusers(params, stored_config)  # raises on missing or mis-shaped leaves
        return stored_config, params
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(
                os.path.join(path, "vae", "config.json")):
            path = os.path.join(path, "vae")
        if config is None:
            config = vae_config_from_diffusers(read_json(os.path.join(path, "config.json")))
        return config, _params_from_state(read_state_dict(path), config, path)
    config = config or WanVAEConfig()
    return config, _params_from_state(read_state_dict(path), config, path)


def export_vae(config: WanVAEConfig, params: Mapping, out_dir: str, overwrite: bool = False):
    """Writes a diffusers ``AutoencoderKLWan`` directory (config.json + safetensors) atomically."""
    state = vae_params_to_diffusers(params, config)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(vae_config_to_diffusers(config), f, indent=2)
        write_safetensors(os.path.join(tmp, WEIGHTS_NAME), state, metadata={"format": "pt"})


def save_vae(path: str, config: WanVAEConfig, params: Mapping, *, source: str = "",
             overwrite: bool = False):
    """Writes our converted format (``save_converted`` with kind ``"vae"``), read by `load_vae`."""
    params = unflatten_params({k: np.asarray(v, np.float32) for k, v in flatten_params(params).items()})
    vae_params_to_diffusers(params, config)  # validates the tree against the config
    save_converted(path, KIND, config.to_dict(), params, source=source, overwrite=overwrite)

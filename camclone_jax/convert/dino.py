"""DINO ViT weights: a transformers ``ViTModel`` directory -> our params (``eval/networks/dino.py``).

A directory as ``save_pretrained`` writes it and as facebook/dino-vitb16 is published:
``config.json`` + ``model.safetensors`` (or a sharded ``*.safetensors.index.json``, or
``pytorch_model.bin``). Two key layouts are read:
  * "transformers" (every file on the Hub, and what ``save_pretrained`` writes):
    ``embeddings.patch_embeddings.projection.weight``, ``embeddings.cls_token``,
    ``embeddings.position_embeddings``, ``encoder.layer.N.attention.attention.{query,key,value}``,
    ``encoder.layer.N.attention.output.dense``, ``encoder.layer.N.{intermediate,output}.dense``,
    ``encoder.layer.N.layernorm_{before,after}``, ``layernorm``;
  * "transformers5" (the module names of transformers >= 5 in memory, should a state dict be
    saved with them): ``layers.N.attention.{q,k,v,o}_proj``, ``layers.N.mlp.fc{1,2}``.
A ``vit.`` prefix (``ViTFor*`` checkpoints) is stripped; the pooler, a classifier head and the
mask token are never run and are dropped. Any other unknown, missing or mis-shaped key is one
error naming them all. The helpers are those of ``convert/encoders.py`` (the CLIP rows).
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from camclone_jax import utils
from camclone_jax.convert import io
from camclone_jax.convert.encoders import _affine, _convert, _np_dtype
from camclone_jax.eval.networks.dino import DinoConfig, dino_param_shapes

DINO_FORMATS = ("transformers", "transformers5")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_UNUSED = ("pooler.", "classifier.", "embeddings.mask_token", "decoder.")


def _dino_rows(fmt: str):
    """(top rows, block rows) of (our path, torch key, layout) for a key layout."""
    top = [("patch_embedding/kernel", "embeddings.patch_embeddings.projection.weight", "conv"),
           ("patch_embedding/bias", "embeddings.patch_embeddings.projection.bias", "same"),
           ("cls_embedding", "embeddings.cls_token", "lead2"),
           ("pos_embedding", "embeddings.position_embeddings", "lead1"),
           *_affine("norm", "layernorm", "norm")]
    if fmt == "transformers":
        blk = "encoder.layer.{i}."
        names = {"q": "attention.attention.query", "k": "attention.attention.key",
                 "v": "attention.attention.value", "o": "attention.output.dense",
                 "fc1": "intermediate.dense", "fc2": "output.dense"}
    elif fmt == "transformers5":
        blk = "layers.{i}."
        names = {**{p: f"attention.{p}_proj" for p in "qkvo"}, "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
    else:
        raise ValueError(f"unknown DINO format {fmt!r}; choose from {DINO_FORMATS}")
    block = [*_affine("norm1", blk + "layernorm_before", "norm"),
             *_affine("norm2", blk + "layernorm_after", "norm"),
             *[r for p in "qkvo" for r in _affine(f"attn/{p}", blk + names[p])],
             *_affine("fc1", blk + names["fc1"]), *_affine("fc2", blk + names["fc2"])]
    return top, block


def _dino_state(state: Mapping[str, np.ndarray]) -> dict:
    """Strips a ``vit.`` prefix and drops the parts DINO features never run."""
    out = {k.removeprefix("vit."): v for k, v in state.items()}
    return {k: v for k, v in out.items() if not k.startswith(_UNUSED)}


def detect_dino_format(state: Mapping[str, np.ndarray]) -> str:
    """'transformers' or 'transformers5' from the key names (after ``_dino_state``)."""
    if any(k.startswith("encoder.layer.") for k in state):
        return "transformers"
    if any(k.startswith("layers.") for k in state):
        return "transformers5"
    raise io.WeightFileError("cannot tell the ViT checkpoint layout: no transformers ViTModel "
                             "keys (encoder.layer.N.* or layers.N.*) found (first keys: "
                             f"{sorted(state)[:5]})")


def dino_params_from_torch(state: Mapping[str, np.ndarray], cfg: DinoConfig,
                           dtype=np.float32) -> dict:
    """Torch state dict of a transformers ViTModel (either layout) -> our nested params."""
    state = _dino_state(state)
    top, block = _dino_rows(detect_dino_format(state))
    shapes = utils.flatten_params(dino_param_shapes(cfg))
    return _convert(state, top, block, cfg.num_layers, shapes, "transformers ViTModel checkpoint",
                    dtype)


def missing_file(path: str) -> str | None:
    """What a ViTModel directory at ``path`` lacks (the path itself, its config.json or its
    weights file), or None when everything is there."""
    if not path or not os.path.exists(path):
        return str(path)
    if not os.path.isdir(path):
        return f"{path} (a file: expected a ViTModel directory)"
    if not os.path.isfile(os.path.join(path, "config.json")):
        return os.path.join(path, "config.json")
    names = os.listdir(path)
    if not any(n.endswith(".safetensors") or n == "pytorch_model.bin" for n in names):
        return os.path.join(path, " or ".join(WEIGHT_FILES))
    return None


def _read_weights(path: str) -> dict:
    """The state dict of a ViTModel directory: safetensors (single or sharded) or, failing
    that, ``pytorch_model.bin`` (read with ``weights_only=True``)."""
    if any(n.endswith(".safetensors") for n in os.listdir(path)):
        return io.read_state_dict(path)
    return io.read_torch_file(os.path.join(path, "pytorch_model.bin"))


def load_dino(path: str, **overrides):
    """Loads a transformers ``ViTModel`` directory: returns (DinoConfig, params as numpy in
    ``param_dtype``). ``overrides`` are DinoConfig fields (e.g. dtype="bfloat16")."""
    missing = missing_file(path)
    if missing is not None:
        raise FileNotFoundError(f"ViT weights not found: {missing}")
    cfg = DinoConfig.from_transformers(utils.read_json(os.path.join(path, "config.json")),
                                       **overrides)
    return cfg, dino_params_from_torch(_read_weights(path), cfg, _np_dtype(cfg.param_dtype))

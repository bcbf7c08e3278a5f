"""torchvision RAFT weights -> our params (``eval/networks/raft.py``).

Reads a state dict of ``torchvision.models.optical_flow.raft_large`` / ``raft_small`` (or of a
RAFT built from torchvision's blocks with other widths): a ``.pth`` saved with
``torch.save(model.state_dict(), path)`` (read with ``torch.load(weights_only=True)``), a
``.safetensors`` file, or any ``{key: array}`` mapping (the golden ``.npz`` of the tests).

Key mapping (torch -> ours; conv weights [out, in, kh, kw] -> kernels [kh, kw, in, out]):
  ``X.convnormrelu.0.weight`` -> ``X/stem/conv/kernel``; ``.1.weight|bias|running_mean|
  running_var`` -> ``/norm/scale|bias|mean|var`` (batch norm only; instance norm has no keys);
  ``X.layerS.J.convnormreluK`` -> ``X/layerS_J/convK``; ``X.layerS.J.downsample`` -> same name;
  ``X.conv`` (encoder output) and ``update_block.motion_encoder.conv`` -> ``.../out``;
  ``update_block.recurrent_block.convgruN`` -> ``update/gru/gruN``;
  ``update_block.*`` -> ``update/*``; ``mask_predictor.convrelu`` / ``.conv`` ->
  ``update/mask/conv1`` / ``update/mask/out``.
``num_batches_tracked`` counters are dropped and a ``module.`` prefix (DataParallel) stripped;
any other unknown, missing or mis-shaped key is one error naming them all.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

import numpy as np

from camclone_jax import utils
from camclone_jax.convert import io
from camclone_jax.convert.encoders import _from_torch, _torch_shape
from camclone_jax.eval.networks.raft import RaftConfig, raft_param_shapes

SIZES = ("large", "small")
MISSING_HINT = ("save torchvision's raft_large(weights=Raft_Large_Weights.C_T_V1).state_dict() "
                "(raft-things, the weights VBench uses) with torch.save and pass --raft_weights "
                "FILE")

# Our path -> torch key, rule by rule (on "/"-joined paths; the result's "/" become ".").
_RULES = [
    (r"/conv/(kernel|bias)$", r"/0/\1"),  # the conv of a ConvNorm (Conv2dNormActivation.0)
    (r"/norm/scale$", "/1/weight"), (r"/norm/bias$", "/1/bias"),
    (r"/norm/mean$", "/1/running_mean"), (r"/norm/var$", "/1/running_var"),
    (r"^update/mask/conv1/", "mask_predictor/convrelu/"),
    (r"^update/mask/out/", "mask_predictor/conv/"),
    (r"^update/gru/gru(\d)/", r"update_block/recurrent_block/convgru\1/"),
    (r"^update/", "update_block/"),
    (r"/stem/", "/convnormrelu/"),
    (r"/layer(\d)_(\d)/conv(\d)/", r"/layer\1/\2/convnormrelu\3/"),
    (r"/layer(\d)_(\d)/", r"/layer\1/\2/"),
    (r"/out/", "/conv/"),
    (r"/kernel$", "/weight"),
]


def torch_key(path: str) -> str:
    """The torchvision state-dict key of one of our param paths."""
    for pattern, repl in _RULES:
        path = re.sub(pattern, repl, path)
    return path.replace("/", ".")


def _clean(state: Mapping[str, np.ndarray]) -> dict:
    out = {k.removeprefix("module."): v for k, v in state.items()}
    return {k: v for k, v in out.items() if not k.endswith("num_batches_tracked")}


def raft_params_from_torch(state: Mapping[str, np.ndarray], cfg: RaftConfig,
                           dtype=np.float32) -> dict:
    """torchvision RAFT state dict -> our nested params for ``cfg``."""
    state = _clean(state)
    shapes = utils.flatten_params(raft_param_shapes(cfg))
    rows = {path: (torch_key(path), "conv" if len(s.shape) == 4 else "same")
            for path, s in shapes.items()}
    expected = {key: _torch_shape(shapes[path].shape, layout) for path, (key, layout) in rows.items()}
    io.check_state_dict(state, expected, "torchvision RAFT state dict")
    flat = {path: _from_torch(np.asarray(state[key], np.float32), layout).astype(dtype)
            for path, (key, layout) in rows.items()}
    return utils.unflatten_params(flat)


def raft_params_to_torch(params: Mapping, cfg: RaftConfig) -> dict:
    """Our params -> a torchvision RAFT state dict (numpy; the inverse of the above)."""
    out = {}
    for path, value in utils.flatten_params(params).items():
        value = np.asarray(value, np.float32)
        out[torch_key(path)] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value
    for key in [k for k in out if k.endswith(".running_mean")]:
        out[key.replace("running_mean", "num_batches_tracked")] = np.zeros((), np.int64)
    return out


def _widths(state, prefix):
    """(layers, block, norm) of an encoder from its keys."""
    block = "bottleneck" if f"{prefix}.layer1.0.convnormrelu3.0.weight" in state else "residual"
    last = "3" if block == "bottleneck" else "2"
    layers = (state[f"{prefix}.convnormrelu.0.weight"].shape[0],
              *(state[f"{prefix}.layer{s}.0.convnormrelu{last}.0.weight"].shape[0] for s in (1, 2, 3)),
              state[f"{prefix}.conv.weight"].shape[0])
    batch = f"{prefix}.convnormrelu.1.running_mean" in state
    return tuple(int(v) for v in layers), block, batch


def infer_raft_config(state: Mapping[str, np.ndarray]) -> RaftConfig:
    """The RaftConfig of a torchvision RAFT state dict, from its key names and shapes.

    Keys cannot tell instance norm from no norm (neither has parameters): as in torchvision's
    presets, a feature encoder without batch-norm keys gets instance norm and a context encoder
    none. The correlation channels levels * (2r + 1)^2 are read with 4 levels when they divide
    so (both presets), else 3, 2, 1."""
    state = _clean(state)
    try:
        f_layers, f_block, f_batch = _widths(state, "feature_encoder")
        c_layers, c_block, c_batch = _widths(state, "context_encoder")
        me = "update_block.motion_encoder."
        corr_in = int(state[me + "convcorr1.0.weight"].shape[1])
        levels, radius = next((lv, (int(round((corr_in / lv) ** 0.5)) - 1) // 2)
                              for lv in (4, 3, 2, 1) if corr_in % lv == 0 and
                              int(round((corr_in / lv) ** 0.5)) ** 2 * lv == corr_in and
                              int(round((corr_in / lv) ** 0.5)) % 2 == 1)
        corr_layers = tuple(int(state[me + f"convcorr{i}.0.weight"].shape[0]) for i in (1, 2)
                            if me + f"convcorr{i}.0.weight" in state)
        rb = "update_block.recurrent_block."
        kernels = tuple(tuple(int(k) for k in state[rb + f"convgru{i}.convz.weight"].shape[2:])
                        for i in (1, 2) if rb + f"convgru{i}.convz.weight" in state)
        mask = state.get("mask_predictor.convrelu.0.weight")
        return RaftConfig(
            feature_layers=f_layers, feature_block=f_block,
            feature_norm="batch" if f_batch else "instance", context_layers=c_layers,
            context_block=c_block, context_norm="batch" if c_batch else "none",
            corr_levels=levels, corr_radius=radius, motion_corr_layers=corr_layers,
            motion_flow_layers=tuple(int(state[me + f"convflow{i}.0.weight"].shape[0])
                                     for i in (1, 2)),
            motion_out=int(state[me + "conv.0.weight"].shape[0]) + 2,
            hidden=int(state[rb + "convgru1.convz.weight"].shape[0]), gru_kernels=kernels,
            flow_head_hidden=int(state["update_block.flow_head.conv1.weight"].shape[0]),
            mask_hidden=None if mask is None else int(mask.shape[0]))
    except (KeyError, StopIteration, IndexError) as e:
        raise io.WeightFileError(
            f"not a torchvision RAFT state dict: cannot read its sizes ({type(e).__name__}: "
            f"{e}; first keys: {sorted(state)[:5]})") from None


def config_for(size: str) -> RaftConfig:
    """RaftConfig of torchvision's ``raft_large`` or ``raft_small``."""
    if size not in SIZES:
        raise ValueError(f"RAFT size must be one of {SIZES}, got {size!r}")
    return RaftConfig.large() if size == "large" else RaftConfig.small()


def require_raft_weights(path: str):
    """Raises FileNotFoundError with the way to make the file when ``path`` is not a file."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"RAFT weights not found at {path}: {MISSING_HINT}")


def load_raft(path: str, size: str | None = None, config: RaftConfig | None = None):
    """(RaftConfig, params) from a torchvision RAFT state dict file (.pth or .safetensors).
    The config: ``config`` if given, else torchvision's preset ``size`` ("large" / "small"),
    else read from the file (``infer_raft_config``)."""
    require_raft_weights(path)
    state = io.read_state_dict(path)
    cfg = config or (config_for(size) if size else infer_raft_config(state))
    return cfg, raft_params_from_torch(state, cfg)

"""RAFT parity with torchvision (golden files from benchmarks/raft_golden.py; torchvision itself
is not needed here), the grid_sample helper against torch, and the weight-conversion errors."""
import json
import os

import jax
import numpy as np
import pytest
import torch

from camclone_jax import utils
from camclone_jax.convert import io
from camclone_jax.convert import raft as convert_raft
from camclone_jax.eval.networks import raft

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden")
ATOL = 1e-4  # px; float32 on both sides, observed <= 1e-5 after 3-4 iterations


def load_golden(size):
    """(config, torch state dict, uint8 images [2, H, W, 3], iters, flows [iters, 1, 2, H, W])."""
    with np.load(os.path.join(DATA, f"raft_golden_{size}.npz")) as z:
        state = {k[3:]: z[k] for k in z.files if k.startswith("sd/")}
        cfg = raft.RaftConfig.from_dict(json.loads(str(z["config"])))
        return cfg, state, z["images"], int(z["iters"]), z["flows"], str(z["torchvision"])


@pytest.mark.parametrize("size", ["small", "large"])
def test_every_iteration_matches_torchvision(size):
    cfg, state, images, iters, expected, version = load_golden(size)
    assert version.startswith("0.28.0")
    assert (cfg.mask_hidden is None) == (size == "small")  # bilinear vs convex upsampling
    params = convert_raft.raft_params_from_torch(state, cfg)
    x = raft.normalize(images)  # [2, H, W, 3]
    flows = jax.jit(lambda p, a, b: raft.RAFT(cfg).apply({"params": p}, a, b, iters))(
        params, x[:1], x[1:])  # [iters, 1, H, W, 2]
    got = np.asarray(flows).transpose(0, 1, 4, 2, 3)  # torchvision's [iters, 1, 2, H, W]
    assert got.shape == expected.shape
    assert np.abs(expected[-1]).max() > 1.0  # a real flow, not all zeros
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_param_paths_are_readable_and_map_to_torchvision_keys():
    flat = utils.flatten_params(raft.raft_param_shapes(raft.RaftConfig.large()))
    assert "feature_encoder/layer2_0/conv1/conv/kernel" in flat
    assert "context_encoder/stem/norm/mean" in flat  # batch norm statistics live in params
    assert "update/gru/gru2/convq/kernel" in flat
    assert convert_raft.torch_key("feature_encoder/layer2_0/downsample/norm/var") == \
        "feature_encoder.layer2.0.downsample.1.running_var"
    assert convert_raft.torch_key("update/mask/out/kernel") == "mask_predictor.conv.weight"
    assert convert_raft.torch_key("update/motion_encoder/out/conv/bias") == \
        "update_block.motion_encoder.conv.0.bias"
    assert sum(np.prod(s.shape) for k, s in flat.items() if "/norm/" not in k or
               k.endswith(("scale", "bias"))) == 5257536  # torchvision's raft_large num_params
    small = utils.flatten_params(raft.raft_param_shapes(raft.RaftConfig.small()))
    assert sum(np.prod(s.shape) for s in small.values()) == 990162  # raft_small num_params


@pytest.mark.parametrize("shape", [(3, 5, 7, 2), (2, 4, 9, 3)])
def test_grid_sample_matches_torch_align_corners(shape):
    n, h, w, c = shape
    rng = np.random.default_rng(0)
    img = rng.normal(size=shape).astype(np.float32)  # [n, h, w, c]
    coords = np.stack([rng.uniform(-2, w + 1, (n, 4, 6)), rng.uniform(-2, h + 1, (n, 4, 6))],
                      -1).astype(np.float32)  # [n, 4, 6, 2] absolute (x, y), some outside
    coords[0, 0, :3] = [[0, 0], [w - 1, h - 1], [w - 1, 0]]  # exactly on corners
    ours = np.asarray(raft.grid_sample(img, coords))  # [n, 4, 6, c]
    norm = coords.copy()
    norm[..., 0] = 2 * norm[..., 0] / (w - 1) - 1
    norm[..., 1] = 2 * norm[..., 1] / (h - 1) - 1
    ref = torch.nn.functional.grid_sample(
        torch.from_numpy(img).permute(0, 3, 1, 2), torch.from_numpy(norm), mode="bilinear",
        padding_mode="zeros", align_corners=True).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_missing_and_unknown_keys_are_one_error():
    cfg, state, *_ = load_golden("small")
    state = dict(state)
    state.pop("update_block.flow_head.conv2.bias")
    state.pop("feature_encoder.layer1.0.convnormrelu1.0.weight")
    state["update_block.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(io.WeightFileError) as e:
        convert_raft.raft_params_from_torch(state, cfg)
    msg = str(e.value)
    assert "unknown keys (1): ['update_block.extra.weight']" in msg
    assert "update_block.flow_head.conv2.bias" in msg and "layer1.0.convnormrelu1.0.weight" in msg
    with pytest.raises(io.WeightFileError, match="mis-shaped"):  # small weights, large config
        convert_raft.raft_params_from_torch(load_golden("large")[1], cfg)


def test_missing_weight_file_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"RAFT weights not found at .*nope.pth: save "
                       r"torchvision's raft_large\(weights=Raft_Large_Weights"):
        convert_raft.load_raft(str(tmp_path / "nope.pth"))

"""Dynamic Degree over RAFT: VBench's padding, the config read from a state dict, the RaftFlow
backend and the --raft_weights flag (a tiny random RAFT saved as a .pth)."""
import json

import numpy as np
import pytest
import torch

from camclone_jax import evaluate
from camclone_jax import utils
from camclone_jax.convert import io
from camclone_jax.convert import raft as convert_raft
from camclone_jax.data import video
from camclone_jax.eval import motion
from camclone_jax.eval.networks import raft
from tests.eval.test_cli import _pose_file
from tests.eval.test_motion import translating

TINY = raft.RaftConfig.large(  # 4 levels, radius 1: 36 correlation channels
    feature_layers=(8, 8, 8, 12, 12), context_layers=(8, 8, 8, 12, 16), corr_radius=1,
    motion_corr_layers=(8, 8), motion_flow_layers=(6, 4), motion_out=8, hidden=8,
    flow_head_hidden=8, mask_hidden=8)


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory):
    """A random tiny raft_large-structured RAFT saved as torchvision would: (path, params)."""
    rng = np.random.default_rng(0)  # numpy init: compiling flax's init takes ~15 s on CPU
    flat = {k: (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]) if len(s.shape) == 4
                                                    else 1.0) * 0.5).astype(np.float32)
            for k, s in utils.flatten_params(raft.raft_param_shapes(TINY)).items()}
    flat.update({k: 1 + np.abs(v) for k, v in flat.items() if k.endswith(("/var", "/scale"))})
    params = utils.unflatten_params(flat)
    state = convert_raft.raft_params_to_torch(params, TINY)
    path = str(tmp_path_factory.mktemp("raft") / "tiny_raft.pth")
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, path)
    return path, params


def test_padding_is_raft_input_padder():
    frames = np.random.default_rng(0).integers(0, 256, (2, 61, 99, 3)).astype(np.uint8)
    ours = motion.pad_to_multiple(frames)
    ph, pw = (((61 // 8) + 1) * 8 - 61) % 8, (((99 // 8) + 1) * 8 - 99) % 8  # InputPadder
    ref = torch.nn.functional.pad(torch.from_numpy(frames).permute(0, 3, 1, 2).float(),
                                  [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], mode="replicate")
    assert ours.shape == (2, 64, 104, 3)
    np.testing.assert_array_equal(ours, ref.permute(0, 2, 3, 1).numpy().astype(np.uint8))
    assert motion.pad_to_multiple(frames[:, :56, :96]).shape == (2, 56, 96, 3)


@pytest.mark.parametrize("cfg", [raft.RaftConfig.large(), raft.RaftConfig.small(), TINY])
def test_config_is_read_from_the_state_dict(cfg):
    shapes = utils.flatten_params(raft.raft_param_shapes(cfg))
    state = convert_raft.raft_params_to_torch(
        utils.unflatten_params({k: np.zeros(s.shape, np.float32) for k, s in shapes.items()}), cfg)
    assert convert_raft.infer_raft_config(state) == cfg
    with pytest.raises(io.WeightFileError, match="not a torchvision RAFT state dict"):
        convert_raft.infer_raft_config({"conv.weight": np.zeros((1, 1, 1, 1))})


def test_raft_flow_backend(tiny_pth):
    path, params = tiny_pth
    flow = motion.RaftFlow(path, iters=3, batch=2)
    assert flow.config == TINY
    frames = translating(2, frames=4, height=60, width=100)  # padded to 64x104
    mags = flow(frames)  # [3, 64, 104]
    assert mags.shape == (3, 64, 104) and mags.dtype == np.float32
    x = raft.normalize(motion.pad_to_multiple(frames))
    direct = raft.RAFT(TINY).apply({"params": params}, x[1:2], x[2:3], 3)[-1, 0]  # pair 1
    np.testing.assert_allclose(mags[1], np.linalg.norm(direct, axis=-1), rtol=1e-5, atol=1e-5)
    out = motion.dynamic_degree(frames, flow=flow)
    assert out["motion"] == pytest.approx(float(motion.top_motion(mags).mean()))


def test_cli_with_raft_weights(tiny_pth, tmp_path, capsys):
    gen, cam = tmp_path / "generated", tmp_path / "camera_refs"
    gen.mkdir()
    cam.mkdir()
    video.write_mp4(str(gen / "moving.mp4"), translating(2), 16.0)
    _pose_file(cam / "moving.txt", np.repeat(np.eye(4)[None], 17, axis=0),
               np.tile([0.8, 1.4, 0.5, 0.5], (17, 1)))
    out = str(tmp_path / "report.json")
    evaluate.main(["--generated", str(gen), "--camera_refs", str(cam), "--out", out,
                   "--no_fvd", "--no_matched_pixels", "--quiet", "--raft_weights", tiny_pth[0]])
    with open(out) as f:
        saved = json.load(f)
    assert saved["num_evaluated"] == 1, saved["failed"]
    entry = saved["per_video"][0]
    assert isinstance(entry["dynamic"], bool) and entry["Motion"] >= 0
    assert "DynDeg" in saved["summary"]
    assert "RAFT (20 iterations" in saved["settings"]["dynamic_degree"]
    assert "Dyn. Deg." in capsys.readouterr().out


def test_missing_raft_weights_stop_before_any_video(tmp_path, capsys):
    missing = str(tmp_path / "raft_large.pth")
    with pytest.raises(SystemExit) as e:  # the folders do not exist either: checked first
        evaluate.main(["--generated", str(tmp_path / "none"), "--camera_refs",
                       str(tmp_path / "none"), "--out", str(tmp_path / "r.json"),
                       "--raft_weights", missing])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"RAFT weights not found at {missing}" in err and "--raft_weights FILE" in err
    with pytest.raises(FileNotFoundError, match="Raft_Large_Weights.C_T_V1"):
        motion.RaftFlow(missing)

"""The rendered world's camera-cloning scores (eval/clone_3d.py): held-out clips read from the
generator's records, and the camera measure validated on their ground truth at the size of
configs/clone_3d.py (17 frames of 32x32, every 4th frame read)."""
import json
import os
import sys

import numpy as np
import pytest

from camclone_jax.data.synthetic import writer
from camclone_jax.eval import clone_3d
from configs import clone_3d as clone_3d_config

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import clone_3d_eval  # noqa: E402


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Eight held-out clips of one group of the clone_3d world (another seed than training)."""
    out = str(tmp_path_factory.mktemp("clone3d") / "val")
    writer.generate_dataset(out, writer.GeneratorConfig(
        num_groups=1, seed=1000, preview_triplets=0, **clone_3d_config.SIZE,
        **clone_3d_config.WORLD), progress=False)
    return out + "/records"


@pytest.fixture(scope="module")
def clips(held_out):
    return clone_3d.held_out_clips(held_out, 8)


def test_clips_are_one_per_target_with_true_relative_poses(clips):
    assert len({c.target.tobytes() for c in clips}) == 8
    for clip in clips:
        assert clip.target.shape == clip.camera_ref.shape == clip.content.shape == (17, 32, 32, 3)
        np.testing.assert_allclose(clip.c2w[0], np.eye(4), atol=1e-5)
        np.testing.assert_allclose(clip.c2w[:, :3, 3], 0.0, atol=1e-4)  # rotations only
        assert clip.k[0, 2] == 16.0 and clip.k[0, 0] > 0


def test_the_measure_reads_the_ground_truth_and_not_a_static_camera(clips):
    truth, static, warp = clone_3d.reference_rows(clips, "i2v")
    assert truth["read"] >= 7 and truth["rot_err"] < 1.5  # the validation, 8 clips
    assert truth["psnr"] == float("inf")
    assert static["rot_err"] > 4 * truth["rot_err"]
    assert warp["psnr"] > static["psnr"] + 3 and warp["rot_err"] < static["rot_err"] / 2
    zero = clone_3d.score_videos([np.zeros_like(c.target) for c in clips[:3]], clips[:3])
    assert zero["read"] < 3 or zero["rot_err"] > truth["rot_err"]


def test_too_few_clips_is_an_error(held_out):
    with pytest.raises(ValueError, match="holds 40 target videos, fewer than"):
        clone_3d.held_out_clips(held_out, 41)


def _panning_clip(deg_per_latent_frame: float, focal: float = 32.0) -> clone_3d.Clip:
    """A 17-frame 32x32 clip whose camera pans about the y axis at a constant speed."""
    angles = np.radians(deg_per_latent_frame / 4 * np.arange(17))  # [17]
    c2w = np.tile(np.eye(4), (17, 1, 1))  # [17, 4, 4]
    c2w[:, 0, 0] = c2w[:, 2, 2] = np.cos(angles)
    c2w[:, 0, 2], c2w[:, 2, 0] = np.sin(angles), -np.sin(angles)
    video = np.zeros((17, 32, 32, 3), np.uint8)
    k = np.array([[focal, 0, 16], [0, focal, 16], [0, 0, 1.0]])
    return clone_3d.Clip(video, video, video, c2w, k, "a pan")


def test_view_overlap_of_a_pan():
    """A still camera keeps every pixel in view; a 10-degree pan per latent frame under a
    32-pixel focal length moves the centre f tan(10 deg) = 5.6 px a latent frame and frame 1
    keeps about 1 - 5.6/32 of its pixels from frame 0, fewer each frame after."""
    still = clone_3d.view_overlap(_panning_clip(0.0))
    assert still == {"in_first_view": [1.0] * 4, "motion_px": [0.0] * 4}
    pan = clone_3d.view_overlap(_panning_clip(10.0))
    assert pan["motion_px"][0] >= 32 * np.tan(np.radians(10)) - 1e-6
    assert abs(pan["in_first_view"][0] - (1 - 5.64 / 32)) < 0.05
    assert np.all(np.diff(pan["in_first_view"]) < 0) and pan["in_first_view"][-1] < 0.5
    assert clone_3d.view_overlap(_panning_clip(60.0))["in_first_view"][-1] == 0.0


def test_the_benchmark_validates_the_measure_and_reports_the_view_travel(held_out, tmp_path):
    """benchmarks/clone_3d_eval.py --validate_only: the three reference rows and the world's
    view travel, in the JSON it writes."""
    out = str(tmp_path / "r.json")
    clone_3d_eval.main(["--records", held_out, "--clips", "1", "--tasks", "i2v",
                        "--validate_only", "--out", out])
    result = json.load(open(out))
    assert [r["row"] for r in result["rows"]][0] == "ground truth" and len(result["rows"]) == 3
    seen = result["world"]["in_first_view"]
    assert len(seen) == 4 and all(0 < x <= 1 for x in seen) and seen[0] >= seen[-1]
    assert 0 < result["world"]["motion_px"]["mean"] <= result["world"]["motion_px"]["max"]

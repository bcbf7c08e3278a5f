"""The rendered world's camera-cloning scores (eval/clone_3d.py): held-out clips read from the
generator's records, and the camera measure validated on their ground truth at the size of
configs/clone_3d.py (17 frames of 32x32, every 4th frame read)."""
import numpy as np
import pytest

from camclone_jax.data.synthetic import writer
from camclone_jax.eval import clone_3d
from configs import clone_3d as clone_3d_config


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

"""camclone_jax.eval.global_motion: rotations read back from frames that a known camera rotation
warped (a textured image under H = K R^T K^-1, the exact image motion of a turning camera)."""

import math

import cv2
import numpy as np

from camclone_jax.data.synthetic import trajectories as traj_lib
from camclone_jax.eval import camera, global_motion

H, W = 64, 112


def _texture(seed: int) -> np.ndarray:
    """A smooth random RGB image [2H, 2W, 3] in [0, 1], larger than the frame (no empty edges)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((2 * H, 2 * W, 3)).astype(np.float32), (0, 0), 2.0)
    return (img - img.min()) / (img.max() - img.min())


def _video(rots, k):
    """Frames [F, H, W, 3] uint8 of a camera whose c2w rotations are ``rots`` [F, 3, 3], seeing
    a far textured plane (pure rotation: every frame is a homography of frame 0's view)."""
    tex = _texture(0)
    shift = np.array([[1, 0, W / 2], [0, 1, H / 2], [0, 0, 1]])  # frame 0 = the texture's middle
    frames = []
    for rot in rots:
        hom = k @ rot.T @ np.linalg.inv(k)  # frame-0 pixels -> this frame's pixels
        frame = cv2.warpPerspective(tex, hom @ np.linalg.inv(shift), (W, H),
                                    flags=cv2.INTER_LINEAR)  # [H, W, 3]
        frames.append(np.round(frame * 255).astype(np.uint8))
    return np.stack(frames)


def test_pan_tilt_roll_are_read_back():
    k = traj_lib.intrinsics_matrix(traj_lib.intrinsics_from_focal(24.0, W / H), H, W)  # [3, 3]
    steps = [traj_lib.rot_y(math.radians(4.0)) @ traj_lib.rot_x(math.radians(-2.0)),
             traj_lib.rot_z(math.radians(6.0)), traj_lib.rot_y(math.radians(-3.0))]
    rots = [np.eye(3)]
    for step in steps:
        rots.append(rots[-1] @ step)
    video = _video(np.stack(rots), k)
    c2w_true = np.tile(np.eye(4), (len(rots), 1, 1))
    c2w_true[:, :3, :3] = rots
    est = global_motion.estimate(video, k)
    assert est is not None and est.shape == (4, 4, 4)
    err = camera.camera_metrics(est, c2w_true, degrees=True, reduction="mean")["RotErr"]
    static = camera.camera_metrics(np.tile(np.eye(4), (4, 1, 1)), c2w_true, degrees=True,
                                   reduction="mean")["RotErr"]
    assert err < 0.3 < 3.0 < static


def test_unrelated_frames_fail():
    k = traj_lib.intrinsics_matrix(traj_lib.intrinsics_from_focal(35.0, W / H), H, W)
    a, b = (np.round(_texture(seed)[:H, :W] * 255).astype(np.uint8) for seed in (1, 2))
    assert global_motion.pair_rotation(a, b, k) is None


def test_a_dim_pair_under_a_long_lens_pan_is_read_back():
    """A long lens's big per-pair pan (a third of the frame leaves it) on a dim, low-contrast
    view: read as the pan, not as "unmoved" (whose pixels all stay inside the frame)."""
    k = traj_lib.intrinsics_matrix(traj_lib.intrinsics_from_focal(50.0, W / H), H, W)  # [3, 3]
    rots = np.stack([np.eye(3), traj_lib.rot_y(math.radians(12.0))])  # [2, 3, 3]
    bright = _video(rots, k).astype(np.float32)  # [2, H, W, 3]
    dim = np.round(100 + 0.3 * (bright - bright.mean())).astype(np.uint8)  # [2, H, W, 3]
    assert dim.std() < 10.0  # grey std under 0.04, as a dim rendered view
    rot = global_motion.pair_rotation(dim[0], dim[1], k)
    assert rot is not None
    err = np.degrees(camera.rotation_errors(rot[None], rots[1:]))[0]  # geodesic, degrees
    assert err < 0.5, err

"""One entry point for the two camera-pose backends: ours (`poses.py`) and COLMAP (`colmap.py`).

  estimate(frames, intrinsics, backend="colmap" | "ours", ...) -> poses.PoseEstimate

Both return camera-to-world poses in OpenCV axes relative to frame 0 with unit largest camera
distance, say whether the intrinsics were assumed, and raise `PoseEstimationError` (with the
reason) for a video they cannot estimate. Which is the default, and why, is measured by
`benchmarks/pose_backends.py` (see docs/evaluation.md).
"""
from camclone_jax.eval import colmap, poses

BACKENDS = ("colmap", "ours")
DEFAULT_BACKEND = "ours"


def estimate(frames, intrinsics=None, backend=DEFAULT_BACKEND, pose_config=poses.PoseConfig(),
             colmap_config=colmap.ColmapConfig(), fov_deg=poses.DEFAULT_FOV_DEG):
    """Poses of uint8 frames [F, H, W, 3] by `backend`; intrinsics normalised [4] / [F, 4] or
    None (assumed from `fov_deg`)."""
    if backend == "ours":
        return poses.estimate_poses(frames, intrinsics, pose_config, fov_deg=fov_deg)
    if backend == "colmap":
        return colmap.estimate_poses_colmap(frames, intrinsics, colmap_config, fov_deg=fov_deg)
    raise ValueError(f"pose backend must be one of {BACKENDS}, got {backend!r}")

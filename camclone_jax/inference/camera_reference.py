"""Camera references for a move that exists only as words, as poses, or as another video's edit.

  make_reference("ref.mp4", move="pan left 20 deg, then dolly in 1 m")   # or poses=, from_video=
  -> writes ref.mp4 and ref.json; returns a summary dict

Where the camera path comes from (exactly one):
  move        a shot list in words (`data/synthetic/moves.py` has the vocabulary).
  poses       a pose file as `evaluate` reads it (`eval/camera.read_poses`): RealEstate10K /
              CameraCtrl .txt, JSON c2w, MegaSaM or our .npz. The path is made relative to its
              first pose and its positions are taken as metres (`edit="scaled X"` rescales
              them); it is retimed evenly into `frames`. The file's horizontal field of view is
              kept; without intrinsics the lens is `moves.DEFAULT_FOCAL_MM`.
  from_video  a video whose camera is estimated with `evaluate`'s pose backend
              (`eval/pose_backends.py`, `pose_backend`), retimed into `frames` the same way. Its
              translation has no scale: the largest camera distance from frame 0 becomes 1 m.
              Its lens is unknown: `fov_deg` (horizontal, default 60 deg as `evaluate`) is
              assumed for the estimate and the render alike; a wrong guess scales the turns.
Then `edit` (`moves.parse_edit`: slower, faster, reversed, mirrored, scaled X) is applied and the
neutral scene `scene` (indoor, outdoor; one per `seed`) is rendered along the path
(`data/synthetic/camera_ref.py`) at frames x height x width.

Beside the video, OUT's stem + .json holds the poses: "c2w" [F, 4, 4] relative to the first
frame, in metres, OpenCV camera axes (x right, y down, z forward), "intrinsics" [F, 4]
normalised (fx, fy, cx, cy), with the fps, size, source, edit and a description. `evaluate`
reads that file (and, pairing by name, prefers it to the video: the true poses).
"""
import json
import os
import time

import numpy as np

from camclone_jax.data import video as video_lib
from camclone_jax.data.synthetic import camera_ref, moves
from camclone_jax.data.synthetic import trajectories as traj_lib
from camclone_jax.eval import camera, pose_backends
from camclone_jax.eval.poses import DEFAULT_FOV_DEG, PoseEstimationError
from camclone_jax.utils import write_atomic

SOURCES = ("move", "poses", "from_video")


def check_size(frames, height, width, fps):
    """ValueError unless frames is 1 + 4k (>= 5), height and width even and positive, fps > 0."""
    if frames < 5 or (frames - 1) % 4:
        raise ValueError(f"frames must be 1 + 4k (5, 9, ..., 81), got {frames}")
    if height < 2 or width < 2 or height % 2 or width % 2:
        raise ValueError(f"height and width must be even and positive (H.264), got "
                         f"{height}x{width}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")


def _lens(intrinsics, aspect):
    """Normalised intrinsics [4] of the same horizontal field of view for width / height `aspect`,
    square pixels and a centred principal point."""
    fx = float(np.asarray(intrinsics, np.float64).reshape(-1, 4)[0, 0])
    return np.array([fx, fx * aspect, 0.5, 0.5])


def path_from_poses(path, frames, aspect):
    """(c2w [frames, 4, 4] relative to the first pose, intrinsics [4]) of a pose file."""
    try:
        c2w, intr = camera.read_poses(path)
    except ValueError as e:
        message = str(e)
        raise ValueError(message if path in message else f"{path}: {message}") from None
    if len(c2w) < 2:
        raise ValueError(f"{path}: a camera path needs at least 2 poses, got {len(c2w)}")
    if intr is not None and not (np.all(np.isfinite(intr)) and np.all(intr[:, 0] > 0)):
        raise ValueError(f"{path}: intrinsics must be finite with a positive focal length")
    focal = traj_lib.intrinsics_from_focal(moves.DEFAULT_FOCAL_MM, aspect)
    return moves.resample(traj_lib.relative_to_first(c2w), frames), _lens(
        focal if intr is None else intr, aspect)


def path_from_video(path, frames, aspect, backend=pose_backends.DEFAULT_BACKEND,
                    fov_deg=DEFAULT_FOV_DEG):
    """(c2w [frames, 4, 4] relative to the first frame, largest distance 1 m, intrinsics [4]) of
    the camera of a video, estimated with `evaluate`'s pose backend assuming a horizontal field
    of view of `fov_deg`."""
    video, _ = video_lib.read_video(path)  # [F, H, W, 3]
    try:
        est = pose_backends.estimate(video, backend=backend, fov_deg=fov_deg)
    except PoseEstimationError as e:
        raise ValueError(f"{path}: cannot estimate its camera: {e}") from None
    return moves.resample(est.c2w, frames), _lens(est.intrinsics, aspect)


def reference_path(frames, aspect, move=None, poses=None, from_video=None, edit=None,
                   pose_backend=pose_backends.DEFAULT_BACKEND, fov_deg=DEFAULT_FOV_DEG):
    """(c2w [frames, 4, 4] in the location frame, intrinsics [frames, 4], description) of the one
    source given, after the edit."""
    given = [name for name, value in zip(SOURCES, (move, poses, from_video)) if value]
    if len(given) != 1:
        raise ValueError(f"give exactly one camera path source of {SOURCES}, got "
                         f"{given or 'none'}")
    edits = moves.parse_edit(edit) if edit else []
    if move:
        path = moves.parse_move(move, frames, aspect)
        c2w, intr, text = path.c2w, path.intrinsics[0], path.describe()
    elif poses:
        c2w, intr = path_from_poses(poses, frames, aspect)
        text = f"the camera path of {os.path.basename(poses)}"
    else:
        c2w, intr = path_from_video(from_video, frames, aspect, pose_backend, fov_deg)
        text = f"the camera of {os.path.basename(from_video)}"
    if edits:
        c2w = moves.apply_edits(c2w, edits)
        text += f" (edited: {edit})"
    return camera_ref.place_path(c2w), np.tile(intr, (frames, 1)), text  # [F, 4, 4], [F, 4]


def poses_path(out):
    """The pose file written beside the video `out`: the same stem, .json."""
    return os.path.splitext(out)[0] + ".json"


def make_reference(out, move=None, poses=None, from_video=None, edit=None, frames=81, height=480,
                   width=832, fps=16.0, scene="indoor", seed=0, supersample=1,
                   pose_backend=pose_backends.DEFAULT_BACKEND, fov_deg=DEFAULT_FOV_DEG):
    """Renders the camera reference of one source to `out` (.mp4) and its poses beside it;
    returns {"video", "poses", "description", "frames", "seconds"}."""
    if not out.lower().endswith(".mp4"):
        raise ValueError(f"output {out} must end in .mp4")
    check_size(frames, height, width, fps)
    start = time.perf_counter()
    c2w, intr, text = reference_path(frames, width / height, move, poses, from_video, edit,
                                     pose_backend, fov_deg)
    frames_out = camera_ref.render_reference(c2w, intr, height, width, scene, seed, supersample)
    seconds = time.perf_counter() - start
    video_lib.write_mp4(out, frames_out, fps)
    record = {"c2w": (traj_lib.relative_to_first(c2w).round(6) + 0.0).tolist(),  # no -0.0
              "intrinsics": (np.asarray(intr, np.float64).round(6) + 0.0).tolist(),
              "convention": "camera-to-world, relative to frame 0, metres; OpenCV camera axes "
                            "(x right, y down, z forward); intrinsics normalised fx, fy, cx, cy",
              "fps": fps, "height": height, "width": width, "description": text,
              "source": {k: v for k, v in zip(SOURCES, (move, poses, from_video)) if v},
              "edit": edit, "scene": scene, "seed": seed}
    write_atomic(poses_path(out), json.dumps(record) + "\n")
    return {"video": out, "poses": poses_path(out), "description": text,
            "frames": frames_out.shape, "seconds": round(seconds, 2)}

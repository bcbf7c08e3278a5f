"""Camera-accuracy metrics RotErr, TransErr and CamMC, exactly as CamI2V defines them, and pose readers.

Given camera-to-world poses of a generated video and of its reference, both [F, 4, 4] in OpenCV
axes (any world frame, any scale):
  1. each trajectory is made relative to its first frame: c2w_0^-1 c2w_i;
  2. each trajectory's translations are divided by its OWN largest translation norm + 1e-9
     (CamI2V's "relative" TransErr/CamMC; scale-free, so SfM poses of unknown scale compare);
  3. per frame i (frame 0 included; it contributes 0):
       rot_i   = acos(clip((tr(R_gen^T R_ref) - 1) / 2, -1, 1))      radians
       trans_i = || t_gen - t_ref ||_2
       cammc_i = || [R|t]_gen - [R|t]_ref ||_2  over the 12 numbers of the 3x4 matrices
  4. RotErr, TransErr, CamMC are the SUMS over frames (the papers' numbers; they grow with the
     number of frames). `camera_metrics(..., reduction="mean")` gives per-frame means and
     `degrees=True` reports rotations in degrees, for comparing with papers that do so.
Papers average these per-video sums over the videos of a test set (`aggregate`).

Readers, so poses from any estimator plug in (all return c2w float64 [F, 4, 4] and normalised
intrinsics float64 [F, 4] (fx, fy, cx, cy), or None where the file has none):
  * RealEstate10K .txt: a header line, then per frame `timestamp fx fy cx cy 0 0` + the 12 numbers
    of the row-major 3x4 world-to-camera matrix (`camclone_jax.data.synthetic.trajectories`).
  * MegaSaM .npz: `cam_c2w` [N, 4, 4] and `intrinsic` [3, 3] in pixels; the image size comes from
    `images` [N, H, W, 3] when stored, else the principal point is taken as the image centre.
  * Our .npz (`save_poses_npz`): `c2w` [F, 4, 4], `intrinsics` [F, 4].
  * JSON: a list of camera-to-world matrices (4x4, or 3x4 without the last row), or an object
    with that list under "c2w" and optionally "intrinsics" (normalised, [F, 4] or one [4]), as
    `python -m camclone_jax.reference` writes beside its videos.
"""
import io
import os

import numpy as np

from camclone_jax.data.synthetic import trajectories as traj_lib
from camclone_jax.utils import read_json, write_atomic

EPS = 1e-9
POSE_SUFFIXES = (".txt", ".npz", ".json")


# ----------------------------------------------------------------------------- metrics
def _check_poses(c2w, name):
    c2w = np.asarray(c2w, np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise ValueError(f"{name} poses must be c2w [F, 4, 4], got shape {list(c2w.shape)}")
    if not np.all(np.isfinite(c2w)):
        raise ValueError(f"{name} poses hold NaN or inf")
    return c2w


def relative_poses(c2w):
    """Poses [F, 4, 4] relative to the first frame: c2w_0^-1 c2w_i (general inverse, as CamI2V)."""
    c2w = _check_poses(c2w, "input")
    return np.linalg.inv(c2w[0])[None] @ c2w  # [F, 4, 4]


def normalize_translation(c2w, eps=EPS):
    """Poses [F, 4, 4] with translations divided by their largest norm + eps."""
    out = np.array(c2w, np.float64)
    out[:, :3, 3] /= np.linalg.norm(out[:, :3, 3], axis=1).max() + eps
    return out


def rotation_errors(rot_gen, rot_ref):
    """Geodesic angles (radians) [F] between rotations [F, 3, 3]."""
    cos = (np.trace(np.swapaxes(rot_gen, -1, -2) @ rot_ref, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


def camera_errors(c2w_gen, c2w_ref):
    """Per-frame errors {"rot": [F] radians, "trans": [F], "cammc": [F]} (steps 1-3 above)."""
    gen, ref = _check_poses(c2w_gen, "generated"), _check_poses(c2w_ref, "reference")
    if len(gen) != len(ref):
        raise ValueError(f"trajectories differ in length: generated {len(gen)} frames, "
                         f"reference {len(ref)}; resample or trim them to the same frames first")
    gen = normalize_translation(relative_poses(gen))  # [F, 4, 4]
    ref = normalize_translation(relative_poses(ref))  # [F, 4, 4]
    return {"rot": rotation_errors(gen[:, :3, :3], ref[:, :3, :3]),
            "trans": np.linalg.norm(gen[:, :3, 3] - ref[:, :3, 3], axis=1),
            "cammc": np.linalg.norm((gen[:, :3, :4] - ref[:, :3, :4]).reshape(len(gen), 12), axis=1)}


def camera_metrics(c2w_gen, c2w_ref, degrees=False, reduction="sum"):
    """{"RotErr", "TransErr", "CamMC"} of one video pair.

    degrees: report RotErr in degrees (CamMC always uses the matrices, so it is unaffected).
    reduction: "sum" over frames (CamI2V, CamCloneMaster) or "mean" (per-frame average).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    err = camera_errors(c2w_gen, c2w_ref)
    reduce = np.sum if reduction == "sum" else np.mean
    rot = np.degrees(err["rot"]) if degrees else err["rot"]
    return {"RotErr": float(reduce(rot)), "TransErr": float(reduce(err["trans"])),
            "CamMC": float(reduce(err["cammc"]))}


def aggregate(per_video):
    """Mean of each metric over a list of metric dicts (as the papers average over videos)."""
    if not per_video:
        return {}
    keys = per_video[0].keys()
    return {k: float(np.mean([m[k] for m in per_video])) for k in keys}


def resample_poses(c2w, num_frames):
    """Picks `num_frames` poses [num_frames, 4, 4] evenly from c2w [F, 4, 4] (nearest frame), to
    compare videos whose frame counts differ (e.g. a 77-frame reference and a 49-frame sample)."""
    c2w = _check_poses(c2w, "input")
    idx = np.round(np.linspace(0, len(c2w) - 1, num_frames)).astype(int)
    return c2w[idx]


# ----------------------------------------------------------------------------- readers, writers
def read_realestate10k(path):
    """(c2w [F, 4, 4], intrinsics [F, 4]) from a RealEstate10K pose text file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pose file not found: {path}")
    with open(path) as f:
        text = f.read()
    try:
        _, rows = traj_lib.parse_realestate10k(text)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    _, intrinsics, c2w = traj_lib.from_realestate10k(rows)
    return c2w, intrinsics


def read_megasam(path):
    """(c2w [N, 4, 4], normalised intrinsics [N, 4]) from a MegaSaM output .npz."""
    with np.load(path) as data:
        if "cam_c2w" not in data:
            raise ValueError(f"{path}: no 'cam_c2w' array (keys: {sorted(data.keys())})")
        c2w = _check_poses(data["cam_c2w"], path)
        intr = None
        if "intrinsic" in data:
            k = np.asarray(data["intrinsic"], np.float64)
            k = k[0] if k.ndim == 3 else k
            if k.shape != (3, 3):
                raise ValueError(f"{path}: 'intrinsic' must be [3, 3], got {list(k.shape)}")
            if "images" in data and data["images"].ndim == 4:
                height, width = data["images"].shape[1:3]
            else:
                height, width = 2 * k[1, 2], 2 * k[0, 2]
            intr = np.tile([k[0, 0] / width, k[1, 1] / height, k[0, 2] / width, k[1, 2] / height],
                           (len(c2w), 1))
    return c2w, intr


def read_json_poses(path):
    """(c2w [F, 4, 4], intrinsics [F, 4] or None) from a JSON pose file (see the docstring)."""
    data = read_json(path)
    intr = None
    if isinstance(data, dict):
        if "c2w" not in data:
            raise ValueError(f"{path}: no 'c2w' list of camera-to-world matrices "
                             f"(keys: {sorted(data)})")
        intr = data.get("intrinsics")
        data = data["c2w"]
    try:
        mats = np.asarray(data, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: 'c2w' must be a list of 4x4 or 3x4 matrices of numbers") from None
    if mats.ndim == 3 and mats.shape[1:] == (3, 4):
        mats = np.concatenate([mats, np.tile([[[0.0, 0.0, 0.0, 1.0]]], (len(mats), 1, 1))], 1)
    c2w = _check_poses(mats, path)  # [F, 4, 4]
    if intr is not None:
        intr = np.asarray(intr, np.float64)
        intr = np.tile(intr, (len(c2w), 1)) if intr.shape == (4,) else intr
        if intr.shape != (len(c2w), 4):
            raise ValueError(f"{path}: 'intrinsics' must be [4] or [{len(c2w)}, 4] normalised "
                             f"fx, fy, cx, cy, got {list(intr.shape)}")
    return c2w, intr


def read_poses(path):
    """(c2w [F, 4, 4], intrinsics [F, 4] or None) from .txt (RealEstate10K), .json or .npz
    (MegaSaM or ours, told apart by their keys)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pose file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".txt":
        return read_realestate10k(path)
    if suffix == ".json":
        return read_json_poses(path)
    if suffix != ".npz":
        raise ValueError(f"unknown pose file type {suffix!r} for {path}; expected {POSE_SUFFIXES}")
    try:
        with np.load(path) as data:
            keys = set(data.keys())
            if "c2w" in keys:
                c2w = _check_poses(data["c2w"], path)
                intr = np.asarray(data["intrinsics"], np.float64) if "intrinsics" in keys else None
                return c2w, intr
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read pose file {path}: {e}") from None
    return read_megasam(path)


def save_poses_npz(path, c2w, intrinsics=None):
    """Writes poses (and intrinsics) as our .npz, atomically; `read_poses` reads it back."""
    buf = io.BytesIO()
    arrays = {"c2w": _check_poses(c2w, "output")}
    if intrinsics is not None:
        arrays["intrinsics"] = np.asarray(intrinsics, np.float64)
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())

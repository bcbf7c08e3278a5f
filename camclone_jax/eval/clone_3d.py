"""Held-out camera-cloning scores in the rendered world with depth (configs/clone_3d.py).

Held-out clips are triplets of the synthetic generator's held-out split (unseen locations,
unseen trajectories: another seed), read from its mp4 ArrayRecord files: the camera reference
(same trajectory, another location), the target (ground truth, with its true poses and lens),
its first frame (I2V) and the content video (same location, another trajectory: V2V). One
clip per target video, in record order.

The camera is read from a video by ``eval.global_motion`` (rotation homography fit) at the
latent frames (every ``stride``-th frame) and compared with the target's true poses relative
to its first frame: RotErr in degrees per frame (``camera_metrics``, mean over the frames,
frame 0 included, as benchmarks/global_motion_check.py reports it), over the clips the
reading succeeds on, with the count read. Frame 0 is the given first frame (both tasks get the
target's; the sampler pins it for models trained with the loss from frame 1). PSNR (dB) is to
the ground-truth target on the frames after the first (pooled squared error). The "ground truth" row is the measure's
validation: it must read >= 90% of the clips within 1 deg/frame on average.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from camclone_jax.data import records, video
from camclone_jax.data.pipeline import record_files
from camclone_jax.data.synthetic import trajectories as traj_lib
from camclone_jax.eval import camera, global_motion
from camclone_jax.eval.psnr import psnr_from_mse


@dataclasses.dataclass
class Clip:
    """One held-out triplet (uint8 pixel videos [F, H, W, 3]) with the target's camera."""

    camera_ref: np.ndarray
    target: np.ndarray
    content: np.ndarray
    c2w: np.ndarray  # [F, 4, 4] the target's true poses relative to its first frame
    k: np.ndarray  # [3, 3] pixel intrinsics of the target's lens
    describe: str  # the target's move in words

    @property
    def first_frame(self) -> np.ndarray:
        return self.target[0]


def held_out_clips(records_path: str, n: int) -> list[Clip]:
    """The first ``n`` clips (one per target video) of the mp4 triplet records at
    ``records_path`` (a folder, glob or file)."""
    out, seen = [], set()
    for path in record_files(records_path):
        for raw in records.read_records(path):
            rec = records.decode_triplet(raw)
            if rec["kind"] != "mp4":
                raise ValueError(f"{path}: held-out clips are read from mp4 records (the "
                                 f"generator's), not {rec['kind']!r} ones")
            target = rec["target"]
            if target["video_id"] in seen:
                continue
            seen.add(target["video_id"])
            vids = {k: video.decode_mp4_bytes(rec[k]["video"])[0] for k in records.VIDEO_KEYS}
            h, w = vids["target"].shape[1:3]
            out.append(Clip(camera_ref=vids["camera_ref"], target=vids["target"],
                            content=vids["content_ref"],
                            c2w=traj_lib.relative_to_first(target["poses"]),
                            k=traj_lib.intrinsics_matrix(target["intrinsics"][0], h, w),
                            describe=str(target.get("camera_description", ""))))
            if len(out) == n:
                return out
    if len(out) < n:
        raise ValueError(f"{records_path} holds {len(out)} target videos, fewer than the "
                         f"{n} clips asked")
    return out


def read_camera(frames: np.ndarray, k: np.ndarray) -> np.ndarray | None:
    """Rotation-only c2w [f, 4, 4] of latent frames [f, H, W, 3], or None if not read."""
    return global_motion.estimate(frames, k)


def score_videos(videos, clips: list[Clip], stride: int = 4) -> dict:
    """{"rot_err", "psnr", "read", "clips", "per_clip"} of videos [F, H, W, 3] against
    ``clips``: RotErr deg/frame (mean over the clips read), PSNR dB of the frames after the
    first (squared error pooled over every clip), clips read, each clip's RotErr (None: not
    read)."""
    per_clip, sq = [], []
    for vid, clip in zip(videos, clips):
        frames = np.asarray(vid)[::stride]  # [f, H, W, 3] the latent frames
        truth = clip.target[::stride]
        sq.append(np.mean((frames[1:].astype(np.float64) - truth[1:]) ** 2))
        est = read_camera(frames, clip.k)
        per_clip.append(None if est is None else camera.camera_metrics(
            est, clip.c2w[::stride], degrees=True, reduction="mean")["RotErr"])
    errs = [e for e in per_clip if e is not None]
    return {"rot_err": float(np.mean(errs)) if errs else None,
            "psnr": psnr_from_mse(float(np.mean(sq))), "read": len(errs), "clips": len(clips),
            "per_clip": per_clip}


def true_camera_warp(clip: Clip) -> np.ndarray:
    """The first frame moved by the target's true camera: frame i is frame 0 warped by the
    rotation homography K R_i^T K^-1 (edges replicated where new content enters the view),
    uint8 [F, H, W, 3]. What a model that reads the camera exactly, and invents nothing, makes."""
    h, w = clip.first_frame.shape[:2]
    k_inv = np.linalg.inv(clip.k)
    return np.stack([cv2.warpPerspective(clip.first_frame, clip.k @ pose[:3, :3].T @ k_inv,
                                         (w, h), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REPLICATE)
                     for pose in clip.c2w])  # [F, H, W, 3]


def view_overlap(clip: Clip, stride: int = 4) -> dict:
    """How far the target's view travels: {"in_first_view": [f-1] the fraction of each latent
    frame after the first that frame 0 already showed (its pixels mapped by the rotation
    homography K R_0^T R_i K^-1 land inside frame 0), "motion_px": [f-1] the image motion
    from the previous latent frame, in pixels (the larger of the centre's and a corner's)}.
    A first frame can predict at most ``in_first_view`` of a target frame; the rest is new."""
    h, w = clip.first_frame.shape[:2]
    k_inv = np.linalg.inv(clip.k)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5  # pixel centres [H, W]
    pixels = np.stack([xs.ravel(), ys.ravel()], -1)[:, None]  # [H W, 1, 2] (x, y)
    probes = np.array([[[w / 2, h / 2]], [[0.5, 0.5]]])  # [2, 1, 2] centre, corner
    rots = clip.c2w[::stride, :3, :3]  # [f, 3, 3]
    inside, motion = [], []
    for prev, rot in zip(rots[:-1], rots[1:]):
        q = cv2.perspectiveTransform(pixels, clip.k @ rots[0].T @ rot @ k_inv)[:, 0]  # [H W, 2]
        inside.append(float(np.mean((q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0)
                                    & (q[:, 1] < h))))
        moved = cv2.perspectiveTransform(probes, clip.k @ prev.T @ rot @ k_inv)  # [2, 1, 2]
        motion.append(float(np.max(np.linalg.norm(moved - probes, axis=-1))))
    return {"in_first_view": inside, "motion_px": motion}


def reference_rows(clips: list[Clip], task: str, stride: int = 4) -> list[dict]:
    """The rows every table starts with: the ground truth (the measure's validation), a static
    camera (the first frame copied) and the first frame moved by the true camera (the PSNR a
    model reaches by reading the camera alone)."""
    static = [np.repeat(c.first_frame[None], len(c.target), 0) for c in clips]
    return [{"row": "ground truth", "task": task,
             **score_videos([c.target for c in clips], clips, stride)},
            {"row": "static camera (first frame copied)", "task": task,
             **score_videos(static, clips, stride)},
            {"row": "first frame moved by the true camera", "task": task,
             **score_videos([true_camera_warp(c) for c in clips], clips, stride)}]

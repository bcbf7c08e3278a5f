"""Motion of a generated video: VBench's Dynamic Degree over weight-free optical flow.

CamCloneMaster's Table 1 ("Dynamic Degree") uses VBench's `dynamic_degree`, which measures
optical flow with RAFT (raft-things weights). A RAFT port cannot be parity-tested here (no
PyTorch peer installable on our CPU stack), so the flow comes from OpenCV's DIS optical flow
(`cv2.DISOpticalFlow_create`, preset MEDIUM: no weights, a few milliseconds per frame pair at
64x112) and everything around the flow follows VBench exactly. DIS and RAFT disagree on
textureless regions, occlusions and large displacements, so the absolute numbers are NOT
VBench's: compare methods evaluated here with each other, not with published tables.

VBench's definition (vbench/dynamic_degree.py, `DynamicDegree`), as implemented here:
  * frames: decoded at their native resolution (no resize) and subsampled to about 8 fps by
    keeping every `max(1, round(fps / 8))`-th frame, starting with the first (Python's round,
    half to even); frames given without a frame rate (VBench's image folders; `fps=None` here)
    are all kept;
  * per consecutive pair of kept frames: the flow magnitude sqrt(u^2 + v^2) in pixels at every
    pixel, and the pair's score is the mean of its top `int(0.05 * H * W)` magnitudes;
  * threshold `6.0 * min(H, W) / 256` pixels (flow in pixels grows with resolution), and the
    number of pairs needed `round(4 * n / 16)` with n the number of kept FRAMES;
  * the video is dynamic when the number of pairs whose score is strictly above the threshold
    reaches that count (so with round(...) == 0, any video with one pair is dynamic);
  * the dataset's Dynamic Degree is the fraction of dynamic videos (the paper prints it x 100).
Differences besides the flow: DIS sees the grayscale frame (RAFT the RGB one); RAFT pads frames
to a multiple of 8 (replicate) and scores the padded flow field, DIS needs no padding, so for
sizes that are multiples of 8 (ours) the pixel counts are the same.

`motion` (our addition) is the mean over pairs of the top-5% scores, in pixels at the video's
resolution: a continuous companion to the yes/no decision.
"""
import cv2
import numpy as np

TARGET_FPS = 8.0  # VBench subsamples to about this rate
THRESHOLD_PX = 6.0  # at a shorter side of 256 pixels, scaled linearly with it
TOP_FRACTION = 0.05  # a pair's score: mean of the top 5% flow magnitudes
PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


def _check_video(frames):
    v = np.asarray(frames)
    if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {v.dtype} {list(v.shape)}")
    return v


def subsample(frames, fps=None):
    """Frames kept by VBench: every max(1, round(fps / 8))-th from the first (all if fps is None)."""
    if fps is None:
        return frames
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return frames[::max(1, round(fps / TARGET_FPS))]


def motion_threshold(height, width):
    """VBench's per-pair threshold in pixels: 6 at a shorter side of 256, linear in it."""
    return THRESHOLD_PX * min(height, width) / 256.0


def pairs_needed(num_frames):
    """VBench's number of pairs above threshold that makes a video of num_frames (kept) dynamic."""
    return round(4 * (num_frames / 16.0))


def flow_magnitudes(frames, preset=PRESET):
    """DIS optical flow magnitudes in pixels [F-1, H, W] (float32) of each consecutive pair of
    frames uint8 [F, H, W, 3] (flow from frame i to i+1, on grayscale frames, native size)."""
    v = _check_video(frames)
    if len(v) < 2:
        raise ValueError(f"optical flow needs at least 2 frames, got {len(v)}")
    dis = cv2.DISOpticalFlow_create(preset)
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in v]  # F x [H, W]
    out = np.empty((len(v) - 1,) + v.shape[1:3], np.float32)  # [F-1, H, W]
    for i in range(len(v) - 1):
        flow = dis.calc(gray[i], gray[i + 1], None)  # [H, W, 2] (u, v) in pixels
        out[i] = np.hypot(flow[..., 0], flow[..., 1])
    return out


def top_motion(magnitudes):
    """VBench's score of each pair [P]: the mean of its top int(0.05 * H * W) magnitudes
    (at least one) of magnitudes [P, H, W]."""
    m = np.asarray(magnitudes, np.float64).reshape(len(magnitudes), -1)  # [P, H*W]
    k = max(1, int(m.shape[1] * TOP_FRACTION))
    top = -np.partition(-m, k - 1, axis=1)[:, :k]  # [P, k] the k largest, any order
    return top.mean(axis=1)


def dynamic_degree(frames, fps=None, preset=PRESET):
    """VBench's Dynamic Degree decision for one video (see the module docstring).

    frames: uint8 [F, H, W, 3]; fps: its frame rate (subsampled to ~8 fps as VBench does), or
    None to use every frame. Returns {"dynamic": bool, "motion": mean over pairs of the top-5%
    flow magnitude in pixels, "pairs_above": number of pairs above the threshold}.
    """
    v = subsample(_check_video(frames), fps)
    if len(v) < 2:
        raise ValueError(f"dynamic degree needs at least 2 frames after subsampling to "
                         f"~{TARGET_FPS:g} fps, got {len(v)} (of {len(frames)} at {fps} fps)")
    scores = top_motion(flow_magnitudes(v, preset))  # [len(v) - 1]
    above = int(np.sum(scores > motion_threshold(*v.shape[1:3])))
    return {"dynamic": above >= pairs_needed(len(v)), "motion": float(scores.mean()),
            "pairs_above": above}

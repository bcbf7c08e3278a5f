"""Motion of a generated video: VBench's Dynamic Degree over RAFT or weight-free optical flow.

CamCloneMaster's Table 1 ("Dynamic Degree") uses VBench's `dynamic_degree`, which measures
optical flow with RAFT (raft-things weights, 20 iterations). Two flow backends:
  * `RaftFlow(path)`: our Flax RAFT (eval/networks/raft.py, parity-tested against torchvision's RAFT)
    with a local torchvision RAFT state dict (`--raft_weights FILE`). raft-things is
    torchvision's `Raft_Large_Weights.C_T_V1` (ported from the RAFT authors' raft-things.pth);
    with it, 20 iterations and the input handling below, the Dynamic Degree is VBench's. Other
    weights (e.g. `Raft_Large_Weights.DEFAULT` = C_T_SKHT_V2, fine-tuned on Sintel/KITTI/HD1K)
    run too but give a slightly different flow.
  * default, no weights: OpenCV's DIS optical flow (`cv2.DISOpticalFlow_create`, preset MEDIUM:
    a few milliseconds per frame pair at 64x112). DIS and RAFT disagree on textureless regions,
    occlusions and large displacements, so DIS numbers are NOT VBench's: compare methods
    evaluated here with each other, not with published tables.

VBench's definition (vbench/dynamic_degree.py, `DynamicDegree`), as implemented here:
  * frames: decoded at their native resolution (no resize) and subsampled to about 8 fps by
    keeping every `max(1, round(fps / 8))`-th frame, starting with the first (Python's round,
    half to even); frames given without a frame rate (VBench's image folders; `fps=None` here)
    are all kept;
  * RAFT input: RGB in [0, 255] mapped to [-1, 1] (2 x / 255 - 1, as both the original RAFT and
    torchvision's `Raft_Large_Weights.transforms()` do), padded to a multiple of 8 by
    replicating edge pixels, split evenly with the extra pixel at the bottom / right (RAFT's
    `InputPadder`, "sintel" mode); the flow of the PADDED frame is scored (VBench does not
    unpad);
  * per consecutive pair of kept frames: the flow magnitude sqrt(u^2 + v^2) in pixels at every
    pixel, and the pair's score is the mean of its top `int(0.05 * H * W)` magnitudes;
  * threshold `6.0 * min(H, W) / 256` pixels of the unpadded frame (flow in pixels grows with
    resolution), and the number of pairs needed `round(4 * n / 16)` with n the number of kept
    FRAMES;
  * the video is dynamic when the number of pairs whose score is strictly above the threshold
    reaches that count (so with round(...) == 0, any video with one pair is dynamic);
  * the dataset's Dynamic Degree is the fraction of dynamic videos (the paper prints it x 100).
DIS sees the grayscale frame at its own size (no padding; for sizes that are multiples of 8,
ours, the pixel counts are the same).

`motion` (our addition) is the mean over pairs of the top-5% scores, in pixels at the video's
resolution: a continuous companion to the yes/no decision.
"""
import cv2
import jax
import numpy as np

from camclone_jax.convert import raft as convert_raft
from camclone_jax.eval.networks import raft

RAFT_ITERS = 20  # VBench runs RAFT with iters=20
RAFT_MULTIPLE = 8  # RAFT's inputs are padded to a multiple of 8
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


def pad_to_multiple(frames, multiple=RAFT_MULTIPLE):
    """frames [F, H, W, C] padded to multiples of `multiple` by replicating edges, half on each
    side and the odd pixel at the bottom / right (RAFT's `InputPadder`, "sintel" mode)."""
    h, w = frames.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    return np.pad(frames, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)),
                  mode="edge")


class RaftFlow:
    """RAFT flow magnitudes from a local torchvision RAFT state dict (see the module docstring).

    path: a `.pth` of `model.state_dict()` (read with torch.load(weights_only=True)) or a
    `.safetensors`; size: "large" / "small" for torchvision's presets, None to read the sizes from
    the file; iters: refinements (VBench: 20); batch: frame pairs per call (one compilation per
    frame size; the last batch is padded). Calling it on uint8 frames [F, H, W, 3] returns
    magnitudes [F-1, H', W'] at the padded size H', W' (multiples of 8).
    """

    def __init__(self, path, size=None, iters=RAFT_ITERS, batch=4):
        self.path, self.iters, self.batch = path, iters, batch
        self.config, params = convert_raft.load_raft(path, size)
        self.params = jax.device_put(params)
        model = raft.RAFT(self.config)

        def magnitudes(params, frames1, frames2):  # uint8 [b, H, W, 3] each
            flows = model.apply({"params": params}, raft.normalize(frames1),
                                raft.normalize(frames2), iters)  # [iters, b, H, W, 2]
            return jax.numpy.linalg.norm(flows[-1], axis=-1)  # [b, H, W]

        self._magnitudes = jax.jit(magnitudes)

    def __call__(self, frames):
        v = pad_to_multiple(_check_video(frames))  # [F, H', W', 3]
        if len(v) < 2:
            raise ValueError(f"optical flow needs at least 2 frames, got {len(v)}")
        out = []
        for start in range(0, len(v) - 1, self.batch):
            idx = np.minimum(np.arange(start, start + self.batch), len(v) - 2)  # pad by repeats
            mags = self._magnitudes(self.params, v[idx], v[idx + 1])  # [batch, H', W']
            out.append(np.asarray(mags)[:min(self.batch, len(v) - 1 - start)])
        return np.concatenate(out).astype(np.float32)  # [F-1, H', W']


def top_motion(magnitudes):
    """VBench's score of each pair [P]: the mean of its top int(0.05 * H * W) magnitudes
    (at least one) of magnitudes [P, H, W]."""
    m = np.asarray(magnitudes, np.float64).reshape(len(magnitudes), -1)  # [P, H*W]
    k = max(1, int(m.shape[1] * TOP_FRACTION))
    top = -np.partition(-m, k - 1, axis=1)[:, :k]  # [P, k] the k largest, any order
    return top.mean(axis=1)


def dynamic_degree(frames, fps=None, preset=PRESET, flow=None):
    """VBench's Dynamic Degree decision for one video (see the module docstring).

    frames: uint8 [F, H, W, 3]; fps: its frame rate (subsampled to ~8 fps as VBench does), or
    None to use every frame; flow: a callable frames -> flow magnitudes [F-1, H', W'] (e.g. a
    `RaftFlow`), None for DIS with `preset`. Returns {"dynamic": bool, "motion": mean over pairs of the top-5%
    flow magnitude in pixels, "pairs_above": number of pairs above the threshold}.
    """
    v = subsample(_check_video(frames), fps)
    if len(v) < 2:
        raise ValueError(f"dynamic degree needs at least 2 frames after subsampling to "
                         f"~{TARGET_FPS:g} fps, got {len(v)} (of {len(frames)} at {fps} fps)")
    mags = flow_magnitudes(v, preset) if flow is None else flow(v)  # [len(v) - 1, H', W']
    scores = top_motion(mags)  # [len(v) - 1]
    above = int(np.sum(scores > motion_threshold(*v.shape[1:3])))
    return {"dynamic": above >= pairs_needed(len(v)), "motion": float(scores.mean()),
            "pairs_above": above}

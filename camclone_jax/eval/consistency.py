"""View consistency of a generated video against its content reference (CamCloneMaster Table 2).

* `matched_pixels` (weights-free): corresponding frames of the two videos are matched with SIFT
  (Lowe's ratio test) and a RANSAC fundamental matrix; the score is the mean number of inlier
  matches per frame pair. The paper's "Matching Pixels" uses the learned matcher GIM, whose
  weights we cannot ship, so our numbers measure the same idea on another scale: compare them
  between methods evaluated here, not with the paper's.
* `clip_similarity` (needs local CLIP weights): mean cosine similarity x 100 between CLIP image
  features of corresponding frames (CLIP-V). With `consecutive=True` it compares each generated
  frame with the next (a frame-level temporal consistency in the spirit of VBench). Features are
  the class token of `camclone_jax.models.clip` (Wan's ViT-H/14 vision tower, penultimate layer),
  loaded with `camclone_jax.convert.encoders.load_clip` from a local path; the paper's CLIP-V
  uses the projected CLIP embedding, so values differ from its table in scale.

Temporal consistency of the generated video alone (CamCloneMaster Table 1, "Dynamic Quality"),
VBench's definition (vbench/subject_consistency.py, background_consistency.py): with unit-norm
frame features f_0 .. f_{F-1}, the score of a video is
    mean over i = 1 .. F-1 of (max(0, cos(f_i, f_{i-1})) + max(0, cos(f_i, f_0))) / 2,
reported x 100 as the paper's table prints it (VBench's raw score is in [0, 1]). VBench's
dataset score is the frame-weighted mean (all frame pairs of all videos); the report averages
videos, which is the same when all videos have one length.
* `subject_consistency` (Sub. Cons.; needs local DINO weights): DINO ViT-B/16 class-token
  features (`DinoEmbedder`, `camclone_jax.eval.networks.dino`, weights from a transformers ViTModel
  directory such as facebook/dino-vitb16), frames preprocessed as VBench does (shorter side
  resized to the model's image size, bilinear, ImageNet mean/std; positions interpolated).
* `background_consistency` (Bg. Cons.; needs local CLIP weights): the same formula on the
  `ClipEmbedder` features above. VBench uses the projected embedding of CLIP ViT-B/32; ours are
  the class token of the CLIP weights given (Wan's ViT-H/14), so values are on another scale.
Dynamic degree (VBench uses RAFT optical flow) is in eval/motion.py (RAFT or OpenCV DIS flow).
"""
import os

import cv2
import numpy as np

from camclone_jax.convert import dino as convert_dino
from camclone_jax.convert import encoders
from camclone_jax.eval.networks import dino
from camclone_jax.models import clip


def _check_pair(frames_a, frames_b):
    a, b = np.asarray(frames_a), np.asarray(frames_b)
    for name, v in (("generated", a), ("reference", b)):
        if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8:
            raise ValueError(f"{name} frames must be uint8 [F, H, W, 3], got {v.dtype} {list(v.shape)}")
    return a, b


def _frame_pairs(len_a, len_b, max_pairs):
    """Evenly spaced frame indices (ia [n], ib [n]) pairing two videos of possibly different length."""
    n = min(len_a, len_b, max_pairs)
    return (np.round(np.linspace(0, len_a - 1, n)).astype(int),
            np.round(np.linspace(0, len_b - 1, n)).astype(int))


def _sift_inliers(img_a, img_b, sift, ratio, ransac_px):
    """Number of RANSAC-consistent SIFT matches between two RGB frames."""
    ga, gb = (cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY) for x in (img_a, img_b))
    ka, da = sift.detectAndCompute(ga, None)
    kb, db = sift.detectAndCompute(gb, None)
    if da is None or db is None or len(ka) < 2 or len(kb) < 2:
        return 0
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    if len(good) < 8:
        return 0
    pa = np.float32([ka[m.queryIdx].pt for m in good])  # [n, 2]
    pb = np.float32([kb[m.trainIdx].pt for m in good])
    _, mask = cv2.findFundamentalMat(pa, pb, cv2.FM_RANSAC, ransac_px, 0.999)
    return 0 if mask is None else int(mask.sum())


def matched_pixels(frames_gen, frames_ref, max_pairs=16, ratio=0.8, ransac_px=2.0, max_features=2000):
    """Mean RANSAC-inlier SIFT matches per corresponding frame pair (higher: more consistent).

    Videos of different lengths are paired at evenly spaced frames; different sizes are fine.
    """
    gen, ref = _check_pair(frames_gen, frames_ref)
    cv2.setRNGSeed(0)
    sift = cv2.SIFT_create(nfeatures=max_features)
    ia, ib = _frame_pairs(len(gen), len(ref), max_pairs)
    return float(np.mean([_sift_inliers(gen[i], ref[j], sift, ratio, ransac_px) for i, j in zip(ia, ib)]))


def require_clip_weights(path):
    """Raises a clear error when local CLIP weights are not given or not there."""
    if not path:
        raise ValueError("CLIP-based metrics need local CLIP vision weights: pass a path (a "
                         "transformers CLIPVisionModel directory, Wan's open-clip .pth, or a "
                         "directory written by camclone_jax.convert)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"CLIP weights not found: {path} (CLIP-V and Bg. Cons. need "
                                "local weights; none are downloaded)")


def require_dino_weights(path):
    """Raises a clear error, naming the missing file, when a DINO ViTModel directory (config.json
    and model.safetensors or pytorch_model.bin) is not given or incomplete."""
    if not path:
        raise ValueError("Sub. Cons. needs local DINO weights: download facebook/dino-vitb16 "
                         "(transformers format) and pass --dino_weights DIR")
    missing = convert_dino.missing_file(path)
    if missing is not None:
        raise FileNotFoundError(f"DINO weights not found at {missing}: download "
                                "facebook/dino-vitb16 (transformers format) and pass "
                                "--dino_weights DIR")


class ClipEmbedder:
    """CLIP image features from local weights (see the module docstring); raises a clear error
    when the path is missing."""

    def __init__(self, path, batch_size=8):
        require_clip_weights(path)
        self.config, params = encoders.load_clip(path)
        self.params = clip.prepare_params(self.config, params)
        self.batch_size = batch_size

    def __call__(self, frames):
        """Unit-norm features [F, dim] of frames uint8 [F, H, W, 3]."""
        out = []
        for start in range(0, len(frames), self.batch_size):
            pixels = clip.preprocess_images(frames[start:start + self.batch_size],
                                            size=self.config.image_size, mode="crop")
            tokens = np.asarray(clip.encode_images(self.config, self.params, pixels), np.float64)
            out.append(tokens[:, 0])  # class token [b, dim]
        feats = np.concatenate(out)
        return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def clip_similarity(embed, frames_gen, frames_ref=None, max_pairs=16):
    """Mean cosine similarity x 100 between CLIP features of corresponding frames of the generated
    video and the reference (CLIP-V), or of consecutive generated frames when frames_ref is None."""
    if frames_ref is None:
        gen = np.asarray(frames_gen)
        if len(gen) < 2:
            raise ValueError("temporal consistency needs at least 2 frames")
        feats = embed(gen)
        return float(100 * np.mean(np.sum(feats[1:] * feats[:-1], axis=1)))
    gen, ref = _check_pair(frames_gen, frames_ref)
    ia, ib = _frame_pairs(len(gen), len(ref), max_pairs)
    return float(100 * np.mean(np.sum(embed(gen[ia]) * embed(ref[ib]), axis=1)))


class DinoEmbedder:
    """DINO class-token features from a local transformers ViTModel directory (see the module
    docstring); raises a clear error naming the missing file when the weights are absent.

    Frames are preprocessed as VBench does (``mode="vbench"``, see
    ``camclone_jax.eval.networks.dino.preprocess_frames``) or resized to a square (``mode="square"``);
    batches are padded to ``batch_size`` so a video compiles the jitted forward once.
    """

    def __init__(self, path, batch_size=8, mode="vbench"):
        require_dino_weights(path)
        if mode not in dino.PREPROCESS_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {dino.PREPROCESS_MODES}")
        self.config, params = convert_dino.load_dino(path)
        self.params = dino.prepare_params(self.config, params)
        self.batch_size, self.mode = batch_size, mode

    def __call__(self, frames):
        """Unit-norm features [F, dim] of frames uint8 [F, H, W, 3]."""
        out = []
        for start in range(0, len(frames), self.batch_size):
            pixels = dino.preprocess_frames(frames[start:start + self.batch_size],
                                            self.config.image_size, self.mode)
            n = len(pixels)
            pad = np.zeros((self.batch_size - n,) + pixels.shape[1:], np.float32)
            pixels = np.concatenate([pixels, pad])  # [batch_size, h, w, 3]
            feats = dino.cls_features(self.config, self.params, pixels)  # [batch_size, dim]
            out.append(np.asarray(feats, np.float64)[:n])
        feats = np.concatenate(out)
        return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def temporal_consistency(features):
    """VBench's score x 100 of unit-norm frame features [F, dim] (F >= 2): the mean over frames
    i >= 1 of (max(0, cos(f_i, f_{i-1})) + max(0, cos(f_i, f_0))) / 2."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"temporal consistency needs features of >= 2 frames [F, dim], got "
                         f"{list(f.shape)}")
    previous = np.sum(f[1:] * f[:-1], axis=1)  # [F-1] cos(f_i, f_{i-1})
    first = f[1:] @ f[0]  # [F-1] cos(f_i, f_0)
    return float(100 * np.mean((np.maximum(previous, 0) + np.maximum(first, 0)) / 2))


def _check_video(frames):
    v = np.asarray(frames)
    if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {v.dtype} {list(v.shape)}")
    if len(v) < 2:
        raise ValueError("temporal consistency needs at least 2 frames")
    return v


def subject_consistency(embed, frames):
    """VBench Subject Consistency x 100 of a video (uint8 [F, H, W, 3]) with DINO features
    (``embed``: a ``DinoEmbedder`` or any frames -> unit-norm [F, dim] callable)."""
    return temporal_consistency(embed(_check_video(frames)))


def background_consistency(embed, frames):
    """VBench Background Consistency x 100 of a video (uint8 [F, H, W, 3]) with CLIP image
    features (``embed``: a ``ClipEmbedder`` or any frames -> unit-norm [F, dim] callable)."""
    return temporal_consistency(embed(_check_video(frames)))

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
Metrics that need DINO or RAFT weights (VBench subject consistency, dynamic degree) are not
implemented: no such weights can be shipped or downloaded here.
"""
import os

import cv2
import numpy as np


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


class ClipEmbedder:
    """CLIP image features from local weights (see the module docstring); raises a clear error
    when the path is missing."""

    def __init__(self, path, batch_size=8):
        if not path:
            raise ValueError("CLIP-based metrics need local CLIP vision weights: pass a path (a "
                             "transformers CLIPVisionModel directory, Wan's open-clip .pth, or a "
                             "directory written by camclone_jax.convert)")
        if not os.path.exists(path):
            raise FileNotFoundError(f"CLIP weights not found: {path} (CLIP-V needs local weights; "
                                    "none are downloaded)")
        from camclone_jax.convert import encoders
        from camclone_jax.models import clip
        self._clip = clip
        self.config, params = encoders.load_clip(path)
        self.params = clip.prepare_params(self.config, params)
        self.batch_size = batch_size

    def __call__(self, frames):
        """Unit-norm features [F, dim] of frames uint8 [F, H, W, 3]."""
        out = []
        for start in range(0, len(frames), self.batch_size):
            pixels = self._clip.preprocess_images(frames[start:start + self.batch_size],
                                                  size=self.config.image_size, mode="crop")
            tokens = np.asarray(self._clip.encode_images(self.config, self.params, pixels), np.float64)
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

"""Camera-preserving augmentation of training triplets: more cameras and more-looking references
from the same records, so that a small model cannot learn its references by heart.

A rendered dataset holds a finite set of (reference video, target motion) pairs, and a tiny
model trained on it for a few epochs learns them as a lookup (configs/clone_3d.py's first
runs: the reference helped on training triplets and not on held-out ones). Two families of
changes keep what the model must learn, "move like the reference", while multiplying what it
would have to memorise:

- ``geometry``: one of the 8 symmetries of the square (flips, and transposes when frames are
  square; flips only otherwise), applied alike to every video and image of the triplet: the
  target, the camera reference, the content video, the first frame and the I2V latents. A pan
  becomes a mirrored pan or a tilt, a roll a roll the other way: the reference still films the
  target's camera.
- ``ref_colour``: the camera reference alone gets one of the 6 orders of its RGB channels,
  inverted or not (12 looks). Its motion is unchanged; its look no longer names it.

Both are drawn from (seed, example index), so a run's batches stay reproducible. The
same-scene curriculum runs after this stage, so a reference that is the target itself is an
exact copy of the (transformed) target. Applies to pixel examples ([F, H, W, 3], uint8 or
float in [-1, 1]) and to pixel-codec latents ([L, h, w, s*s*3], space-to-depth cells of s
pixels, data/codec.py: the same operations, exactly); VAE latents cannot be flipped exactly
and are refused.
"""
import dataclasses

import numpy as np

VIDEO_KEYS = ("target", "camera_ref", "content_ref", "i2v_latents")


@dataclasses.dataclass(frozen=True)
class Augment:
    """Which augmentations apply; ``cell`` is the pixel codec's spatial factor for latent
    examples (0: the examples are pixels)."""

    geometry: bool = False
    ref_colour: bool = False
    cell: int = 0

    @property
    def active(self) -> bool:
        return self.geometry or self.ref_colour


def _to_pixels(x: np.ndarray, cell: int) -> np.ndarray:
    """[..., h, w, s*s*3] space-to-depth latents -> [..., h*s, w*s, 3] (cell 0: unchanged)."""
    if not cell:
        return x
    *lead, h, w, c = x.shape
    x = x.reshape(*lead, h, w, cell, cell, c // (cell * cell))  # [..., h, w, p, q, 3]
    x = np.moveaxis(x, -3, -4)  # [..., h, p, w, q, 3]
    return x.reshape(*lead, h * cell, w * cell, c // (cell * cell))  # [..., H, W, 3]


def _to_cells(x: np.ndarray, cell: int) -> np.ndarray:
    """The inverse of ``_to_pixels``: [..., H, W, 3] -> [..., H/s, W/s, s*s*3]."""
    if not cell:
        return x
    *lead, hh, ww, c = x.shape
    x = x.reshape(*lead, hh // cell, cell, ww // cell, cell, c)  # [..., h, p, w, q, 3]
    x = np.moveaxis(x, -4, -3)  # [..., h, w, p, q, 3]
    return x.reshape(*lead, hh // cell, ww // cell, cell * cell * c)  # [..., h, w, C]


def symmetry(x: np.ndarray, flip_h: bool, flip_w: bool, transpose: bool) -> np.ndarray:
    """One symmetry of the image plane on [..., H, W, 3] (transpose first, then flips)."""
    if transpose:
        x = np.swapaxes(x, -3, -2)  # [..., W, H, 3]
    if flip_h:
        x = x[..., ::-1, :, :]
    if flip_w:
        x = x[..., ::-1, :]
    return x


def recolour(x: np.ndarray, order: np.ndarray, invert: bool) -> np.ndarray:
    """RGB channels reordered (and inverted: 255 - x for uint8, -x for floats in [-1, 1])."""
    x = x[..., order]
    if invert:
        x = 255 - x if x.dtype == np.uint8 else -x
    return x


class AugmentStage:
    """Grain map-with-index stage: example i gets the augmentations drawn from (seed, i)."""

    def __init__(self, augment: Augment, seed: int):
        self.augment, self.seed = augment, seed

    def _apply(self, x: np.ndarray, fn) -> np.ndarray:
        return np.ascontiguousarray(_to_cells(fn(_to_pixels(x, self.augment.cell)),
                                              self.augment.cell))

    def __call__(self, index: int, example: dict) -> dict:
        if "target" not in example:  # a bad-example placeholder passes through
            return example
        rng = np.random.default_rng([self.seed, 11, index])
        flip_h, flip_w, transpose = (bool(b) for b in rng.integers(0, 2, 3))
        order, invert = rng.permutation(3), bool(rng.integers(0, 2))
        out = dict(example)
        if self.augment.geometry:
            square = example["target"].shape[-3] == example["target"].shape[-2]  # h == w
            sym = (flip_h, flip_w, transpose and square)
            for key in VIDEO_KEYS:
                if key in out:
                    out[key] = self._apply(out[key], lambda v: symmetry(v, *sym))
            if "first_frame" in out:  # pixels [H, W, 3] whatever the examples' kind
                out["first_frame"] = np.ascontiguousarray(symmetry(out["first_frame"], *sym))
        if self.augment.ref_colour:
            out["camera_ref"] = self._apply(out["camera_ref"],
                                            lambda v: recolour(v, order, invert))
        return out

    def __repr__(self):
        return f"AugmentStage({self.augment}, seed={self.seed})"

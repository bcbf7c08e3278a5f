"""Camera reference videos rendered from a camera path: a neutral scene filmed along any move.

  render_reference(c2w, intrinsics, height, width, scene="indoor", seed=0) -> uint8 [F, H, W, 3]

The path c2w [F, 4, 4] is in the location frame, as `moves.build_move` makes it; a path from
elsewhere (a pose file, an estimate: relative to its first frame, in metres) is put there by
`place_path`, starting at `moves.REFERENCE_START` (4.5 m from a point 1 m above the centre,
looking at it 15 deg down). The scene (`scene.make_reference_scene`: indoor or outdoor, one per
seed) is laid out around the path, so objects keep clear of the camera and an indoor room grows
to hold it; there is no subject, and nothing in it moves. The frames come from the jitted ray
caster of `render.py`, compiled once per (frames, height, width), without shadows (it compiles
and renders about a third faster; the camera's motion is what matters).
"""
import numpy as np

from camclone_jax.data.synthetic import moves
from camclone_jax.data.synthetic import render as render_lib
from camclone_jax.data.synthetic import scene as scene_lib
from camclone_jax.data.synthetic import trajectories as traj_lib

MIN_HEIGHT_M = 0.1  # the lowest a camera may go (above the floor)
PIXELS_PER_BATCH = 4 * 480 * 832  # frames rendered at once: 4 of 480x832, at most MAX_BATCH
MAX_BATCH = 32


def place_path(c2w, start=moves.REFERENCE_START):
    """A path c2w [F, 4, 4] (any frame) made relative to its first pose and started at `start`
    (a `trajectories.start_pose` spec): location-frame poses [F, 4, 4] float64."""
    return traj_lib.start_pose(start)[None] @ traj_lib.relative_to_first(c2w)  # [F, 4, 4]


def check_path(c2w):
    """ValueError naming the first frame where a location-frame path c2w [F, 4, 4] goes below
    the floor (the world's +y is down); the path as float64 otherwise."""
    c2w = np.asarray(c2w, np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or not np.all(np.isfinite(c2w)):
        raise ValueError(f"a camera path must be finite c2w [F, 4, 4], got {list(c2w.shape)}")
    height = -c2w[:, 1, 3]  # [F] metres above the floor
    low = int(np.argmin(height))
    if height[low] < MIN_HEIGHT_M:
        raise ValueError(f"the camera goes {MIN_HEIGHT_M - height[low]:.2f} m below the floor's "
                         f"{MIN_HEIGHT_M} m margin at frame {low}: it starts {height[0]:.2f} m up, "
                         f"so move it down less far (or scale the path)")
    return c2w


def render_reference(c2w, intrinsics, height, width, scene="indoor", seed=0, supersample=1):
    """uint8 frames [F, H, W, 3] of the neutral scene `scene` (seed `seed`) filmed along the
    location-frame path c2w [F, 4, 4] with normalised intrinsics [F, 4]."""
    c2w = check_path(c2w)
    place = scene_lib.make_reference_scene(np.random.default_rng(seed), scene, c2w[:, :3, 3])
    batch = min(MAX_BATCH, max(1, PIXELS_PER_BATCH // (height * width * supersample ** 2)))
    frames, _ = render_lib.render(place.arrays, c2w, intrinsics, np.zeros(len(c2w), np.int32),
                                  height, width, supersample, shadows=False, batch_size=batch)
    return frames  # [F, H, W, 3]

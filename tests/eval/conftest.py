"""Shared fixtures of the evaluation tests: synthetic clips with known poses, rendered once per
session (a few seconds on one CPU core), and their pose estimates."""
import numpy as np
import pytest

from camclone_jax.data.synthetic import render as render_lib
from camclone_jax.data.synthetic import scene as scene_lib
from camclone_jax.data.synthetic import trajectories as traj_lib
from camclone_jax.eval import poses

FRAMES, HEIGHT, WIDTH = 21, 128, 224
START = {"radius": 4.5, "azimuth_deg": 20.0, "pitch_deg": 15.0, "target": [0.0, -1.0, 0.0]}
MOVES = {  # name -> trajectory parameters (trajectories.build_trajectory)
    "pan": {"angle_deg": 40.0}, "tilt": {"angle_deg": 20.0}, "roll": {"angle_deg": 60.0},
    "dolly": {"distance_m": 1.5}, "truck": {"distance_m": 1.5},
    "orbit": {"angle_deg": 40.0, "pivot_distance_m": 4.5, "elevation_deg": 10.0, "roll_deg": 0.0},
    "static": {},
}
ROTATION_MOVES = ("pan", "tilt", "roll", "static")


@pytest.fixture(scope="session")
def clips():
    """{move: (frames uint8 [F, H, W, 3], c2w [F, 4, 4] world, intrinsics [F, 4])} of one indoor
    location filmed with each move of MOVES (24 mm lens)."""
    trajs = {name: traj_lib.build_trajectory(name, {"start": START, "focal_mm": 24.0, **params},
                                             FRAMES, WIDTH / HEIGHT)
             for name, params in MOVES.items()}
    centres = np.concatenate([t.c2w[:, :3, 3] for t in trajs.values()])
    starts = np.stack([t.c2w[0, :3, 3] for t in trajs.values()])
    scene = scene_lib.make_scene(np.random.default_rng(1), FRAMES, 15.0, centres, starts,
                                 kind="indoor_room", palette="day")
    out = {}
    for name, traj in trajs.items():
        c2w = (scene.anchor[None] @ traj.c2w.astype(np.float64)).astype(np.float32)  # [F, 4, 4]
        frames, _ = render_lib.render(scene.arrays, c2w, traj.intrinsics, np.arange(FRAMES),
                                      HEIGHT, WIDTH, supersample=1)
        out[name] = (frames, c2w.astype(np.float64), traj.intrinsics.astype(np.float64))
    return out


@pytest.fixture(scope="session")
def estimates(clips):
    """Lazily computed {move: PoseEstimate} with the true intrinsics (cached per session)."""
    cache = {}

    def get(name):
        if name not in cache:
            frames, _, intr = clips[name]
            cache[name] = poses.estimate_poses(frames, intr)
        return cache[name]
    return get

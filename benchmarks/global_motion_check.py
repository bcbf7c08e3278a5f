"""Validates the global-motion camera measure (camclone_jax.eval.global_motion) on ground truth.

Before the measure scores any model it must hold on the true videos: this renders --clips
held-out synthetic clips (unseen scenes, seed --seed) whose cameras make rotation-dominated
moves (--moves, default pan, tilt, roll and dolly, angles up to --max_angle / --max_roll
degrees over the clip), keeps every --stride-th frame (the pixel codec's temporal factor),
estimates each clip's rotations from its frames and scores them against the true poses with
the project's RotErr (degrees per frame, frame 0 included, as docs/results.md reports it).
Next to it: the static camera's RotErr (the identity poses), the range the measure must resolve.

  python benchmarks/global_motion_check.py --clips 24 --frames 17 --height 32 --width 56 \
      [--model rotation|euclidean] [--out result.json]

The issue's acceptance for a measure: poses on >= 90% of clips, <= 1 deg/frame error.
"""
import argparse
import json
import math
import time

import numpy as np

from camclone_jax.data.synthetic import render as render_lib
from camclone_jax.data.synthetic import scene as scene_lib
from camclone_jax.data.synthetic import trajectories as traj_lib
from camclone_jax.eval import camera, global_motion


def draw_move(rng, name: str, frames: int, aspect: float, max_angle: float, max_roll: float,
              config=traj_lib.TrajectoryConfig()):
    """A valid trajectory of the move ``name`` with the generator's start and lens rules."""
    for _ in range(100):
        start = {"radius": float(rng.choice(config.radii)),
                 "azimuth_deg": float(rng.uniform(-180, 180)),
                 "pitch_deg": float(rng.uniform(*config.pitch_deg)),
                 "target": [float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-1.4, -0.6)),
                            float(rng.uniform(-0.4, 0.4))]}
        params = {"start": start, "focal_mm": float(rng.choice(config.focal_mm)),
                  "ease_a": 0.0 if rng.random() < 0.5 else float(rng.uniform(-5, 5))}
        sign = float(rng.choice([-1.0, 1.0]))
        if name == "dolly":
            params["distance_m"] = sign * float(rng.uniform(0.5, config.max_travel))
        else:
            top = max_roll if name == "roll" else max_angle
            params["angle_deg"] = sign * float(rng.uniform(5, top))
        traj = traj_lib.build_trajectory(name, params, frames, aspect)
        if not traj_lib.check_trajectory(traj.c2w, config):
            return traj
    raise RuntimeError(f"no valid {name} trajectory in 100 tries")


def render_clip(rng, traj, frames: int, height: int, width: int, supersample: int):
    """uint8 frames [F, H, W, 3] of ``traj`` in a fresh procedural scene."""
    centres = traj.c2w[:, :3, 3]  # [F, 3]
    scene = scene_lib.make_scene(rng, frames, 15.0, centres, centres[:1])
    c2w = scene.anchor[None] @ traj.c2w.astype(np.float64)  # [F, 4, 4] world frame
    out, _ = render_lib.render(scene.arrays, c2w, traj.intrinsics, np.arange(frames), height,
                               width, supersample)
    return out


def check(args) -> dict:
    """Renders and scores the clips; returns the summary (per-clip rows under "clips")."""
    rows, moves = [], args.moves.split(",")
    for i in range(args.clips):
        rng = np.random.default_rng([args.seed, i])
        name = moves[i % len(moves)]
        traj = draw_move(rng, name, args.frames, args.width / args.height, args.max_angle,
                         args.max_roll)
        frames = render_clip(rng, traj, args.frames, args.height, args.width, args.supersample)
        keep = slice(None, None, args.stride)
        video, true_c2w = frames[keep], traj.c2w[keep].astype(np.float64)  # [f, H, W, 3], [f, 4, 4]
        k = traj_lib.intrinsics_matrix(traj.intrinsics[0], args.height, args.width)  # [3, 3]
        est = global_motion.estimate(video, k, args.model)
        static = camera.camera_metrics(np.tile(np.eye(4), (len(video), 1, 1)), true_c2w,
                                       degrees=True, reduction="mean")["RotErr"]
        err = None if est is None else camera.camera_metrics(
            est, true_c2w, degrees=True, reduction="mean")["RotErr"]
        rows.append({"clip": i, "move": name, "describe": traj.describe(), "rot_err": err,
                     "static_rot_err": static})
        print(json.dumps(rows[-1]), flush=True)
    ok = [r["rot_err"] for r in rows if r["rot_err"] is not None]
    return {"clips": rows, "success": len(ok) / len(rows),
            "rot_err_mean": float(np.mean(ok)) if ok else math.nan,
            "rot_err_median": float(np.median(ok)) if ok else math.nan,
            "rot_err_max": float(np.max(ok)) if ok else math.nan,
            "static_rot_err_mean": float(np.mean([r["static_rot_err"] for r in rows])),
            "args": vars(args)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--height", type=int, default=32)
    p.add_argument("--width", type=int, default=56)
    p.add_argument("--stride", type=int, default=4, help="keep every stride-th frame")
    p.add_argument("--supersample", type=int, default=2)
    p.add_argument("--model", choices=global_motion.MODELS, default="rotation")
    p.add_argument("--moves", default="pan,tilt,roll,dolly")
    p.add_argument("--max_angle", type=float, default=45.0, help="pan / tilt, degrees per clip")
    p.add_argument("--max_roll", type=float, default=60.0, help="roll, degrees per clip")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--out", default=None, help="write the summary here as JSON")
    args = p.parse_args(argv)
    start = time.time()
    summary = check(args)
    summary["seconds"] = round(time.time() - start, 1)
    print(json.dumps({k: v for k, v in summary.items() if k != "clips"}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()

"""Benchmark: the camera-pose backends (ours, COLMAP global, COLMAP incremental) side by side.

Three parts, each printing a markdown table (and all written to --out as JSON):

  synthetic  accuracy, failures and seconds per video on rendered clips with TRUE poses: one
             indoor location per --scenes seed filmed with each move (pan, tilt, roll, static,
             dolly, truck, orbit; 24 mm lens, true intrinsics given) at each --sizes; per-frame
             rotation error (CamI2V's geodesic angle, degrees) worst / mean, mean normalised
             translation error, as in tests/eval/test_poses.py
  real       the release's real camera references (--real_dir, 832x480, 77 frames): each unique
             video estimated twice in fresh calls (the identity pair: must score ~0), failures,
             seconds; the byte-identical duplicates in the folder are counted (the evaluation
             caches poses by file content, so they score exactly 0); with two backends, their
             agreement (RotErr between their estimates, degrees per frame)
  timing     seconds per video against the frame count (--timing_frames, default 17/33/49/81)
             on one real reference (--timing_video; frames beyond its length are played back
             and forth, so 81 frames of a 77-frame video repeat 4), every backend in one run
             side by side

  python benchmarks/pose_backends.py --parts synthetic [--sizes 64x112,128x224] [--scenes 1]
  python benchmarks/pose_backends.py --parts real --real_dir DIR [--real_frames 77] [--backends colmap]
  python benchmarks/pose_backends.py --parts timing --timing_video DIR/000.mp4 [--backends ours,colmap]
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from camclone_jax.data import video as video_lib  # noqa: E402
from camclone_jax.data.synthetic import render as render_lib  # noqa: E402
from camclone_jax.data.synthetic import scene as scene_lib  # noqa: E402
from camclone_jax.data.synthetic import trajectories as traj_lib  # noqa: E402
from camclone_jax.eval import camera, colmap, pose_backends, poses  # noqa: E402

START = {"radius": 4.5, "azimuth_deg": 20.0, "pitch_deg": 15.0, "target": [0.0, -1.0, 0.0]}
MOVES = {  # as tests/eval/conftest.py
    "pan": {"angle_deg": 40.0}, "tilt": {"angle_deg": 20.0}, "roll": {"angle_deg": 60.0},
    "static": {}, "dolly": {"distance_m": 1.5}, "truck": {"distance_m": 1.5},
    "orbit": {"angle_deg": 40.0, "pivot_distance_m": 4.5, "elevation_deg": 10.0, "roll_deg": 0.0},
}
BACKENDS = {  # name -> (backend, PoseConfig or ColmapConfig)
    "ours": ("ours", poses.PoseConfig()),
    "colmap-global": ("colmap", colmap.ColmapConfig(mapper="global")),
    "colmap-incremental": ("colmap", colmap.ColmapConfig(mapper="incremental")),
}


def run_backend(name, frames, intrinsics=None):
    """(PoseEstimate or None, failure reason or None, seconds) of one backend on one video."""
    backend, config = BACKENDS[name]
    settings = {"pose_config" if backend == "ours" else "colmap_config": config}
    start = time.perf_counter()
    try:
        est = pose_backends.estimate(frames, intrinsics, backend, **settings)
        return est, None, time.perf_counter() - start
    except poses.PoseEstimationError as e:
        return None, str(e), time.perf_counter() - start


def render_clips(seed, frames, height, width):
    """{move: (frames uint8 [F, H, W, 3], c2w [F, 4, 4], intrinsics [F, 4])} of one location."""
    trajs = {name: traj_lib.build_trajectory(name, {"start": START, "focal_mm": 24.0, **params},
                                             frames, width / height)
             for name, params in MOVES.items()}
    centres = np.concatenate([t.c2w[:, :3, 3] for t in trajs.values()])
    starts = np.stack([t.c2w[0, :3, 3] for t in trajs.values()])
    scene = scene_lib.make_scene(np.random.default_rng(seed), frames, 15.0, centres, starts,
                                 kind="indoor_room", palette="day")
    out = {}
    for name, traj in trajs.items():
        c2w = scene.anchor[None] @ traj.c2w.astype(np.float64)  # [F, 4, 4]
        video, _ = render_lib.render(scene.arrays, c2w.astype(np.float32), traj.intrinsics,
                                     np.arange(frames), height, width, supersample=1)
        out[name] = (video, c2w, traj.intrinsics.astype(np.float64))
    return out


def synthetic_part(args, backends):
    """Rows {size, scene, move, backend, rot_max, rot_mean, trans_mean, failed, seconds}."""
    rows = []
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.split("x"))
        for seed in range(1, args.scenes + 1):
            for move, (frames, c2w_true, intr) in render_clips(seed, args.frames, height, width).items():
                for name in backends:
                    est, reason, secs = run_backend(name, frames, intr)
                    row = {"size": size, "scene": seed, "move": move, "backend": name,
                           "seconds": round(secs, 2), "failed": reason}
                    if est is not None:
                        err = camera.camera_errors(est.c2w, c2w_true)
                        row.update(rot_max=float(np.degrees(err["rot"]).max()),
                                   rot_mean=float(np.degrees(err["rot"]).mean()),
                                   trans_mean=float(err["trans"].mean()))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def synthetic_table(rows, backends):
    """Per size and move: worst / mean rotation error, translation error, or the failure."""
    lines = ["| size | move | " + " | ".join(backends) + " |", "|---|---|" + "---|" * len(backends)]
    keys = sorted({(r["size"], r["move"]) for r in rows}, key=lambda k: (k[0], list(MOVES).index(k[1])))
    for size, move in keys:
        cells = []
        for name in backends:
            sel = [r for r in rows if (r["size"], r["move"], r["backend"]) == (size, move, name)]
            ok = [r for r in sel if r["failed"] is None]
            if not ok:
                cells.append(f"failed {len(sel)}/{len(sel)}")
                continue
            cell = (f"{max(r['rot_max'] for r in ok):.2f} / {np.mean([r['rot_mean'] for r in ok]):.2f}"
                    f" / {np.mean([r['trans_mean'] for r in ok]):.3f}")
            if len(ok) < len(sel):
                cell += f" (failed {len(sel) - len(ok)}/{len(sel)})"
            cells.append(cell)
        lines.append(f"| {size} | {move} | " + " | ".join(cells) + " |")
    lines.append("| all | failed, s/video | " + " | ".join(
        f"{sum(r['failed'] is not None for r in rows if r['backend'] == n)}/"
        f"{sum(r['backend'] == n for r in rows)}, "
        f"{np.mean([r['seconds'] for r in rows if r['backend'] == n]):.2f} s" for n in backends) + " |")
    return "\n".join(lines)


def _sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def real_part(args, backends):
    """Identity pairs and failures on the real references; rows per unique video and backend."""
    names = sorted(n for n in os.listdir(args.real_dir) if n.endswith(".mp4"))
    by_hash = {}
    for n in names:
        by_hash.setdefault(_sha1(os.path.join(args.real_dir, n)), []).append(n)
    groups = list(by_hash.values())[:args.real_videos]
    rows = []
    for group in groups:
        frames, _ = video_lib.read_video(os.path.join(args.real_dir, group[0]), max_frames=args.real_frames)
        first = {}
        for name in backends:
            a, reason, secs = run_backend(name, frames)
            row = {"video": group[0], "duplicates": group[1:], "backend": name, "frames": len(frames),
                   "seconds": round(secs, 2), "failed": reason}
            if a is not None:
                b, reason_b, secs_b = run_backend(name, frames)
                row["seconds_again"] = round(secs_b, 2)
                if b is None:
                    row["failed_again"] = reason_b
                else:
                    row["identity"] = camera.camera_metrics(a.c2w, b.c2w, degrees=True, reduction="mean")
                first[name] = a
            rows.append(row)
            print(json.dumps(row), flush=True)
        if len(first) >= 2:
            (na, ea), (nb, eb) = list(first.items())[:2]
            agree = {"video": group[0], "agreement": [na, nb],
                     **camera.camera_metrics(ea.c2w, eb.c2w, degrees=True, reduction="mean")}
            rows.append(agree)
            print(json.dumps(agree), flush=True)
    return rows, len(names), len(groups)


def real_table(rows, backends):
    """Per backend: failures, identity-pair RotErr / TransErr (per frame, worst video), s/video."""
    lines = ["| backend | failed | identity RotErr (deg/frame, worst) | identity TransErr (worst) | s/video |",
             "|---|---|---|---|---|"]
    for name in backends:
        sel = [r for r in rows if r.get("backend") == name]
        ids = [r["identity"] for r in sel if "identity" in r]
        fails = sum(r["failed"] is not None or "failed_again" in r for r in sel)
        rot = max((m["RotErr"] for m in ids), default=float("nan"))
        trans = max((m["TransErr"] for m in ids), default=float("nan"))
        lines.append(f"| {name} | {fails}/{len(sel)} | {rot:.2e} | {trans:.2e} | "
                     f"{np.mean([r['seconds'] for r in sel]):.1f} |")
    agree = [r for r in rows if "agreement" in r]
    if agree:
        lines.append(f"\n{agree[0]['agreement'][0]} vs {agree[0]['agreement'][1]} on the same videos "
                     f"(per frame): RotErr mean {np.mean([r['RotErr'] for r in agree]):.2f} deg, worst "
                     f"{max(r['RotErr'] for r in agree):.2f}; TransErr mean "
                     f"{np.mean([r['TransErr'] for r in agree]):.3f}")
    return "\n".join(lines)


def back_and_forth(frames, count):
    """`count` frames [count, H, W, 3] played forwards then backwards as often as needed."""
    cycle = np.concatenate([np.arange(len(frames)), np.arange(len(frames) - 2, 0, -1)])
    return frames[np.resize(cycle, count)]


def timing_part(args, backends):
    """Seconds per video against the frame count, all backends on the same frames."""
    video, _ = video_lib.read_video(args.timing_video)
    rows = []
    for count in (int(v) for v in args.timing_frames.split(",")):
        frames = back_and_forth(video, count)
        for name in backends:
            _, reason, secs = run_backend(name, frames)
            row = {"frames": count, "backend": name, "seconds": round(secs, 2), "failed": reason}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def timing_table(rows, backends):
    """Frames x backend seconds, and seconds per frame."""
    counts = sorted({r["frames"] for r in rows})
    lines = ["| frames | " + " | ".join(f"{n} s (s/frame)" for n in backends) + " |",
             "|---|" + "---|" * len(backends)]
    for c in counts:
        cells = []
        for name in backends:
            r = next(r for r in rows if (r["frames"], r["backend"]) == (c, name))
            cells.append(f"{r['seconds']:.1f} ({r['seconds'] / c:.2f})" + (" failed" if r["failed"] else ""))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="synthetic", help="comma list of synthetic, real, timing")
    p.add_argument("--backends", default="ours,colmap-global,colmap-incremental",
                   help=f"comma list of {', '.join(BACKENDS)}")
    p.add_argument("--sizes", default="64x112,128x224")
    p.add_argument("--frames", type=int, default=21, help="frames of the synthetic clips")
    p.add_argument("--scenes", type=int, default=1, help="synthetic locations (seeds 1..N)")
    p.add_argument("--real_dir", help="folder of real camera reference videos")
    p.add_argument("--real_frames", type=int, help="use only the first frames of each real video")
    p.add_argument("--real_videos", type=int, default=100, help="at most this many unique real videos")
    p.add_argument("--timing_video", help="real video for the timing part")
    p.add_argument("--timing_frames", default="17,33,49,81")
    p.add_argument("--out", help="JSON results")
    args = p.parse_args()
    backends = args.backends.split(",")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        p.error(f"unknown backends {unknown}; choose from {list(BACKENDS)}")
    results = {"args": vars(args)}
    for part in args.parts.split(","):
        if part == "synthetic":
            results["synthetic"] = synthetic_part(args, backends)
            print("\nsynthetic clips, true intrinsics; per-frame rotation error worst / mean (deg) / "
                  f"mean translation error, {args.frames} frames\n" + synthetic_table(results["synthetic"], backends))
        elif part == "real":
            if not args.real_dir or not os.path.isdir(args.real_dir):
                p.error(f"--real_dir must be a folder, got {args.real_dir}")
            rows, num, unique = real_part(args, backends)
            results["real"] = rows
            print(f"\nreal references: {num} videos, {unique} unique by content (the rest are "
                  "byte-identical duplicates: equal poses by the content cache)\n" + real_table(rows, backends))
        elif part == "timing":
            if not args.timing_video or not os.path.isfile(args.timing_video):
                p.error(f"--timing_video must be a video file, got {args.timing_video}")
            results["timing"] = timing_part(args, backends)
            print("\nseconds per video against frames\n" + timing_table(results["timing"], backends))
        else:
            p.error(f"unknown part {part!r}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

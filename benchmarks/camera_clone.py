"""Benchmark: camera cloning scored on a held-out synthetic split whose camera poses are known.

Each triplet (target, camera reference, content reference) of the split is scored with the same
pipeline as `python -m camclone_jax.evaluate` (poses estimated from the videos, CamI2V metrics),
but against the TRUE poses of the target (the camera reference's trajectory, replayed at the
content reference's location). Rows of the table, all from the same run:

  generated      videos of a model (optional): --generated DIR holding one video per triplet,
                 named by the triplet's record index (`00007.mp4` or `7.mp4`), e.g. written by
                 `python -m camclone_jax.sample --jobs JOBS --out_dir DIR` from the jobs file
                 that --write_jobs produces; missing videos are counted as failures
  copy content   baseline (a): the content reference returned unchanged (no camera control)
  copy camera    baseline (b): the camera reference returned unchanged (perfect camera cloning
                 of the wrong scene: its camera scores are the floor a model can reach, its
                 view-consistency scores the ceiling it must beat)
  target         the ground-truth target video itself: the pose estimator's own error

  python benchmarks/camera_clone.py [--split DIR] [--num_groups 1] [--frames 25] \
      [--height 128] [--width 224] [--seed 1000] [--max_triplets 12] [--generated DIR] \
      [--write_jobs JOBS.csv] [--fvd] [--out report.json]

Without --split a split is rendered (`camclone_jax.data.synthetic`, seed 1000 by default: the
training sets use other seeds, so its scenes and trajectories are held out) into --cache. Prints
the table shaped like the paper's Table 1 and a per-trajectory-kind breakdown of the per-frame
rotation error (degrees).
"""
import argparse
import csv
import glob
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from camclone_jax.data import records  # noqa: E402
from camclone_jax.data.synthetic import trajectories as traj_lib  # noqa: E402
from camclone_jax.data.synthetic import writer  # noqa: E402
from camclone_jax.eval import pose_backends, report  # noqa: E402

METHODS = (("copy content", "content_ref"), ("copy camera", "camera_ref"), ("target", "target"))


def make_split(cache, num_groups, frames, height, width, seed):
    """Renders (or reuses) the held-out synthetic split; returns its folder."""
    out = os.path.join(cache, f"split-g{num_groups}-f{frames}-{height}x{width}-s{seed}")
    writer.generate_dataset(out, writer.GeneratorConfig(
        num_groups=num_groups, frames=frames, height=height, width=width, seed=seed,
        triplets_per_target=1, preview_triplets=0), progress=True)
    return out


def read_triplets(split, max_triplets):
    """Decoded triplet records in index order (shards sorted by name), at most max_triplets."""
    paths = sorted(glob.glob(os.path.join(split, "records", "*.array_record")))
    if not paths:
        raise FileNotFoundError(f"no records/*.array_record in {split}: not a synthetic split")
    out = []
    for path in paths:
        for data in records.read_records(path):
            rec = records.decode_triplet(data)
            if rec["kind"] != "mp4" or rec["target"].get("poses") is None:
                raise ValueError(f"{path}: the benchmark needs mp4 records with target poses")
            out.append(rec)
            if len(out) == max_triplets:
                return out
    return out


def write_true_poses(rec, path, fps):
    """path: the triplet's true target poses (the camera reference's trajectory at the content's
    location) as a RealEstate10K file, with intrinsics."""
    target = rec["target"]
    stamps = np.round(np.arange(len(target["poses"])) * 1e6 / fps)
    rows = traj_lib.to_realestate10k(target["poses"], target["intrinsics"], stamps)
    with open(path, "w") as f:
        f.write(traj_lib.format_realestate10k(target.get("path", "target"), rows))


def materialise(triplets, work, fps):
    """Writes refs/camera/IDX.txt (true target poses + intrinsics), refs/content/IDX.mp4 and one
    folder of IDX.mp4 per method; returns {method: folder}."""
    dirs = {name: os.path.join(work, name.replace(" ", "_")) for name, _ in METHODS}
    cam_dir, con_dir = os.path.join(work, "refs", "camera"), os.path.join(work, "refs", "content")
    for d in list(dirs.values()) + [cam_dir, con_dir]:
        os.makedirs(d, exist_ok=True)
    for i, rec in enumerate(triplets):
        write_true_poses(rec, os.path.join(cam_dir, f"{i:05d}.txt"), fps)
        with open(os.path.join(con_dir, f"{i:05d}.mp4"), "wb") as f:
            f.write(rec["content_ref"]["video"])
        for name, key in METHODS:
            with open(os.path.join(dirs[name], f"{i:05d}.mp4"), "wb") as f:
                f.write(rec[key]["video"])
    return dirs, cam_dir, con_dir


def link_generated(generated, count, work):
    """Links the generated videos named by triplet index into work/generated/IDX.mp4; returns
    (folder, indices without a video)."""
    out = os.path.join(work, "generated")
    os.makedirs(out, exist_ok=True)
    found = {}
    for stem, path in report.list_files(generated, report.VIDEO_SUFFIXES).items():
        if stem.isdigit() and int(stem) < count:
            found[int(stem)] = path
    for i, path in found.items():
        os.symlink(os.path.abspath(path), os.path.join(out, f"{i:05d}{os.path.splitext(path)[1]}"))
    return out, sorted(set(range(count)) - set(found))


def write_jobs(path, split, triplets, out_dir):
    """A jobs CSV for `python -m camclone_jax.sample --jobs` (V2V), one row per triplet."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["camera_ref", "content_ref", "prompt", "out"])
        for i, rec in enumerate(triplets):
            w.writerow([os.path.join(split, rec["camera_ref"]["path"]),
                        os.path.join(split, rec["content_ref"]["path"]), rec["caption"],
                        os.path.join(out_dir, f"{i:05d}.mp4")])


def per_kind_table(results, triplets):
    """Markdown table: mean per-frame rotation error (deg) by trajectory kind and method."""
    kinds = sorted({rec["target"].get("trajectory_name", "?") for rec in triplets})
    head = "| Trajectory | n | " + " | ".join(r["name"] for r in results) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(results)]
    for kind in kinds:
        idx = {f"{i:05d}" for i, rec in enumerate(triplets) if rec["target"].get("trajectory_name") == kind}
        cells = []
        for r in results:
            vals = [e["RotErr"] for e in r["per_video"] if e["name"] in idx]
            cells.append(f"{np.mean(vals):.2f}" if vals else "-")
        lines.append(f"| {kind} | {len(idx)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", help="a synthetic dataset folder (default: render one into --cache)")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "camclone_eval_split"))
    p.add_argument("--num_groups", type=int, default=1)
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=224)
    p.add_argument("--seed", type=int, default=1000, help="split seed (held out from training)")
    p.add_argument("--max_triplets", type=int, default=12)
    p.add_argument("--generated", help="folder of generated videos named by triplet index")
    p.add_argument("--write_jobs", help="write a sampling jobs CSV for camclone_jax.sample")
    p.add_argument("--fvd", action="store_true", help="also FVD-V against the content references")
    p.add_argument("--out", help="write all reports as JSON here")
    p.add_argument("--poses", choices=pose_backends.BACKENDS, default=pose_backends.DEFAULT_BACKEND,
                   help="camera-pose backend (as evaluate's --poses)")
    args = p.parse_args(argv)
    start = time.time()
    split = args.split or make_split(args.cache, args.num_groups, args.frames, args.height,
                                     args.width, args.seed)
    triplets = read_triplets(split, args.max_triplets)
    if args.write_jobs:
        write_jobs(args.write_jobs, os.path.abspath(split), triplets,
                   os.path.abspath(args.generated or "generated"))
        print(f"jobs: {args.write_jobs} ({len(triplets)} triplets)")
    # per-frame means in degrees: readable across clip lengths (the sums are in the JSON too)
    options = report.EvalOptions(fvd=args.fvd, degrees=True, reduction="mean",
                                 pose_backend=args.poses)
    results = []
    with tempfile.TemporaryDirectory() as work:
        dirs, cam_dir, con_dir = materialise(triplets, work, float(triplets[0]["fps"]))
        rows = list(dirs.items())
        missing = []
        if args.generated:
            gen_dir, missing = link_generated(args.generated, len(triplets), work)
            rows.insert(0, ("generated", gen_dir))
        for name, folder in rows:
            pairs = report.pairs_by_name(folder, cam_dir, con_dir) if os.listdir(folder) else []
            result = report.evaluate(pairs, options, name=name)
            if name == "generated":
                result["failed"] += [{"name": f"{i:05d}", "stage": "generated", "path": None,
                                      "reason": "no generated video for this triplet"} for i in missing]
                result["num_failed"] += len(missing)
                result["num_pairs"] += len(missing)
            results.append(result)
            print(f"{name}: {result['num_evaluated']} evaluated, {result['num_failed']} failed "
                  f"({time.time() - start:.0f} s)", flush=True)
    print(f"\nCamera clone benchmark: {len(triplets)} held-out synthetic triplets "
          f"({triplets[0]['num_frames']} frames, {triplets[0]['height']}x{triplets[0]['width']}); "
          "RotErr in degrees per frame, TransErr and CamMC per frame, against the true poses\n")
    print(report.markdown_table(results))
    print("\nPer-frame rotation error (deg) by trajectory kind:\n")
    print(per_kind_table(results, triplets))
    for r in results:
        for f in r["failed"]:
            print(f"failed [{r['name']}] {f['name']} ({f['stage']}): {f['reason']}")
    if args.out:
        report.write_report(args.out, {"split": os.path.abspath(split), "triplets": len(triplets),
                                       "reports": results})
        print(f"report: {args.out}")
    return results


if __name__ == "__main__":
    main()

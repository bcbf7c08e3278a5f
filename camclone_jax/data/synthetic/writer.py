"""Writes a synthetic Camera Clone Dataset folder (records, mp4s + CSV, poses, preview).

Layout of DIR (paths in the CSV and JSON files are relative to DIR):
  metadata.json            generator config, counts, versions, `complete` flag (written last)
  CamCloneDataset.csv      video_path,caption,ref_video_path,content_video_path (one row per
                           triplet; the public release's columns: target, camera ref, content ref)
  videos/group_G/location_L/camera_K.mp4        H.264 videos, K = trajectory index in the group
  poses/group_G/location_L/camera_K.txt         RealEstate10K pose files (header = video path)
  videos.json              per video: ids, caption, scene kind/palette, trajectory name/params
  records/triplets-SSSSS-of-NNNNN.array_record  triplet records (camclone_jax.data.records)
  preview.mp4              a few triplets, one per row: camera ref | content ref | target

Every file is written atomically (temporary name, then rename). Records are sharded by group
(shard s holds a contiguous block of groups, its triplets shuffled with the seed), and a shard
is written only after all its videos, so an interrupted run resumes shard by shard when re-run
with the same arguments. A complete DIR with the same arguments is left untouched; a DIR made
with other arguments, or a non-empty folder that is not a dataset, is refused.
"""
import concurrent.futures
import csv
import dataclasses
import io
import json
import math
import os
import time

import numpy as np
import tqdm

import camclone_jax
from camclone_jax.data import records, video
from camclone_jax.data.synthetic import dataset as ds
from camclone_jax.data.synthetic import trajectories as traj_lib
from camclone_jax.utils import write_atomic

LAYOUT_VERSION = 1
CSV_NAME = "CamCloneDataset.csv"
CSV_COLUMNS = ("video_path", "caption", "ref_video_path", "content_video_path")
POSE_CONVENTION = ("c2w 4x4, OpenCV camera axes (x right, y down, z forward), world +y down "
                   "(ground y = 0); intrinsics normalised fx, fy, cx, cy")


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Arguments of a dataset; equal configs give byte-identical records and videos."""
    num_groups: int = 3
    frames: int = 17
    height: int = 64
    width: int = 112
    seed: int = 0
    fps: float = 15.0
    triplets_per_target: int = 3
    num_shards: int = 0  # 0: one shard per 4 groups
    supersample: int = 2
    crf: int = 17
    preview_triplets: int = 4
    # the world (defaults: the paper's); configs/clone_3d.py narrows it to what a tiny model
    # learns on a CPU: "pan,tilt,roll" at constant speed in strongly textured scenes
    moves: str = ""  # comma-separated basic moves to draw from ("": the paper's mix)
    max_angle: float = 0.0  # pan / tilt angle cap, degrees (0: the paper's 75)
    max_roll: float = 0.0  # roll angle cap, degrees (0: the paper's 340)
    constant_speed: bool = False  # no ease profiles
    scenes: str = "paper"  # or "textured" (dataset.SCENE_STYLES)
    lens_mm: str = ""  # comma-separated focal lengths to draw from ("": the paper's 18,24,35,50)

    def lenses(self) -> tuple:
        """The focal lengths (mm, 36 mm sensor) cameras draw from; raises ValueError if unreadable."""
        if not self.lens_mm.strip():
            return traj_lib.TrajectoryConfig().focal_mm
        try:
            lenses = tuple(float(x) for x in self.lens_mm.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"lens_mm must be comma-separated numbers, got {self.lens_mm!r}") from None
        if not lenses or min(lenses) <= 0:
            raise ValueError(f"lens_mm must name positive focal lengths, got {self.lens_mm!r}")
        return lenses

    def trajectory_config(self) -> traj_lib.TrajectoryConfig:
        """The trajectory rules of this world (a capped range starts at 5 deg, 10 for rolls)."""
        default = traj_lib.TrajectoryConfig()
        moves = tuple(m.strip() for m in self.moves.split(",") if m.strip())
        angle = (min(5.0, self.max_angle), self.max_angle) if self.max_angle else default.angle_deg
        roll = (min(10.0, self.max_roll), self.max_roll) if self.max_roll else default.roll_deg
        return dataclasses.replace(default, moves=moves, constant_speed=self.constant_speed,
                                   angle_deg=angle, roll_deg=roll, focal_mm=self.lenses())

    def validate(self):
        """Raises ValueError naming the first bad argument."""
        checks = [
            (self.num_groups >= 1, f"num_groups must be >= 1, got {self.num_groups}"),
            (self.frames >= 2, f"frames must be >= 2, got {self.frames}"),
            (self.height >= 16 and self.height % 2 == 0,
             f"height must be even and >= 16, got {self.height}"),
            (self.width >= 16 and self.width % 2 == 0, f"width must be even and >= 16, got {self.width}"),
            (self.fps > 0, f"fps must be positive, got {self.fps}"),
            (1 <= self.triplets_per_target <= ds.MAX_TRIPLETS_PER_TARGET,
             f"triplets_per_target must be in [1, {ds.MAX_TRIPLETS_PER_TARGET}], "
             f"got {self.triplets_per_target}"),
            (0 <= self.num_shards <= self.num_groups,
             f"num_shards must be in [0, num_groups={self.num_groups}], got {self.num_shards}"),
            (1 <= self.supersample <= 4, f"supersample must be in [1, 4], got {self.supersample}"),
            (0 <= self.crf <= 51, f"crf must be in [0, 51], got {self.crf}"),
            (self.preview_triplets >= 0, f"preview_triplets must be >= 0, got {self.preview_triplets}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.max_angle >= 0 and self.max_roll >= 0,
             f"max_angle and max_roll must be >= 0, got {self.max_angle}, {self.max_roll}"),
            (self.scenes in ds.SCENE_STYLES,
             f"scenes must be one of {ds.SCENE_STYLES}, got {self.scenes!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.trajectory_config()  # names an unknown move or an unreadable lens

    def shards(self):
        """[(first_group, end_group)] per shard."""
        n = self.num_shards or math.ceil(self.num_groups / 4)
        return [(s * self.num_groups // n, (s + 1) * self.num_groups // n) for s in range(n)]


def _prepare_dir(out, config):
    """Returns the existing metadata if DIR already holds this dataset, else None (start or
    resume). Raises if DIR holds something else."""
    meta_path = os.path.join(out, "metadata.json")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(meta_path):
            raise FileExistsError(f"{out} is not empty and holds no metadata.json: not a dataset made "
                                  "by this generator; choose another --out")
        with open(meta_path) as f:
            meta = json.load(f)
        wanted = dataclasses.asdict(config)
        # a field added since the dataset was made reads as its default (lens_mm: the paper's)
        have = {**dataclasses.asdict(GeneratorConfig()), **meta.get("config", {})}
        if have != wanted or meta.get("layout_version") != LAYOUT_VERSION:
            diff = sorted(k for k in wanted if have.get(k) != wanted[k])
            raise ValueError(f"{out} holds a dataset made with other arguments (differing: {diff}); "
                             "choose another --out or delete it")
        return meta if meta.get("complete") else None
    os.makedirs(out, exist_ok=True)
    return None


def _metadata(config, complete, counts=None, seconds=None):
    return {"generator": "camclone_jax.data.synthetic", "package_version": camclone_jax.__version__,
            "layout_version": LAYOUT_VERSION, "record_schema_version": records.SCHEMA_VERSION,
            "config": dataclasses.asdict(config), "complete": complete, "counts": counts or {},
            "pose_convention": POSE_CONVENTION, "csv": CSV_NAME,
            "preview_columns": ["camera_ref", "content_ref", "target"],
            "generation_seconds": seconds}


def _video_entry(plan, key, config):
    traj, scene = plan.trajectories[key.trajectory], plan.scenes[key.location]
    return dict(key.ids(), video_path=key.relpath("videos", "mp4"), pose_path=key.relpath("poses", "txt"),
                caption=scene.caption, scene_kind=scene.description["kind"],
                palette=scene.description["palette"],
                animation=scene.description.get("subject", {}).get("animation", "none"),
                trajectory_name=traj.name, trajectory_params=traj.params,
                camera_description=traj.describe(), num_frames=config.frames, fps=config.fps)


def _write_location(out, plan, loc, frames, config, pool):
    """Queues the mp4 encodes of one location's 10 videos and writes their pose files."""
    c2w = ds.world_poses(plan, loc)  # [10, F, 4, 4]
    stamps = np.round(np.arange(config.frames) * 1e6 / config.fps)  # [F] microseconds
    futures = []
    for k, traj in enumerate(plan.trajectories):
        key = ds.VideoKey(plan.group, loc, k)
        path = os.path.join(out, key.relpath("videos", "mp4"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        futures.append(pool.submit(video.write_mp4, path, frames[k], config.fps, config.crf))
        pose_path = os.path.join(out, key.relpath("poses", "txt"))
        os.makedirs(os.path.dirname(pose_path), exist_ok=True)
        rows = traj_lib.to_realestate10k(c2w[k], traj.intrinsics, stamps)
        write_atomic(pose_path, traj_lib.format_realestate10k(key.relpath("videos", "mp4"), rows))
    return futures


def _record(plan, triplet, config, mp4s, first_frames, c2w):
    """Encoded record of one triplet; mp4s maps VideoKey -> file bytes."""
    def part(key):
        traj = plan.trajectories[key.trajectory]
        return dict(key.ids(), video=mp4s[key], poses=c2w[key.location][key.trajectory],
                    intrinsics=traj.intrinsics, caption=plan.scenes[key.location].caption,
                    path=key.relpath("videos", "mp4"), trajectory_name=traj.name,
                    camera_description=traj.describe())
    t = triplet.target
    return records.encode_triplet({
        "kind": "mp4", "caption": plan.scenes[t.location].caption, "fps": float(config.fps),
        "height": config.height, "width": config.width, "num_frames": config.frames,
        "first_frame": first_frames[(t.location, t.trajectory)], "group_id": plan.group,
        "target": part(t), "camera_ref": part(triplet.camera_ref),
        "content_ref": part(triplet.content_ref)})


def _write_preview(out, triplets, config):
    """preview.mp4: `preview_triplets` random triplets of group 0, one per row:
    camera ref | content ref | target."""
    count = min(config.preview_triplets, len(triplets))
    if count == 0:
        return
    picks = np.sort(np.random.default_rng([config.seed, 4]).choice(len(triplets), count, replace=False))
    gap, rows = 4, []
    for trip in [triplets[i] for i in picks]:
        vids = [video.read_video(os.path.join(out, k.relpath("videos", "mp4")))[0]
                for k in (trip.camera_ref, trip.content_ref, trip.target)]  # 3 x [F, H, W, 3]
        pad = np.full((config.frames, config.height, gap, 3), 255, np.uint8)
        rows.append(np.concatenate([vids[0], pad, vids[1], pad, vids[2]], axis=2))
        rows.append(np.full((config.frames, gap) + rows[-1].shape[2:], 255, np.uint8))
    grid = np.concatenate(rows[:-1], axis=1)  # [F, count H + gaps, 3 W + gaps, 3]
    video.write_mp4(os.path.join(out, "preview.mp4"), grid, config.fps, config.crf)


def generate_dataset(out, config, progress=True):
    """Renders and writes the dataset described by `config` into folder `out`; returns the
    metadata dict. See the module docstring for the layout and the re-run behaviour."""
    config.validate()
    done = _prepare_dir(out, config)
    if done is not None:
        if progress:
            print(f"{out} already holds this complete dataset; nothing to do")
        return done
    start = time.time()
    write_atomic(os.path.join(out, "metadata.json"), json.dumps(_metadata(config, False), indent=1))
    shards = config.shards()
    plans, all_triplets, entries = {}, [], []
    for g in range(config.num_groups):
        plans[g] = ds.plan_group(g, config.seed, config.frames, config.height, config.width,
                                 config.fps, config.trajectory_config(), config.scenes)
        all_triplets += ds.group_triplets(g, config.triplets_per_target, config.seed)
        entries += [_video_entry(plans[g], ds.VideoKey(g, loc, k), config)
                    for loc in range(ds.NUM_LOCATIONS) for k in range(ds.NUM_TRAJECTORIES)]
    per_group = ds.NUM_LOCATIONS * ds.NUM_TRAJECTORIES
    bar = tqdm.tqdm(total=config.num_groups * per_group, unit="video", disable=not progress,
                    desc="rendering")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for s, (g0, g1) in enumerate(shards):
            shard_path = os.path.join(out, "records", f"triplets-{s:05d}-of-{len(shards):05d}.array_record")
            if os.path.isfile(shard_path):  # finished by an interrupted earlier run
                bar.update((g1 - g0) * per_group)
                continue
            shard_records = []
            for g in range(g0, g1):
                plan, futures, first_frames = plans[g], [], {}
                for loc in range(ds.NUM_LOCATIONS):
                    frames = ds.render_location(plan, loc, config.height, config.width, config.supersample)
                    first_frames.update(
                        {(loc, k): video.encode_png(frames[k, 0]) for k in range(len(frames))})
                    futures += _write_location(out, plan, loc, frames, config, pool)
                    bar.update(ds.NUM_TRAJECTORIES)
                for fut in futures:
                    fut.result()
                c2w = [ds.world_poses(plan, loc) for loc in range(ds.NUM_LOCATIONS)]
                mp4s = {}
                for loc in range(ds.NUM_LOCATIONS):
                    for k in range(ds.NUM_TRAJECTORIES):
                        key = ds.VideoKey(g, loc, k)
                        with open(os.path.join(out, key.relpath("videos", "mp4")), "rb") as f:
                            mp4s[key] = f.read()
                shard_records += [_record(plan, t, config, mp4s, first_frames, c2w)
                                  for t in all_triplets if t.target.group == g]
            order = np.random.default_rng([config.seed, 3, s]).permutation(len(shard_records))
            records.write_records(shard_path, (shard_records[i] for i in order))
    bar.close()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for t in all_triplets:
        caption = plans[t.target.group].scenes[t.target.location].caption
        writer.writerow([t.target.relpath("videos", "mp4"), caption,
                         t.camera_ref.relpath("videos", "mp4"), t.content_ref.relpath("videos", "mp4")])
    write_atomic(os.path.join(out, CSV_NAME), buf.getvalue())
    write_atomic(os.path.join(out, "videos.json"), json.dumps(entries, indent=1))
    _write_preview(out, [t for t in all_triplets if t.target.group == 0], config)
    counts = {"groups": config.num_groups, "locations": config.num_groups * ds.NUM_LOCATIONS,
              "trajectories": config.num_groups * ds.NUM_TRAJECTORIES, "videos": len(entries),
              "triplets": len(all_triplets), "shards": len(shards)}
    meta = _metadata(config, True, counts, round(time.time() - start, 2))
    write_atomic(os.path.join(out, "metadata.json"), json.dumps(meta, indent=1))
    return meta

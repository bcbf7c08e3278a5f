"""Evaluation runs: pairing generated videos with references, per-video metrics, the report and its table.

Pairing (`make_pairs`):
  * by file name: every video in the generated folder is paired with the camera reference of
    the same stem in the camera-reference folder (a pose file `stem.txt` / `stem.npz` when there
    is one, else a video `stem.mp4`, ...) and, optionally, the content reference of that stem;
  * by CSV: columns `generated` (relative to the generated folder) and `camera_ref`, optionally
    `content_ref` (relative to the CSV's folder); a camera_ref may be a video or a pose file.
Camera accuracy compares the generated video's estimated poses with the camera reference's
poses: read from its pose file (ground truth or an external estimator such as MegaSaM), else
estimated from its video with the same estimator (`options.pose_backend`: "colmap" or "ours", see
`pose_backends.py`). Intrinsics for the estimator: the ones given explicitly, else those of the
camera reference's pose file, else assumed (`poses.default_intrinsics`; the entry's
`assumed_intrinsics` says so). Poses are cached by file content, so a video scored against a
byte-identical copy of itself scores exactly 0.

A video that cannot be decoded or whose poses cannot be estimated is never dropped silently:
it is listed in the report's `failed` entries with the stage and the reason, and counted; its
Dynamic Degree is still measured (a black or frozen output that defeats the pose estimator is a
non-dynamic video, not a missing one). Running many videos (parallel workers, resuming from
per-video results, the progress bar) is `batch.py`'s.
"""
import dataclasses
import hashlib
import json
import os

import numpy as np

from camclone_jax import errors
from camclone_jax.data import video as video_lib
from camclone_jax.eval import (batch, camera, colmap, consistency, fvd, motion, pose_backends,
                               poses)
from camclone_jax.utils import write_atomic

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
COLUMNS = (  # (summary key, header): Table 1's camera/quality columns, then Table 2's
    ("FVD", "FVD ↓"), ("RotErr", "RotErr ↓"), ("TransErr", "TransErr ↓"), ("CamMC", "CamMC ↓"),
    ("DynDeg", "Dyn. Deg. ↑"), ("SubCons", "Sub. Cons. ↑"), ("BgCons", "Bg. Cons. ↑"),
    ("MatPix", "Mat.Pix.(SIFT) ↑"), ("FVD-V", "FVD-V ↓"), ("CLIP-V", "CLIP-V ↑"))
PER_VIDEO_MEANS = ("Motion", "SubCons", "BgCons", "MatPix", "CLIP-V")  # summary: mean over videos


@dataclasses.dataclass(frozen=True)
class Pair:
    """One generated video and its references (paths; None where not given)."""
    name: str
    generated: str
    camera_ref: str
    content_ref: str = None


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How to evaluate (see `camclone_jax.evaluate` for the command-line flags).

    intrinsics: normalised (fx, fy, cx, cy) for every video, or None (see the module docstring).
    fov_deg: horizontal FOV assumed when no intrinsics are known.
    degrees / reduction: RotErr in degrees; "sum" over frames (the papers) or "mean".
    resample: compare trajectories of different lengths at evenly spaced frames (else such a
      pair fails with a clear reason).
    fvd: compute FVD / FVD-V; fvd_refs: folder of real videos for FVD; i3d_weights: see fvd.py;
      i3d_endpoint / i3d_size / i3d_frames: "logits" at 224 on 16 frames (standard FVD), or
      "pool" at any size (quick checks and tests; not comparable with published FVDs).
    clip_weights: local CLIP vision weights for CLIP-V and Bg. Cons. (None: columns left out).
    dino_weights: a local transformers ViTModel directory of DINO (facebook/dino-vitb16) for
      Sub. Cons. (None: column left out). Sub. Cons. and Bg. Cons. are VBench's temporal
      consistency of each generated video alone (see eval/consistency.py), x 100.
    dynamic_degree: VBench's Dynamic Degree of each generated video (eval/motion.py): per video
      `dynamic` (bool), `Motion` (mean top-5% flow magnitude, pixels) and `motion_pairs_above`;
      summary `DynDeg` = percentage of dynamic videos (as the paper prints it) and mean `Motion`.
      The flow: RAFT with `raft_weights`, else OpenCV DIS (no weights, ~10 ms per 17-frame
      64x112 video, not on VBench's scale).
    raft_weights: a local torchvision RAFT state dict (.pth) for the Dynamic Degree's flow;
      torchvision's Raft_Large_Weights.C_T_V1 (raft-things) with 20 iterations is VBench's
      setting. None: DIS.
    save_poses: folder to write the estimated poses into (our .npz, one per video).
    pose_backend: "colmap" or "ours" (`pose_backends.py`); pose_config /
      colmap_config: their settings.
    """
    intrinsics: tuple = None
    fov_deg: float = poses.DEFAULT_FOV_DEG
    degrees: bool = False
    reduction: str = "sum"
    resample: bool = False
    max_frames: int = None
    fvd: bool = True
    fvd_refs: str = None
    i3d_weights: str = None
    i3d_endpoint: str = "logits"
    i3d_size: int = 224
    i3d_frames: int = 16
    clip_weights: str = None
    dino_weights: str = None
    matched_pixels: bool = True
    dynamic_degree: bool = True
    raft_weights: str = None
    save_poses: str = None
    pose_backend: str = pose_backends.DEFAULT_BACKEND
    pose_config: poses.PoseConfig = poses.PoseConfig()
    colmap_config: colmap.ColmapConfig = colmap.ColmapConfig()


# ----------------------------------------------------------------------------- pairing
def list_files(folder, suffixes):
    """{stem: path} of the files in `folder` with one of `suffixes` (sorted by stem)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder not found: {folder}")
    out = {}
    for entry in sorted(os.listdir(folder)):
        stem, suffix = os.path.splitext(entry)
        if suffix.lower() in suffixes and not entry.startswith("."):
            out.setdefault(stem, os.path.join(folder, entry))
    return out


def _reference_in(folder, stem):
    """Pose file (preferred) or video of `stem` in folder, or None."""
    for suffixes in (camera.POSE_SUFFIXES, VIDEO_SUFFIXES):
        for suffix in suffixes:
            path = os.path.join(folder, stem + suffix)
            if os.path.isfile(path):
                return path
    return None


def pairs_by_name(generated_dir, camera_dir, content_dir=None):
    """Pairs by file stem; raises ValueError naming the generated videos without a reference."""
    gen = list_files(generated_dir, VIDEO_SUFFIXES)
    if not gen:
        raise ValueError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {generated_dir}")
    if not os.path.isdir(camera_dir):
        raise FileNotFoundError(f"camera reference folder not found: {camera_dir}")
    if content_dir is not None and not os.path.isdir(content_dir):
        raise FileNotFoundError(f"content reference folder not found: {content_dir}")
    pairs, missing = [], []
    for stem, path in gen.items():
        cam = _reference_in(camera_dir, stem)
        con = None if content_dir is None else _reference_in(content_dir, stem)
        if cam is None or (content_dir is not None and (con is None or not con.endswith(VIDEO_SUFFIXES))):
            missing.append(stem)
            continue
        pairs.append(Pair(stem, path, cam, con))
    if missing:
        raise ValueError(f"{len(missing)} generated video(s) have no camera/content reference of the "
                         f"same name: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    return pairs


def pairs_from_csv(csv_path, generated_dir):
    """Pairs from a CSV with columns generated, camera_ref[, content_ref] (see module docstring)."""
    base = os.path.dirname(os.path.abspath(csv_path))
    rows = errors.read_csv(csv_path, "pairing CSV", ("generated", "camera_ref", "content_ref"),
                           required=("generated", "camera_ref"))
    if not rows:
        raise ValueError(f"{csv_path}: no pairs below its header")
    lines = {}
    for line, row in enumerate(rows, start=2):
        lines.setdefault(row["generated"], []).append(line)
    twice = {name: ns for name, ns in lines.items() if len(ns) > 1}
    if twice:
        raise ValueError(f"{csv_path}: a generated video is listed more than once: " + "; ".join(
            f"{name} on lines {', '.join(map(str, ns))}" for name, ns in twice.items()))
    pairs = []
    for line, row in enumerate(rows, start=2):
        gen = os.path.join(generated_dir, row["generated"])
        cam = os.path.join(base, row["camera_ref"])
        con = os.path.join(base, row["content_ref"]) if row.get("content_ref") else None
        for what, path in (("generated video", gen), ("camera reference", cam), ("content reference", con)):
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"{csv_path}:{line}: {what} not found: {path}")
        pairs.append(Pair(os.path.splitext(row["generated"])[0], gen, cam, con))
    return pairs


def make_pairs(generated, camera_refs, content_refs=None):
    """Pairs from a camera-reference folder (by name) or CSV."""
    if str(camera_refs).lower().endswith(".csv"):
        if content_refs is not None:
            raise ValueError("with a pairing CSV, give content references in its content_ref column")
        return pairs_from_csv(camera_refs, generated)
    return pairs_by_name(generated, camera_refs, content_refs)


# ----------------------------------------------------------------------------- per video
class _Evaluator:
    """Per-pair evaluation with caches (a reference may serve several generated videos)."""

    def __init__(self, options):
        self.options = options
        self.videos, self.ref_poses, self.pose_cache = {}, {}, {}
        self.i3d = self.clip = self.dino = self.flow = None
        if options.fvd:
            self.i3d = fvd.I3DFeatures(weights=options.i3d_weights, endpoint=options.i3d_endpoint,
                                       size=options.i3d_size, num_frames=options.i3d_frames)
        if options.clip_weights:
            self.clip = consistency.ClipEmbedder(options.clip_weights)
        if options.dino_weights:
            self.dino = consistency.DinoEmbedder(options.dino_weights)
        if options.dynamic_degree and options.raft_weights:
            self.flow = motion.RaftFlow(options.raft_weights)

    def video(self, path):
        """Frames uint8 [F, H, W, 3] of a video, decoded once; its frame rate: `self.fps(path)`."""
        if path not in self.videos:
            self.videos.clear()  # keep one video per path at a time: bounded memory
            self.videos[path] = video_lib.read_video(path, max_frames=self.options.max_frames)
        return self.videos[path][0]

    def fps(self, path):
        self.video(path)
        return self.videos[path][1]

    def intrinsics_for(self, camera_ref):
        if self.options.intrinsics is not None:
            return np.asarray(self.options.intrinsics, np.float64)
        if camera_ref.lower().endswith(camera.POSE_SUFFIXES):
            _, intr = camera.read_poses(camera_ref)
            if intr is not None:
                return intr[0]
        return None

    def estimate(self, path, intrinsics):
        """PoseEstimate of a video (cached by file content and intrinsics)."""
        key = (_file_sha1(path), None if intrinsics is None else np.asarray(intrinsics).tobytes())
        if key not in self.pose_cache:
            self.pose_cache[key] = pose_backends.estimate(
                self.video(path), intrinsics, self.options.pose_backend, self.options.pose_config,
                self.options.colmap_config, fov_deg=self.options.fov_deg)
        est = self.pose_cache[key]
        if self.options.save_poses:
            os.makedirs(self.options.save_poses, exist_ok=True)
            stem = os.path.splitext(os.path.basename(path))[0]
            camera.save_poses_npz(os.path.join(self.options.save_poses, stem + ".npz"), est.c2w,
                                  est.intrinsics)
        return est

    def reference(self, path, intrinsics):
        """(c2w, diagnostics) of a camera reference (pose file or video)."""
        if path not in self.ref_poses:
            if path.lower().endswith(camera.POSE_SUFFIXES):
                self.ref_poses[path] = (camera.read_poses(path)[0], {"source": "pose file"})
            else:
                est = self.estimate(path, intrinsics)
                self.ref_poses[path] = (est.c2w, dict(est.summary(), source="estimated"))
        return self.ref_poses[path]

    def camera_metrics(self, pair, entry):
        intr = self.intrinsics_for(pair.camera_ref)
        entry["stage"] = "camera_ref"
        ref_c2w, entry["camera_ref_poses"] = self.reference(pair.camera_ref, intr)
        entry["stage"] = "generated"
        est = self.estimate(pair.generated, intr)
        entry["generated_poses"] = est.summary()
        gen_c2w = est.c2w
        if len(gen_c2w) != len(ref_c2w):
            if not self.options.resample:
                raise ValueError(f"frame counts differ: generated {len(gen_c2w)}, camera reference "
                                 f"{len(ref_c2w)}; pass --resample_poses to compare at evenly "
                                 "spaced frames")
            ref_c2w = camera.resample_poses(ref_c2w, len(gen_c2w))
            entry["resampled_reference"] = True
        entry["stage"] = "metrics"
        entry.update(camera.camera_metrics(gen_c2w, ref_c2w, self.options.degrees, self.options.reduction))
        entry["frames"] = len(gen_c2w)

    def dynamic_metrics(self, pair, entry):
        """VBench's Dynamic Degree of the generated video into entry (when enabled)."""
        if self.options.dynamic_degree:
            gen = self.video(pair.generated)
            dyn = motion.dynamic_degree(gen, fps=self.fps(pair.generated), flow=self.flow)
            entry.update(dynamic=dyn["dynamic"], Motion=dyn["motion"],
                         motion_pairs_above=dyn["pairs_above"])

    def view_metrics(self, pair, entry, features):
        entry["stage"] = "generated"
        gen = self.video(pair.generated)
        self.dynamic_metrics(pair, entry)
        if self.dino is not None:
            entry["SubCons"] = consistency.subject_consistency(self.dino, gen)
        if self.clip is not None:
            entry["BgCons"] = consistency.background_consistency(self.clip, gen)
        if self.i3d is not None:
            features["generated"] = np.asarray(self.i3d(gen[None])[0])
        if pair.content_ref is None:
            return
        entry["stage"] = "content_ref"
        ref = video_lib.read_video(pair.content_ref, max_frames=self.options.max_frames)[0]
        if self.options.matched_pixels:
            entry["MatPix"] = consistency.matched_pixels(gen, ref)
        if self.clip is not None:
            entry["CLIP-V"] = consistency.clip_similarity(self.clip, gen, ref)
        if self.i3d is not None:
            features["content"] = np.asarray(self.i3d(ref[None])[0])

    def run(self, pair):
        """Metrics of one pair: (entry, None, features) or (None, failure, {}) with the stage
        that failed (and the generated video's Dynamic Degree when it decodes); features: the
        I3D features {"generated", "content"} of the pair, for FVD."""
        entry = {"name": pair.name, "generated": pair.generated, "camera_ref": pair.camera_ref,
                 "content_ref": pair.content_ref}
        features = {}
        try:
            self.camera_metrics(pair, entry)
            self.view_metrics(pair, entry, features)
        except (ValueError, OSError, poses.PoseEstimationError) as e:
            stage = entry.get("stage", "generated")
            failure = {"name": pair.name, "stage": stage, "path": _stage_path(pair, stage),
                       "reason": f"{type(e).__name__}: {e}"}
            for key in ("generated_poses", "camera_ref_poses"):
                if key in entry:
                    failure[key] = entry[key]
            try:  # every video counts in Dyn. Deg.: one whose poses failed too
                self.dynamic_metrics(pair, failure)
            except (ValueError, OSError):
                pass  # the generated video does not decode: the failure says why
            return None, failure, {}
        entry.pop("stage")
        return entry, None, features


def _stage_path(pair, stage):
    return {"camera_ref": pair.camera_ref, "content_ref": pair.content_ref}.get(stage, pair.generated)


def _file_sha1(path):
    """Hex SHA-1 of a file's bytes (FileNotFoundError naming it when missing)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def _fvd_summary(results, options):
    """FVD (vs options.fvd_refs) and FVD-V (vs content refs) from the pairs' I3D features."""
    out, notes = {}, []
    gen = [f["generated"] for _, _, f in results if "generated" in f]
    if options.fvd_refs:
        i3d = fvd.I3DFeatures(weights=options.i3d_weights, endpoint=options.i3d_endpoint,
                              size=options.i3d_size, num_frames=options.i3d_frames)
        refs = [i3d(video_lib.read_video(p, max_frames=options.max_frames)[0][None])[0]
                for p in list_files(options.fvd_refs, VIDEO_SUFFIXES).values()]
        if len(gen) >= 2 and len(refs) >= 2:
            out["FVD"] = fvd.fvd_from_features(np.stack(gen), np.stack(refs))
        else:
            notes.append(f"FVD needs >= 2 videos per set (generated {len(gen)}, real {len(refs)})")
    con = [f["content"] for _, _, f in results if "content" in f]
    if con:
        if len(con) >= 2 and len(gen) >= 2:
            out["FVD-V"] = fvd.fvd_from_features(np.stack(gen), np.stack(con))
        else:
            notes.append("FVD-V needs >= 2 evaluated pairs with content references")
    return out, notes


def evaluate(pairs, options=EvalOptions(), name="generated", progress=False, workers=1,
             results_dir=None, resume=False):
    """Evaluates pairs; returns the report dict (see `write_report`).

    workers: parallel processes (`batch.run_pairs`); results_dir: folder of per-video results
    (written as each video finishes); resume: reuse the results there that were computed with
    the same options; progress: a progress bar with the time left (stderr)."""
    if options.reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {options.reduction!r}")
    if options.pose_backend not in pose_backends.BACKENDS:
        raise ValueError(f"pose backend must be one of {pose_backends.BACKENDS}, "
                         f"got {options.pose_backend!r}")
    results = batch.run_pairs(pairs, options, _Evaluator, workers=workers, results_dir=results_dir,
                              resume=resume, progress=progress)
    return summarize(pairs, results, options, name)


def summarize(pairs, results, options, name):
    """The report dict of pairs and their results [(entry, failure, features)] (pair order)."""
    per_video = [e for e, _, _ in results if e is not None]
    failed = [f for _, f, _ in results if f is not None]
    summary = camera.aggregate([{k: e[k] for k in ("RotErr", "TransErr", "CamMC")} for e in per_video])
    for key in PER_VIDEO_MEANS:
        vals = [e[key] for e in per_video if key in e]
        if vals:
            summary[key] = float(np.mean(vals))
    # Dyn. Deg. over every video whose motion was measured, those whose poses failed included
    dynamic = [e["dynamic"] for e in per_video + failed if "dynamic" in e]
    notes = []
    if dynamic:
        summary["DynDeg"] = float(100 * np.mean(dynamic))  # percentage of dynamic videos
        if len(dynamic) < len(pairs):
            notes.append(f"Dyn. Deg. over {len(dynamic)} of {len(pairs)} videos: the others do not "
                         "decode (listed in failed)")
    if options.fvd:
        fvd_values, fvd_notes = _fvd_summary(results, options)
        summary.update(fvd_values)
        notes += fvd_notes
    return {"name": name, "num_pairs": len(pairs), "num_evaluated": len(per_video),
            "num_failed": len(failed), "failed": failed, "summary": summary, "notes": notes,
            "settings": {"rot_unit": "degrees" if options.degrees else "radians",
                         "reduction": options.reduction, "fov_deg_assumed": options.fov_deg,
                         "intrinsics": None if options.intrinsics is None else list(options.intrinsics),
                         "poses": _poses_note(options),
                         "resample": options.resample, "metrics": "CamI2V (relative poses, "
                         "per-trajectory max-norm translation scaling)",
                         "dynamic_degree": _dynamic_degree_note(options)},
            "per_video": per_video}


def _poses_note(options):
    if options.pose_backend == "colmap":
        return f"COLMAP {colmap.pycolmap_version()} ({options.colmap_config.mapper} mapper)"
    return "ours (eval/poses.py: KLT tracks, rotation-only or incremental SfM)"


def _dynamic_degree_note(options):
    if not options.dynamic_degree:
        return None
    if options.raft_weights:
        return (f"VBench's definition over RAFT ({motion.RAFT_ITERS} iterations, weights "
                f"{options.raft_weights}; VBench's with torchvision's Raft_Large_Weights.C_T_V1)")
    return ("VBench's definition over OpenCV DIS optical flow (not RAFT): values not comparable "
            "with VBench's")


# ----------------------------------------------------------------------------- output
def _fmt(value):
    return "-" if value is None else (f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}")


def markdown_table(reports):
    """Markdown table shaped like the paper's Table 1 (+ Table 2's columns), one row per report,
    with only the columns some report has; plus a column of failed/total videos."""
    keys = [(k, h) for k, h in COLUMNS if any(k in r["summary"] for r in reports)]
    head = "| Method | " + " | ".join(h for _, h in keys) + " | Failed |"
    rule = "|---|" + "---:|" * len(keys) + "---:|"
    rows = [f"| {r['name']} | " + " | ".join(_fmt(r["summary"].get(k)) for k, _ in keys)
            + f" | {r['num_failed']}/{r['num_pairs']} |" for r in reports]
    return "\n".join([head, rule] + rows)


def write_report(path, report):
    """Writes the report as JSON, atomically."""
    write_atomic(path, json.dumps(report, indent=1, default=float) + "\n")

"""Converts a `CamCloneDataset.csv` folder into sharded ArrayRecord triplet records (mp4 kind).

    python -m camclone_jax.data.prepare --csv DIR/CamCloneDataset.csv --out OUT \
        --num_shards 64 --workers 8 [--frames 81] [--min_frames 81]

The CSV has the public release's columns video_path, caption, ref_video_path,
content_video_path (target, camera reference, content reference; paths relative to the CSV or
absolute). Data row r (0-based, header excluded) goes to shard r % num_shards, so the
assignment depends on nothing but the CSV. Shards are converted in parallel worker processes;
shard s is written atomically to OUT/triplets-SSSSS-of-NNNNN.array_record and then marked done
by OUT/shard-SSSSS-of-NNNNN.json (its rows, records and rejections). A rerun with the same
arguments converts only the shards without a done-marker, so an interrupted run resumes with
no duplicated or lost records (a shard cut short is simply redone). OUT/prepare.json pins the
arguments and the CSV's sha256; a rerun with others is refused.

Every row becomes one record or one rejection in OUT/report.json (written last), with the
reason: bad_row (empty path or caption), missing_file, unreadable (ffmpeg cannot decode it),
too_few_frames (fewer than --min_frames, default --frames) or size_mismatch (the three
videos differ in height x width). Nothing is skipped silently. The mp4 bytes are stored as
they are (no re-encoding); every video is fully decoded once per shard to check it.
"""
import argparse
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import sys

from camclone_jax import errors
from camclone_jax.data import records, video
from camclone_jax.utils import write_atomic

CSV_COLUMNS = ("video_path", "caption", "ref_video_path", "content_video_path")
PATH_COLUMNS = dict(zip(records.VIDEO_KEYS, ("video_path", "ref_video_path", "content_video_path")))
REASONS = ("bad_row", "missing_file", "unreadable", "too_few_frames", "size_mismatch")
LAYOUT_VERSION = 1


class Rejected(Exception):
    """A CSV row that cannot become a record; `reason` is one of REASONS."""

    def __init__(self, reason, detail):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def shard_name(shard, num_shards, ext):
    """File name of shard `shard` of `num_shards` ('array_record' data or 'json' done-marker)."""
    prefix = "triplets" if ext == "array_record" else "shard"
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}.{ext}"


def read_csv(path):
    """Rows of a CamCloneDataset.csv as dicts (``errors.read_csv``: a missing column, a
    ragged row, a file that is not UTF-8 text are refused, naming the file and line)."""
    return errors.read_csv(path, "--csv", CSV_COLUMNS, required=CSV_COLUMNS)


def _probe(path, cache):
    """(num_frames, height, width, fps, first frame uint8 [H, W, 3]) of a video, or Rejected."""
    if path not in cache:
        try:
            if not os.path.isfile(path):
                raise Rejected("missing_file", path)
            try:
                frames, fps = video.read_video(path, threads=1)  # [F, H, W, 3]
            except ValueError as e:
                raise Rejected("unreadable", str(e)) from None
            cache[path] = (len(frames), frames.shape[1], frames.shape[2], fps, frames[0].copy())
        except Rejected as e:
            cache[path] = e
    if isinstance(cache[path], Rejected):
        raise cache[path]
    return cache[path]


def row_record(row, row_index, base_dir, min_frames, csv_name, cache):
    """Encoded mp4-kind record of one CSV row; raises Rejected naming why it cannot be one."""
    caption = (row.get("caption") or "").strip()
    paths = {k: (row.get(c) or "").strip() for k, c in PATH_COLUMNS.items()}
    empty = [PATH_COLUMNS[k] for k, p in paths.items() if not p] + ([] if caption else ["caption"])
    if empty:
        raise Rejected("bad_row", f"empty {empty}")
    full = {k: os.path.join(base_dir, p) for k, p in paths.items()}
    info = {k: _probe(full[k], cache) for k in records.VIDEO_KEYS}
    for k, (n, *_) in info.items():
        if n < min_frames:
            raise Rejected("too_few_frames", f"{paths[k]} has {n} frames, fewer than {min_frames}")
    sizes = {k: (h, w) for k, (_, h, w, _, _) in info.items()}
    if len(set(sizes.values())) > 1:
        raise Rejected("size_mismatch", ", ".join(f"{paths[k]}: {h}x{w}" for k, (h, w) in sizes.items()))
    n, h, w, fps, first = info["target"]
    parts = {}
    for k in records.VIDEO_KEYS:
        with open(full[k], "rb") as f:
            data = f.read()
        parts[k] = {"video": data, "num_frames": info[k][0], "path": paths[k],
                    **{key: -1 for key in records.ID_KEYS}}
    return records.encode_triplet({
        "kind": "mp4", "caption": caption, "fps": float(fps), "height": h, "width": w,
        "num_frames": min(i[0] for i in info.values()), "first_frame": video.encode_png(first),
        "source": f"{csv_name}:{row_index}", **parts})


def convert_shard(csv_path, out, shard, num_shards, min_frames):
    """Converts the rows r % num_shards == shard; writes the shard file, then its done-marker.

    Returns the marker's content: {"shard", "rows", "written", "rejected": [...]}.
    """
    rows = read_csv(csv_path)
    base_dir, csv_name = os.path.dirname(os.path.abspath(csv_path)), os.path.basename(csv_path)
    cache, rejected = {}, []

    def encoded():  # streamed to the writer: one row's videos in memory at a time
        for r in range(shard, len(rows), num_shards):
            try:
                yield row_record(rows[r], r, base_dir, min_frames, csv_name, cache)
            except Rejected as e:
                rejected.append({"row": r, "reason": e.reason, "detail": e.detail})

    written = records.write_records(os.path.join(out, shard_name(shard, num_shards, "array_record")),
                                    encoded())
    marker = {"shard": shard, "rows": len(range(shard, len(rows), num_shards)), "written": written,
              "rejected": rejected}
    _atomic_json(os.path.join(out, shard_name(shard, num_shards, "json")), marker)
    return marker


def _atomic_json(path, obj):
    write_atomic(path, json.dumps(obj, indent=1))


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_out(out, settings):
    """Creates OUT or checks that it holds a conversion with the same settings."""
    path = os.path.join(out, "prepare.json")
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        if old != settings:
            diff = sorted(k for k in settings if old.get(k) != settings[k])
            raise ValueError(f"{out} holds a conversion with other arguments (differing: {diff}); "
                             "choose another --out or delete it")
    elif os.path.isdir(out) and os.listdir(out):
        raise FileExistsError(f"{out} is not empty and holds no prepare.json; choose another --out")
    else:
        os.makedirs(out, exist_ok=True)
        _atomic_json(path, settings)


def prepare(csv_path, out, num_shards, workers=1, frames=81, min_frames=None, max_shards=None,
            progress=False):
    """Converts (or resumes converting) a CSV folder; returns the report dict (see module doc).

    max_shards: convert at most this many not-yet-done shards in this call, then return a
    report with "complete": False (for time-boxed jobs; the tests use it to interrupt a run).
    """
    if num_shards < 1 or workers < 1:
        raise ValueError(f"num_shards and workers must be >= 1, got {num_shards}, {workers}")
    min_frames = frames if min_frames is None else min_frames
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    rows = read_csv(csv_path)
    settings = {"layout_version": LAYOUT_VERSION, "csv": os.path.abspath(csv_path),
                "csv_sha256": _sha256(csv_path), "num_shards": num_shards, "min_frames": min_frames,
                "record_schema_version": records.SCHEMA_VERSION}
    _check_out(out, settings)
    marker = lambda s: os.path.join(out, shard_name(s, num_shards, "json"))  # noqa: E731
    todo = [s for s in range(num_shards) if not os.path.isfile(marker(s))]
    todo = todo[:max_shards] if max_shards is not None else todo
    args = [(csv_path, out, s, num_shards, min_frames) for s in todo]
    if workers == 1 or len(args) <= 1:
        for a in args:
            convert_shard(*a)
    else:  # spawn: no fork of a parent that may hold JAX threads
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(workers, len(args)), mp_context=ctx) as pool:
            futures = [pool.submit(convert_shard, *a) for a in args]
            for fut in concurrent.futures.as_completed(futures):
                fut.result()  # re-raises a worker's error
                if progress:
                    print(f"shard done ({sum(f.done() for f in futures)}/{len(futures)})", flush=True)
    return _report(out, num_shards, len(rows))


def _report(out, num_shards, num_rows):
    done, rejected, written = 0, [], 0
    for s in range(num_shards):
        if os.path.isfile(os.path.join(out, shard_name(s, num_shards, "json"))):
            with open(os.path.join(out, shard_name(s, num_shards, "json"))) as f:
                m = json.load(f)
            done, written, rejected = done + 1, written + m["written"], rejected + m["rejected"]
    rejected.sort(key=lambda x: x["row"])
    report = {"complete": done == num_shards, "rows": num_rows, "shards": num_shards,
              "shards_done": done, "records_written": written, "rows_rejected": len(rejected),
              "rejected_by_reason": {r: sum(x["reason"] == r for x in rejected) for r in REASONS},
              "rejected": rejected,
              "files": [shard_name(s, num_shards, "array_record") for s in range(num_shards)]}
    if report["complete"]:
        assert written + len(rejected) == num_rows, "every row is a record or a rejection"
        _atomic_json(os.path.join(out, "report.json"), report)
    return report


def main(argv=None):
    """Command line entry point (see the module docstring); returns the report."""
    p = argparse.ArgumentParser(prog="python -m camclone_jax.data.prepare",
                                description=__doc__.split("\n")[0])
    p.add_argument("--csv", required=True, help="path of CamCloneDataset.csv")
    p.add_argument("--out", required=True, help="output folder of the ArrayRecord shards")
    p.add_argument("--num_shards", type=int, default=16)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--frames", type=int, default=81, help="clip length training will sample")
    p.add_argument("--min_frames", type=int, default=None,
                   help="reject rows with a shorter video (default: --frames)")
    p.add_argument("--max_shards", type=int, default=None, help="stop after this many shards")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    for flag in ("num_shards", "workers", "frames", "min_frames", "max_shards"):
        if getattr(a, flag) is not None and getattr(a, flag) < 1:
            p.error(f"--{flag} must be >= 1, got {getattr(a, flag)}")
    with errors.exit_on_user_error():
        errors.check_output_dir(a.out, "--out")
        report = prepare(a.csv, a.out, a.num_shards, a.workers, a.frames, a.min_frames,
                         a.max_shards, progress=True)
    print(f"{a.out}: {report['records_written']} records in {report['shards_done']}/{a.num_shards} "
          f"shards, {report['rows_rejected']} rows rejected {report['rejected_by_reason']}"
          + ("" if report["complete"] else " (incomplete: rerun to resume)"))
    return report


if __name__ == "__main__":
    main()

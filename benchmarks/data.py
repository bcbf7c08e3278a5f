"""Benchmark: triplets per second per host from the Grain pipeline vs the public release's loading.

    python benchmarks/data.py [--workers 2] [--small_triplets 96] [--large_triplets 4] [--skip_large]

Three cases, each timed for our pipeline (`camclone_jax.data.pipeline`, `--workers` prefetch
processes, batch 4 (1 at the large size), values float32 in [-1, 1]; at the large size also
uint8 output with `--workers`, as float32 triplets are 1.2 GB each) and for the public
release's style (one process: imageio reads each mp4 path of the CSV, the first F frames,
PIL bilinear resize by max scale, numpy centre crop, float32 in [-1, 1]):

  1. small mp4: a synthetic dataset (1 group, 120 triplets, 17 frames, 64x112), clips of
     17 frames at 64x112;
  2. large mp4: 480x832, 81 frames (the public release's clip; three generated videos in
     `--large_triplets` rows), if not --skip_large;
  3. latent records at the 480x832x81 latent size (3 x [21, 60, 104, 16] float16 per record;
     no release counterpart: the release always decodes pixels).

The first batch (worker start-up) is not timed. Prints a markdown table. Everything is written
to a temporary folder that is deleted.
"""
import argparse
import csv
import dataclasses
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from camclone_jax.data import pipeline, prepare, records, transforms, video  # noqa: E402
from camclone_jax.data.synthetic import writer  # noqa: E402


def release_style(csv_path, frames, height, width, limit):
    """Triplets/s of the release's loop: imageio over mp4 paths, PIL resize, numpy crop."""
    import imageio.v2 as imageio
    from PIL import Image

    def load(path):
        reader = imageio.get_reader(path)
        out = []
        for i, frame in enumerate(reader):
            if i >= frames:
                break
            h, w = frame.shape[:2]
            s = max(width / w, height / h)
            img = Image.fromarray(frame).resize((round(w * s), round(h * s)), Image.BILINEAR)
            arr = np.asarray(img)  # [h', w', 3]
            top, left = (arr.shape[0] - height) // 2, (arr.shape[1] - width) // 2
            out.append(arr[top:top + height, left:left + width])
        reader.close()
        while len(out) < frames:
            out.append(out[-1])  # the release repeats the last frame
        return np.stack(out).astype(np.float32) / 127.5 - 1.0  # [F, H, W, 3]

    base = os.path.dirname(csv_path)
    rows = prepare.read_csv(csv_path)[:limit]
    start = time.perf_counter()
    for row in rows:
        for col in ("video_path", "ref_video_path", "content_video_path"):
            load(os.path.join(base, row[col]))
    return len(rows) / (time.perf_counter() - start)


def ours(source, clip, batch_size, workers, limit):
    """Triplets/s of the Grain pipeline (first batch excluded)."""
    cfg = pipeline.PipelineConfig(clip=clip, batch_size=batch_size, num_workers=workers,
                                  worker_buffer_size=1, process_index=0, process_count=1)
    loader = pipeline.make_loader(source, cfg)
    next(loader)
    n, start = 0, time.perf_counter()
    while n < limit:
        n += len(next(loader)["index"])
    rate = n / (time.perf_counter() - start)
    loader.close()
    return rate


def large_dataset(tmp, rows):
    """A CSV of `rows` triplets over three 81-frame 480x832 videos of moving patterns."""
    yy, xx = np.mgrid[:480, :832]
    for k in range(3):
        frames = np.stack([np.stack([(xx + 7 * t * (k + 1)) % 256, (yy + 3 * t) % 256,
                                     (xx // 4 + yy // 4 + 50 * k) % 256], -1)
                           for t in range(81)]).astype(np.uint8)  # [81, 480, 832, 3]
        video.write_mp4(os.path.join(tmp, f"v{k}.mp4"), frames, 15, crf=23)
    path = os.path.join(tmp, "CamCloneDataset.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(prepare.CSV_COLUMNS)
        for r in range(rows):
            w.writerow([f"v{r % 3}.mp4", f"row {r}", f"v{(r + 1) % 3}.mp4", f"v{(r + 2) % 3}.mp4"])
    return path


def latent_dir(tmp, count=16):
    """`count` latent records of the 480x832x81 latent shape (float16)."""
    rng = np.random.default_rng(0)
    recs = []
    for i in range(count):
        lat = lambda: rng.standard_normal((21, 60, 104, 16)).astype(np.float16)  # noqa: E731
        recs.append(records.encode_triplet({
            "kind": "latent", "caption": f"caption {i}", "fps": 15.0, "height": 480, "width": 832,
            "num_frames": 81, "first_frame": video.encode_png(np.zeros((480, 832, 3), np.uint8)),
            "latent_info": {"frames": 81, "height": 480, "width": 832, "vae": "{}", "normalized": True},
            **{k: {"latents": lat(), **{key: -1 for key in records.ID_KEYS}} for k in records.VIDEO_KEYS}}))
    out = os.path.join(tmp, "latent")
    records.write_records(os.path.join(out, "latents-00000-of-00001.array_record"), recs)
    return out


class _Rows(list):
    """A list of table rows that also prints each row as it comes (long runs show progress)."""

    def append(self, row):
        print(f"{row[0]} | {row[1]} | {row[2]:.2f} triplets/s", flush=True)
        super().append(row)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small_triplets", type=int, default=96)
    parser.add_argument("--large_triplets", type=int, default=4)
    parser.add_argument("--skip_large", action="store_true")
    args = parser.parse_args()
    rows = _Rows()
    with tempfile.TemporaryDirectory() as tmp:
        syn = os.path.join(tmp, "syn")
        writer.generate_dataset(syn, writer.GeneratorConfig(num_groups=1, frames=17, height=64, width=112,
                                                            preview_triplets=0), progress=False)
        csv_path = os.path.join(syn, "CamCloneDataset.csv")
        prepare.prepare(csv_path, os.path.join(tmp, "small"), num_shards=2, workers=args.workers, frames=17)
        clip = transforms.ClipConfig(num_frames=17, height=64, width=112)
        n = args.small_triplets
        rows.append(("mp4 17x64x112", f"ours, {args.workers} workers",
                     ours(os.path.join(tmp, "small"), clip, 4, args.workers, n)))
        rows.append(("mp4 17x64x112", "release style, 1 process",
                     release_style(csv_path, 17, 64, 112, n)))
        if not args.skip_large:
            big_csv = large_dataset(tmp, args.large_triplets + args.workers * 2)
            prepare.prepare(big_csv, os.path.join(tmp, "large"), num_shards=1, workers=1, frames=81)
            clip = transforms.ClipConfig(num_frames=81, height=480, width=832, pixel_dtype="uint8")
            rows.append(("mp4 81x480x832", f"ours, {args.workers} workers, uint8 out",
                         ours(os.path.join(tmp, "large"), clip, 1, args.workers, args.large_triplets)))
            clip = dataclasses.replace(clip, pixel_dtype="float32")  # 1.2 GB per triplet
            rows.append(("mp4 81x480x832", "ours, 1 worker, float32 out",
                         ours(os.path.join(tmp, "large"), clip, 1, 1, args.large_triplets)))
            rows.append(("mp4 81x480x832", "release style, 1 process",
                         release_style(big_csv, 81, 480, 832, args.large_triplets)))
        clip = transforms.ClipConfig(kind="latent", num_frames=81, height=480, width=832)
        rows.append(("latent 3x[21,60,104,16] f16", f"ours, {args.workers} workers",
                     ours(latent_dir(tmp), clip, 4, args.workers, 64)))
    print(f"\n{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}\n")
    print("| records | loader | triplets/s |\n|---|---|---|")
    for what, who, rate in rows:
        print(f"| {what} | {who} | {rate:.2f} |")


if __name__ == "__main__":
    main()

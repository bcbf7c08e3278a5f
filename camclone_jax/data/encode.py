"""Pre-encodes mp4-kind triplet records into latent-kind records with the Wan VAE.

    python -m camclone_jax.data.encode --records DIR --vae PATH|pixel --out OUT \
        [--batch_size 4] [--frames 77 --height 384 --width 672 --frame_stride 1] \
        [--short_video reject] [--dtype float16] [--i2v] [--t5 PATH --tokenizer PATH]

Each input file DIR/NAME.array_record becomes OUT/NAME.array_record (same records in the same
order, minus the bad ones), written atomically and then marked done by OUT/NAME.json (counts
and every bad record with its reason). Hosts split the files: host p of P (jax.process_index,
process_count) takes files i with i % P == p; a rerun skips files already done, so the job
resumes after an interruption.

Every video is cut to a clip by the pipeline's rules (transforms.py: frame sampling, resize +
centre crop), so the latents are exactly what the pixel pipeline would feed the VAE. Batches of
`batch_size` triplets (3 videos each, plus [first frame, zeros...] with --i2v) are padded to a
fixed size that the local devices divide, sharded over them along the batch axis, and encoded
(posterior mean, normalised); the compile happens once. The latent records keep the caption,
ids, poses and source of the input and add latent_info (clip size, VAE config). With --t5 and
--tokenizer the captions are also run through the umT5 encoder (camclone_jax/models/t5.py) and
stored as `text_embedding`: only the rows up to each prompt's length, since Wan zeroes the rest.
"""
import argparse
import collections
import dataclasses
import hashlib
import json
import logging
import os
import sys

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from camclone_jax import errors, tasks
from camclone_jax.convert.encoders import load_t5
from camclone_jax.convert.vae import load_vae
from camclone_jax.data import records, transforms, video
from camclone_jax.data.codec import PixelCodec
from camclone_jax.data.pipeline import record_files
from camclone_jax.models.t5 import encode_prompts, prepare_params
from camclone_jax.models.tokenizer import load_tokenizer
from camclone_jax.models.vae import WanVAE
from camclone_jax.utils import write_atomic

log = logging.getLogger(__name__)


class ClipCache:
    """Decoded clips by the mp4's bytes, least recently used first out beyond ``max_bytes``:
    a generated dataset's videos recur in many triplets (each synthetic video is in 9), and a
    decode is an ffmpeg process, the encoder's cost at small sizes."""

    def __init__(self, clip_cfg, max_bytes=512 << 20):
        self.clip_cfg, self.max_bytes, self.size = clip_cfg, max_bytes, 0
        self._clips = collections.OrderedDict()

    def __call__(self, mp4: bytes) -> np.ndarray:
        """The clip uint8 [F, H, W, 3] of mp4 bytes (raises BadExample); read-only."""
        key = hashlib.blake2b(mp4, digest_size=16).digest()
        if key in self._clips:
            self._clips.move_to_end(key)
            return self._clips[key]
        clip = transforms.load_clip(mp4, self.clip_cfg)  # [F, H, W, 3]
        clip.flags.writeable = False
        self._clips[key] = clip
        self.size += clip.nbytes
        while self.size > self.max_bytes and len(self._clips) > 1:
            self.size -= self._clips.popitem(last=False)[1].nbytes
        return clip


def _clips(rec, load):
    """The three uint8 clips [F, H, W, 3] of an mp4 record (raises BadExample); ``load`` maps
    mp4 bytes to a clip (a ``ClipCache``)."""
    return {k: load(rec[k]["video"]) for k in records.VIDEO_KEYS}


def latent_record(rec, latents, clip_cfg, vae_config, i2v=None, dtype=np.float16):
    """The latent-kind record of mp4 record `rec`, given latents {video key: [L, h, w, C]}."""
    out = {k: v for k, v in rec.items() if k not in records.VIDEO_KEYS}
    for k in records.VIDEO_KEYS:
        out[k] = {key: v for key, v in rec[k].items() if key != "video"}
        out[k]["latents"] = np.asarray(latents[k], dtype)  # [L, h, w, C]
    if i2v is not None:
        out["i2v_latents"] = np.asarray(i2v, dtype)  # [L, h, w, C]
    out.update(kind="latent", latent_info={
        "frames": clip_cfg.num_frames, "height": clip_cfg.height, "width": clip_cfg.width,
        "frame_stride": clip_cfg.frame_stride, "vae": json.dumps(vae_config.to_dict()),
        "normalized": True})
    return out


class TextEncoder:
    """Captions -> umT5 embeddings, the valid rows only ([length, dim] each; the rest are zero)."""

    def __init__(self, t5_path, tokenizer_path, dtype=np.float16):
        self.tokenizer = load_tokenizer(tokenizer_path)
        self.config, params = load_t5(t5_path)
        self.params = prepare_params(self.config, params)  # on the device once, for all batches
        self.dtype = dtype
        self.name = f"umt5:{os.path.abspath(t5_path)}"

    def __call__(self, captions):
        emb, lengths = encode_prompts(list(captions), self.tokenizer, self.config, self.params)
        return [e[:n].astype(self.dtype) for e, n in zip(emb, lengths)]  # [length, dim] each


class Encoder:
    """Encodes batches of videos [N, F, H, W, 3] in [-1, 1] with the VAE over the local devices."""

    def __init__(self, vae_config, params, batch_videos, clip_cfg):
        devices = jax.local_devices()
        self.size = -(-batch_videos // len(devices)) * len(devices)  # padded to the devices
        mesh = Mesh(np.array(devices), ("data",))
        self._sharding = NamedSharding(mesh, PartitionSpec("data"))
        self._params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        self._vae = WanVAE(vae_config)
        sf, tf = vae_config.spatial_factor, vae_config.temporal_factor
        self.out_shape = (1 + (clip_cfg.num_frames - 1) // tf, clip_cfg.height // sf,
                          clip_cfg.width // sf, vae_config.z_dim)  # [L, h, w, C]

    def __call__(self, videos):
        """float32 [n, F, H, W, 3] in [-1, 1], n <= size -> float32 latents [n, L, h, w, C]."""
        n = len(videos)
        x = np.zeros((self.size,) + videos.shape[1:], np.float32)  # [size, F, H, W, 3], padded
        x[:n] = videos
        x = jax.device_put(x, self._sharding)
        return np.asarray(self._vae.encode(self._params, x))[:n]  # [n, L, h, w, C]


class CodecEncoder:
    """The ``Encoder`` interface over a weight-free codec (``data/codec.py``, e.g. the pixel
    codec): ``--vae pixel`` pre-encodes records for pixel-space models."""

    def __init__(self, codec, clip_cfg):
        self._encode = jax.jit(codec.encode)
        self.out_shape = codec.latent_shape(clip_cfg.num_frames, clip_cfg.height,
                                            clip_cfg.width) + (codec.latent_channels,)

    def __call__(self, videos):
        """float32 [n, F, H, W, 3] in [-1, 1] -> float32 latents [n, L, h, w, C]."""
        return np.asarray(self._encode(videos))


def _good_batches(src, clip_cfg, batch_size, bad):
    """Yields lists of up to batch_size (mp4 record, clips); bad records go to `bad`."""
    chunk, load = [], ClipCache(clip_cfg)
    for i, raw in enumerate(records.read_records(src)):
        try:
            rec = records.decode_triplet(raw)
            if rec["kind"] != "mp4":
                raise ValueError(f"record kind is {rec['kind']!r}, not 'mp4'")
            chunk.append((rec, _clips(rec, load)))
        except (ValueError, transforms.BadExample) as e:
            bad.append({"record": i, "reason": f"{type(e).__name__}: {e}"})
            log.warning("%s record %d: %s", src, i, e)
        if len(chunk) == batch_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def encode_file(src, dst, encoder, clip_cfg, vae_config, batch_size, i2v=False, dtype=np.float16,
                text=None):
    """Encodes one ArrayRecord file into `dst` and writes its done-marker; returns the marker.

    ``text``: an optional ``TextEncoder`` whose output is stored as each record's text_embedding.

    Streams: only one batch of decoded clips is in memory at a time.
    """
    bad, keys = [], records.VIDEO_KEYS + (("i2v",) if i2v else ())

    def latent_records():
        for chunk in _good_batches(src, clip_cfg, batch_size, bad):
            videos = []
            for _, clips in chunk:
                videos += [transforms.to_float(clips[k]) for k in records.VIDEO_KEYS]  # [F, H, W, 3]
                if i2v:  # Wan I2V's image condition: the first frame, then zeros (in [-1, 1])
                    videos.append(np.asarray(tasks.first_frame_video(
                        transforms.to_float(clips["target"][0])[None],
                        clips["target"].shape[0])[0]))  # [F, H, W, 3]
            lat = encoder(np.stack(videos))  # [n * keys, L, h, w, C]
            lat = lat.reshape(len(chunk), len(keys), *encoder.out_shape)  # [n, keys, L, h, w, C]
            texts = text([rec["caption"] for rec, _ in chunk]) if text else [None] * len(chunk)
            for (rec, clips), z, emb in zip(chunk, lat, texts):  # z: [keys, L, h, w, C]
                out = latent_record(rec, dict(zip(keys, z)), clip_cfg, vae_config,
                                    i2v=z[3] if i2v else None, dtype=dtype)
                out["first_frame"] = video.encode_png(clips["target"][0])
                if emb is not None:
                    out.update(text_embedding=emb, text_encoder=text.name)  # [length, dim]
                yield records.encode_triplet(out)

    written = records.write_records(dst, latent_records())
    marker = {"source": os.path.abspath(src), "records": records.num_records(src),
              "written": written, "bad": bad}
    write_atomic(os.path.splitext(dst)[0] + ".json", json.dumps(marker, indent=1))
    return marker


def encode_records(records_dir, vae_path, out, clip_cfg, batch_size=4, i2v=False, dtype="float16",
                   process_index=None, process_count=None, t5_path=None, tokenizer_path=None,
                   codec=None):
    """Encodes this host's share of the files; returns {file name: done-marker}.

    With ``t5_path`` and ``tokenizer_path`` the captions' umT5 embeddings are stored too.
    ``codec`` (with ``vae_path="pixel"``): the weight-free codec to use (default: PixelCodec()).
    """
    if (t5_path is None) != (tokenizer_path is None):
        raise ValueError("text encoding needs both --t5 and --tokenizer")

    clip_cfg = dataclasses.replace(clip_cfg, kind="mp4")
    clip_cfg.validate()
    if (clip_cfg.num_frames - 1) % 4:
        raise ValueError(f"the VAE needs 1 + 4k frames, got --frames {clip_cfg.num_frames}")
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    files = record_files(records_dir)
    mine = [f for i, f in enumerate(files) if i % pc == pi]
    if vae_path == "pixel":  # the weight-free pixel codec (its config stands in for the VAE's)
        vae_config = codec or PixelCodec()
        encoder = CodecEncoder(vae_config, clip_cfg)  # checks the clip size
    else:
        vae_config, params = load_vae(vae_path)
        sf = vae_config.spatial_factor
        if clip_cfg.height % sf or clip_cfg.width % sf:
            raise ValueError(f"height and width must be multiples of {sf}, "
                             f"got {clip_cfg.height}x{clip_cfg.width}")
        encoder = Encoder(vae_config, params, batch_size * (4 if i2v else 3), clip_cfg)
    text = TextEncoder(t5_path, tokenizer_path, np.dtype(dtype)) if t5_path else None
    os.makedirs(out, exist_ok=True)
    markers = {}
    for f in mine:
        name = os.path.basename(f)
        dst = os.path.join(out, name)
        marker_path = os.path.splitext(dst)[0] + ".json"
        if os.path.isfile(marker_path):
            with open(marker_path) as fh:
                markers[name] = json.load(fh)
            continue
        markers[name] = encode_file(f, dst, encoder, clip_cfg, vae_config, batch_size, i2v,
                                    np.dtype(dtype), text)
        log.info("%s: %d latent records, %d bad", name, markers[name]["written"],
                 len(markers[name]["bad"]))
    return markers


def main(argv=None):
    """Command line entry point (see the module docstring)."""
    d = transforms.ClipConfig()
    p = argparse.ArgumentParser(prog="python -m camclone_jax.data.encode",
                                description=__doc__.split("\n")[0])
    p.add_argument("--records", required=True, help="folder (or glob) of mp4-kind ArrayRecord files")
    p.add_argument("--vae", required=True, help="VAE weights (anything convert.vae.load_vae "
                   "reads), or 'pixel' for the weight-free pixel codec (data/codec.py)")
    p.add_argument("--out", required=True)
    p.add_argument("--batch_size", type=int, default=4, help="triplets per VAE call")
    p.add_argument("--frames", type=int, default=d.num_frames)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--frame_stride", type=int, default=d.frame_stride)
    p.add_argument("--short_video", default=d.short_video, choices=("reject", "repeat_last"))
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    p.add_argument("--i2v", action="store_true", help="also encode [first frame, zeros...]")
    p.add_argument("--t5", default=None, help="umT5 weights (anything convert.load_t5 reads)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json / sentencepiece model")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    for flag in ("batch_size", "frames", "height", "width", "frame_stride"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag} must be >= 1, got {getattr(a, flag)}")
    cfg = transforms.ClipConfig(num_frames=a.frames, height=a.height, width=a.width,
                                frame_stride=a.frame_stride, short_video=a.short_video)
    with errors.exit_on_user_error():
        errors.check_output_dir(a.out, "--out")  # before the VAE loads
        markers = encode_records(a.records, a.vae, a.out, cfg, a.batch_size, a.i2v, a.dtype,
                                 t5_path=a.t5, tokenizer_path=a.tokenizer)
    print(f"{a.out}: {sum(m['written'] for m in markers.values())} latent records from "
          f"{len(markers)} file(s), {sum(len(m['bad']) for m in markers.values())} bad")
    return markers


if __name__ == "__main__":
    main()

"""Triplet records, schema version 1: one ArrayRecord record per (target, camera ref, content ref).

A training example of CamCloneMaster is a triplet of videos: the target, a camera reference (same
camera trajectory, other scene) and a content reference (same scene, other trajectory). Each is
stored as one record in ArrayRecord files (`write_records` / `read_records`).

Byte layout of one record: a msgpack map (msgpack spec, strings UTF-8, bytes as `bin`) with keys
  schema_version  int, SCHEMA_VERSION (1)
  kind            "mp4" (videos are whole mp4 files) or "latent" (encoded VAE latents)
  caption         str, the target's caption
  fps             float, frames per second of the videos
  height, width   int, pixel size of the videos
  num_frames      int, frames per video
  first_frame     the target's first frame: PNG bytes or a uint8 array [height, width, 3]
  target, camera_ref, content_ref: maps, one per video, with
      video       bytes, the mp4 file                                   (kind == "mp4")
      latents     array, e.g. float32 [latent_frames, h, w, channels]   (kind == "latent")
      poses       optional, float32 [num_frames, 4, 4] camera-to-world, OpenCV axes (x right,
                  y down, z forward; see camclone_jax/data/synthetic/trajectories.py)
      intrinsics  optional, float32 [num_frames, 4] normalised (fx, fy, cx, cy) as RealEstate10K
      scene_id, location_id, trajectory_id, group_id   int ids (-1 where unknown)
      num_frames  optional int, frames of this video when they differ from the top level's
Optional top-level fields:
  text_embedding  float16/float32 [tokens, dim], the caption's cached text-encoder output, with
  text_encoder    str naming the encoder (e.g. "umt5-xxl")
  source          str, where the triplet came from (e.g. "CamCloneDataset.csv:17")
Kind "latent" (written by camclone_jax.data.encode) also has
  latent_info     map: frames, height, width (the pixel clip that was encoded, after frame
                  sampling and resize + centre crop), vae (str, the VAE config as JSON),
                  normalized (bool: latents are (z - mean) / std as WanVAE.encode returns)
  i2v_latents     optional, the latents of [first frame, zeros...] (Wan I2V's image condition)
and every latents array is float16 or float32 [latent_frames, h, w, channels], the same shape
in all three videos (and i2v_latents); first_frame is then the encoded clip's first frame
after resize + crop: uint8 [latent_info.height, latent_info.width, 3] or its PNG bytes.
Every numpy array (anywhere in the record) is a msgpack map
  {"__ndarray__": true, "dtype": numpy dtype string such as "<f4", "shape": [..], "data": bin}
with the data in C order. Extra keys, at the top level or in a video map, are allowed and kept
(the synthetic generator adds e.g. `caption`, `path`, `video_id`, `trajectory_name` per video);
readers must ignore keys they do not know. A reader refuses a schema_version newer than its own.
Compatibility: the optional fields above were added within version 1 (they only relax or add to
what the first writers produced), so every record written by the synthetic generator still
reads; a change that old readers could misread must bump SCHEMA_VERSION.
"""
import os

import msgpack
import numpy as np
from array_record.python import array_record_module

SCHEMA_VERSION = 1
KINDS = ("mp4", "latent")
VIDEO_KEYS = ("target", "camera_ref", "content_ref")
ID_KEYS = ("scene_id", "location_id", "trajectory_id", "group_id")
_TOP_TYPES = {"schema_version": int, "kind": str, "caption": str, "fps": (int, float),
              "height": int, "width": int, "num_frames": int}
LATENT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
_ARRAY_TAG = "__ndarray__"


def _pack_default(obj):
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        if arr.dtype.hasobject:
            raise ValueError("object arrays cannot be stored in a record")
        return {_ARRAY_TAG: True, "dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot store a {type(obj).__name__} in a record")


def _unpack_hook(obj):
    if obj.get(_ARRAY_TAG) is True:
        try:
            return np.frombuffer(obj["data"], np.dtype(obj["dtype"])).reshape(obj["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"corrupt array in record: {e}") from None
    return obj


def _check_video(name, v, record):
    if not isinstance(v, dict):
        raise ValueError(f"record field {name!r} must be a map, got {type(v).__name__}")
    payload = "video" if record["kind"] == "mp4" else "latents"
    if payload not in v:
        raise ValueError(f"record field {name!r} lacks {payload!r} (kind is {record['kind']!r})")
    if record["kind"] == "mp4" and not isinstance(v["video"], bytes):
        raise ValueError(f"{name}.video must be mp4 bytes, got {type(v['video']).__name__}")
    if record["kind"] == "latent" and not isinstance(v["latents"], np.ndarray):
        raise ValueError(f"{name}.latents must be an array, got {type(v['latents']).__name__}")
    if record["kind"] == "latent":
        _check_latents(f"{name}.latents", v["latents"])
    f = v.get("num_frames", record["num_frames"])
    if not isinstance(f, int) or isinstance(f, bool) or f < 1:
        raise ValueError(f"{name}.num_frames must be a positive int, got {f!r}")
    for key, shape in (("poses", (f, 4, 4)), ("intrinsics", (f, 4))):
        arr = v.get(key)
        if arr is None:
            continue  # optional: unknown for real videos (the public release has no poses)
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{name}.{key} must be an array, got {type(arr).__name__}")
        if arr.shape != shape or arr.dtype != np.float32:
            raise ValueError(f"{name}.{key} must be float32 {list(shape)}, "
                             f"got {arr.dtype} {list(arr.shape)}")
    for key in ID_KEYS:
        if not isinstance(v.get(key), int) or isinstance(v.get(key), bool):
            raise ValueError(f"record field {name!r} lacks the int id {key!r}")


def _check_latents(name, arr):
    if not isinstance(arr, np.ndarray) or arr.ndim != 4 or arr.dtype not in LATENT_DTYPES:
        what = f"{arr.dtype} {list(arr.shape)}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(f"{name} must be float16/float32 [latent_frames, h, w, channels], got {what}")


def _check_latent_kind(record):
    info = record.get("latent_info")
    if not isinstance(info, dict):
        raise ValueError("latent-kind record lacks the map 'latent_info'")
    for key in ("frames", "height", "width"):
        if not isinstance(info.get(key), int) or info[key] < 1:
            raise ValueError(f"latent_info.{key} must be a positive int, got {info.get(key)!r}")
    if not isinstance(info.get("vae"), str):
        raise ValueError("latent_info.vae must be a str (the VAE config as JSON)")
    shapes = {record[k]["latents"].shape for k in VIDEO_KEYS}
    if record.get("i2v_latents") is not None:
        _check_latents("i2v_latents", record["i2v_latents"])
        shapes.add(record["i2v_latents"].shape)
    if len(shapes) != 1:
        raise ValueError(f"latent shapes differ between the videos of a record: {sorted(shapes)}")


def _check_optional(record):
    emb = record.get("text_embedding")
    if emb is not None and (not isinstance(emb, np.ndarray) or emb.ndim != 2
                            or emb.dtype not in LATENT_DTYPES):
        raise ValueError("text_embedding must be a float16/float32 array [tokens, dim]")
    for key in ("text_encoder", "source"):
        if key in record and not isinstance(record[key], str):
            raise ValueError(f"record field {key!r} must be a str")


def validate_triplet(record):
    """Raises ValueError naming the first problem if `record` does not follow the schema."""
    if not isinstance(record, dict):
        raise ValueError(f"a triplet record must be a map, got {type(record).__name__}")
    for key, typ in _TOP_TYPES.items():
        if key not in record:
            raise ValueError(f"triplet record lacks the field {key!r}")
        if not isinstance(record[key], typ) or isinstance(record[key], bool):
            raise ValueError(f"record field {key!r} has type {type(record[key]).__name__}")
    version = record["schema_version"]
    if version > SCHEMA_VERSION:
        raise ValueError(f"record has schema_version {version}, newer than this reader's "
                         f"{SCHEMA_VERSION}; update camclone_jax")
    if version < 1:
        raise ValueError(f"unknown schema_version {version}")
    if record["kind"] not in KINDS:
        raise ValueError(f"record kind must be one of {KINDS}, got {record['kind']!r}")
    if record["num_frames"] < 1 or record["height"] < 1 or record["width"] < 1:
        raise ValueError("num_frames, height and width must be positive")
    ff = record.get("first_frame")
    if ff is None:
        raise ValueError("triplet record lacks the field 'first_frame'")
    image_shape = (record["height"], record["width"], 3)
    if record["kind"] == "latent" and isinstance(record.get("latent_info"), dict):
        image_shape = (record["latent_info"].get("height"), record["latent_info"].get("width"), 3)
    if isinstance(ff, np.ndarray) and (ff.dtype != np.uint8 or ff.shape != image_shape):
        raise ValueError(f"first_frame must be uint8 [height, width, 3], got {ff.dtype} {list(ff.shape)}")
    if not isinstance(ff, (bytes, np.ndarray)):
        raise ValueError(f"first_frame must be PNG bytes or an array, got {type(ff).__name__}")
    for name in VIDEO_KEYS:
        if name not in record:
            raise ValueError(f"triplet record lacks the field {name!r}")
        _check_video(name, record[name], record)
    if record["kind"] == "latent":
        _check_latent_kind(record)
    _check_optional(record)


def encode_triplet(record):
    """Validates a triplet dict and serialises it to bytes (see the module docstring)."""
    record = dict(record)
    record.setdefault("schema_version", SCHEMA_VERSION)
    validate_triplet(record)
    return msgpack.packb(record, default=_pack_default, use_bin_type=True)


def decode_triplet(data):
    """Parses and validates record bytes; raises ValueError on corrupt or incompatible data."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"record data must be bytes, got {type(data).__name__}")
    try:
        record = msgpack.unpackb(data, object_hook=_unpack_hook, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several exception types for corrupt data
        raise ValueError(f"corrupt triplet record ({type(e).__name__}: {e})") from None
    validate_triplet(record)
    return record


def write_records(path, records, options="group_size:1"):
    """Writes an iterable of record bytes to an ArrayRecord file, atomically (via path + '.tmp').

    Returns the number of records written. If writing fails, neither the file nor the temporary
    file is left behind.
    """
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = array_record_module.ArrayRecordWriter(tmp, options)
    count = 0
    try:
        for rec in records:
            if not isinstance(rec, bytes):
                raise ValueError(f"records must be bytes, got {type(rec).__name__} at index {count}")
            writer.write(rec)
            count += 1
        if not writer.ok():
            raise OSError(f"ArrayRecord writer failed for {tmp}")
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        if writer.is_open():
            writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return count


def _open_reader(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ArrayRecord file not found: {path}")
    reader = array_record_module.ArrayRecordReader(path)
    if not reader.ok():
        raise ValueError(f"not a readable ArrayRecord file (corrupt or truncated): {path}")
    return reader


def num_records(path):
    """Number of records in an ArrayRecord file."""
    reader = _open_reader(path)
    try:
        return reader.num_records()
    finally:
        reader.close()


def read_records(path, chunk=64, on_error=None):
    """Yields the record bytes of an ArrayRecord file in order.

    A record that cannot be read (a corrupt chunk: "chunk data hash mismatch") raises a
    RuntimeError naming the file and the record; with ``on_error(index, message)`` it is
    reported there and skipped instead, and the records around it are still read."""
    reader = _open_reader(path)
    try:
        n = reader.num_records()
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            try:
                yield from reader.read(start, stop)
                continue
            except RuntimeError:
                pass  # find the unreadable record(s) of this chunk one by one
            for i in range(start, stop):
                try:
                    (rec,) = reader.read([i])
                except RuntimeError as e:
                    message = f"unreadable record {i} of {path}: {' '.join(str(e).split())}"
                    if on_error is None:
                        raise RuntimeError(message) from None
                    on_error(i, message)
                    continue
                yield rec
    finally:
        reader.close()

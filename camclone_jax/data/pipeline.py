"""The Grain input pipeline: triplet records -> batches of examples on every host.

    cfg = PipelineConfig(clip=ClipConfig(num_frames=81, height=480, width=832), batch_size=4)
    loader = make_loader("OUT/", cfg)          # ArrayRecord files, a folder of them, a TFDS
    batch = next(loader)                        # data source (tfds.data_source(...)) or a
                                                # procedural source (data.wallpaper_source)
    batch = global_batch(batch, mesh)           # numeric fields as global jax.Arrays

Order of operations (`make_dataset`): records (a grain `MapDataset` over ArrayRecord files)
-> paired with their global index -> seeded shuffle (reshuffled each epoch) -> repeat
(num_epochs; None: forever) -> decode, frame sampling, resize + crop, task draw (transforms.py,
seeded per position in this global stream) -> camera-preserving augmentation (augment.py:
symmetries of the whole triplet, the camera reference's colours; by position) -> the
same-scene curriculum (curriculum.py: by
position, so by step) -> the world mix (world_mix.py: with ``mix``, some positions take a
procedural source's example instead, by position) -> this host's part of every global batch: with
B = batch_size * process_count, host p takes positions [j B + p b, j B + (p + 1) b) of global
batch j (lazily: only its own examples are read and decoded) -> bad examples skipped and
counted -> batch -> `mp_prefetch` over `num_workers` processes.

So the global batches (host 0's rows, then host 1's, ...) do not depend on the number of
processes: 2 hosts x batch 4 see exactly the examples, tasks and order of 1 host x batch 8,
and a run may resume with another process count (`skip_batches`). The hosts' shards are
disjoint and together cover each epoch (a final partial global batch is dropped when
num_epochs is finite).

A batch is a dict of numpy arrays with a leading batch axis: target, camera_ref, content_ref
float32 [B, F, H, W, 3] in [-1, 1] (latent kind: [B, L, h, w, C] latents, and i2v_latents if
the records have them), first_frame float32 [B, H, W, 3], task int32 [B] (0 I2V, 1 V2V),
caption str [B], index int64 [B] (the record's global index).

Determinism: the same records, seed, process count and num_workers give the same batches
(num_workers changes which worker batches which examples, so it changes the batches).

Bad data: a corrupt record, an unreadable or too-short video is logged (with its index and
reason), counted in `TripletLoader.bad_records` and skipped; once more than
`max_bad_records` are skipped the loader raises `BadDataError`. (With a finite num_epochs,
bad examples after a worker's last good one are logged but cannot reach the count: the count
travels with the good examples.) So is a record that cannot be read at all (a corrupt
ArrayRecord chunk, in our files or a TFDS source): the warning names its file and position
(`guarded_source.py`), and every other example keeps its place in the order. A corrupt or
truncated ArrayRecord file (its index unreadable) is an error when the loader is built. Worker errors propagate; nothing waits forever.

Checkpointing: `TripletLoader.get_state()` / `set_state()` exchange JSON bytes (grain's
iterator state plus the bad-record count), so `grain.checkpoint.CheckpointSave(loader)` saves
it with orbax; a restored loader yields exactly the batches the saved one would have.
"""
import dataclasses
import glob
import json
import logging
import os

import grain
import numpy as np

from camclone_jax.data import records
from camclone_jax.data.augment import Augment, AugmentStage
from camclone_jax.data.curriculum import Curriculum, SameSceneStage
from camclone_jax.data.guarded_source import GuardedSource, tfds_files, unreadable_example
from camclone_jax.data.transforms import BAD_KEY, ClipConfig, TripletTransform
from camclone_jax.data.world_mix import WorldMix

log = logging.getLogger(__name__)
SKIPPED_KEY = "_skipped"
STATE_VERSION = 1


class BadDataError(RuntimeError):
    """More bad examples than the configured limit."""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything that determines the pipeline's output (with the data itself)."""
    clip: ClipConfig = ClipConfig()
    batch_size: int = 1  # per host
    drop_remainder: bool = True
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None  # None: repeat forever
    num_workers: int = 2  # prefetch processes; 0: in the calling process
    worker_buffer_size: int = 2  # batches each worker prepares ahead
    read_threads: int = 2  # threads per worker decoding examples (ffmpeg runs outside the GIL)
    read_buffer_size: int = 4  # examples each worker decodes ahead (grain's default, 500,
    # would hold hundreds of 1.2 GB triplets at 480x832x81)
    max_bad_records: int = 100  # skipped examples allowed (per host) before BadDataError
    process_index: int | None = None  # None: jax.process_index()
    process_count: int | None = None  # None: jax.process_count()
    same_scene: Curriculum = Curriculum()  # records: camera references that are the target
    augment: Augment = Augment()  # records: symmetries, the camera reference's colours
    # records: the fraction (a decaying schedule) of examples taken from make_dataset's
    # ``mix_source`` instead (data/world_mix.py)
    mix: Curriculum = Curriculum()


def record_files(paths):
    """Sorted ArrayRecord files from a folder, a glob pattern, a file or a list of those."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "*.array_record")))
        elif any(c in p for c in "*?["):
            files += sorted(glob.glob(p))
        else:
            files.append(p)
    if not files:
        raise FileNotFoundError(f"no ArrayRecord files in {paths}")
    for f in files:
        records.num_records(f)  # raises naming a missing, corrupt or truncated file
    return files


def _host(cfg):
    if cfg.process_index is not None and cfg.process_count is not None:
        index, count = cfg.process_index, cfg.process_count
    else:
        import jax  # only here: worker processes need not import jax
        index, count = jax.process_index(), jax.process_count()
    if not 0 <= index < count:
        raise ValueError(f"process_index {index} not in [0, {count})")
    return index, count


def make_source(source):
    """A random-access source: ArrayRecord files (folder/glob/list) or a data source object
    (e.g. `tfds.data_source(...)`: anything with __len__ and __getitem__), guarded: a record
    that cannot be read (a corrupt chunk) comes back as a marker naming its file and position,
    and becomes a bad example (`guarded_source`)."""
    if not isinstance(source, (str, list, tuple)) and hasattr(source, "__getitem__") \
            and hasattr(source, "__len__"):
        return GuardedSource(source, tfds_files(source))
    files = record_files(source)
    return GuardedSource(grain.sources.ArrayRecordDataSource(files),
                         [(f, 0, records.num_records(f)) for f in files])


class _GuardedTransform(TripletTransform):
    """`TripletTransform` that turns an unreadable record's marker into a bad example (its
    random stream is its position's, so the other examples' draws do not change)."""

    def random_map(self, element, rng):
        index, raw = element
        bad = unreadable_example(int(index), raw)
        return bad if bad is not None else super().random_map(element, rng)

    __call__ = random_map


class _SkipBadIterator(grain.DatasetIterator):
    """Drops bad placeholders, logs them and tags each good example with how many it dropped
    just before it (summed by the loader in the main process, whatever the worker)."""

    def __init__(self, parent, max_bad):
        super().__init__(parent)
        self._max_bad, self._bad = max_bad, 0

    def __next__(self):
        skipped = 0
        while True:
            element = next(self._parent)
            if BAD_KEY not in element:
                element[SKIPPED_KEY] = np.int32(skipped)
                return element
            skipped, self._bad = skipped + 1, self._bad + 1
            log.warning("skipping bad example (record %d): %s", element["index"], element[BAD_KEY])
            if self._bad > self._max_bad:
                raise BadDataError(
                    f"{self._bad} bad examples in one worker exceed max_bad_records={self._max_bad}; "
                    f"last: record {element['index']}: {element[BAD_KEY]}")

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        self._parent.set_state(state)


class _SkipBadDataset(grain.IterDataset):
    def __init__(self, parent, max_bad):
        super().__init__(parent)
        self._max_bad = max_bad

    def __iter__(self):
        return _SkipBadIterator(self._parent.__iter__(), self._max_bad)


def _ensure_flags_parsed():
    """Grain's worker processes read absl flags; outside an absl app nothing parsed them, so
    mark them parsed (keeping every default) rather than fail."""
    from absl import flags  # only the workers' absl state is touched, and only here
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class _HostSlice(grain.MapDataset):
    """Host ``index`` of ``count``'s rows of every global batch of ``batch * count`` elements."""

    def __init__(self, parent, batch, index, count):
        super().__init__(parent)
        self._b, self._index, self._count = batch, index, count

    def __len__(self):
        return len(self._parent) // (self._b * self._count) * self._b

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.slice(i)
        j, k = divmod(i, self._b)  # global batch j, row k of this host's part
        return self._parent[(j * self._count + self._index) * self._b + k]

    def __str__(self):
        return f"HostSlice(batch={self._b}, host={self._index}/{self._count})"


def make_dataset(source, cfg, skip_batches=0, mix_source=None):
    """The grain IterDataset of batches (see the module docstring for the order of steps),
    starting after the first ``skip_batches`` global batches; with ``cfg.mix`` a fraction of
    the examples come from the procedural ``mix_source`` (data/world_mix.py)."""
    cfg.clip.validate()
    if cfg.batch_size < 1 or cfg.num_workers < 0 or cfg.max_bad_records < 0 or cfg.read_threads < 1:
        raise ValueError("batch_size and read_threads must be >= 1, num_workers and "
                         "max_bad_records >= 0")
    index, count = _host(cfg)
    procedural = getattr(source, "renders_examples", False)
    if cfg.augment.active and (procedural or (cfg.clip.kind == "latent" and not cfg.augment.cell)):
        raise ValueError("augmentation applies to records of pixels or of pixel-codec latents "
                         "(data.codec={'kind': 'pixel'}), not to "
                         + ("a procedural source" if procedural else "VAE latents"))
    if procedural:
        # a procedural source (data.wallpaper_source): element i is an example drawn from
        # (seed, i) already, so its order is its index (no shuffle, nothing to decode)
        ds = grain.MapDataset.source(source)
    else:
        ds = grain.MapDataset.source(make_source(source)).map_with_index(lambda i, x: (i, x))
    if len(ds) < cfg.batch_size * count:
        raise ValueError(f"{len(ds)} records cannot fill one global batch of "
                         f"{cfg.batch_size} x {count} hosts")
    if cfg.shuffle and not procedural:
        ds = ds.shuffle(seed=cfg.seed)
    ds = ds.repeat(cfg.num_epochs)
    if not procedural:
        ds = ds.random_map(_GuardedTransform(cfg.clip), seed=cfg.seed)
        if cfg.augment.active:  # before the curriculum: a same-scene reference is the target
            ds = ds.map_with_index(AugmentStage(cfg.augment, cfg.seed))
        if cfg.same_scene.same_scene:  # by global position: the step an example belongs to
            ds = ds.map_with_index(SameSceneStage(cfg.same_scene, cfg.seed))
    if cfg.mix.same_scene:
        if procedural or mix_source is None:
            raise ValueError("mixing (PipelineConfig.mix) takes records and a procedural "
                             "mix_source")
        ds = WorldMix(ds, mix_source, cfg.mix, cfg.seed)
    ds = _HostSlice(ds, cfg.batch_size, index, count)[skip_batches * cfg.batch_size:]
    read = grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.read_buffer_size)
    it = _SkipBadDataset(ds.to_iter_dataset(read), cfg.max_bad_records)
    it = it.batch(cfg.batch_size, drop_remainder=cfg.drop_remainder)
    if cfg.num_workers > 0:
        _ensure_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=cfg.num_workers, per_worker_buffer_size=cfg.worker_buffer_size))
    return it


class TripletLoader:
    """Iterator of batches with bad-data accounting and checkpointable state (JSON bytes)."""

    def __init__(self, dataset, cfg):
        self._dataset, self.cfg = dataset, cfg
        self._it = iter(dataset)
        self.bad_records = 0  # examples skipped so far on this host

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._it)
        skipped = int(np.sum(batch.pop(SKIPPED_KEY)))
        if skipped:
            self.bad_records += skipped
            log.warning("skipped %d bad example(s) (%d so far on this host)", skipped, self.bad_records)
        if self.bad_records > self.cfg.max_bad_records:
            raise BadDataError(f"{self.bad_records} bad examples exceed max_bad_records="
                               f"{self.cfg.max_bad_records}; see the warnings for which and why")
        return batch

    def get_state(self):
        """The iterator's position as JSON bytes (grain's DataLoader iterator protocol)."""
        return json.dumps({"version": STATE_VERSION, "grain": self._it.get_state(),
                           "bad_records": self.bad_records}).encode()

    def set_state(self, state):
        """Restores a position from `get_state` bytes."""
        state = json.loads(state)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')} is not {STATE_VERSION}")
        self._it.set_state(state["grain"])
        self.bad_records = state["bad_records"]

    def start_prefetch(self):
        """Starts the worker processes early (called by grain's orbax handler after restore)."""
        if hasattr(self._it, "start_prefetch"):
            self._it.start_prefetch()

    def close(self):
        """Stops the worker processes."""
        if hasattr(self._it, "close"):
            self._it.close()


def make_loader(source, cfg, skip_batches=0, mix_source=None):
    """A `TripletLoader` over `source` (see `make_source`) with config `cfg`, starting at global
    batch ``skip_batches`` (how a run resumes under another process count), mixing in
    ``mix_source`` as ``cfg.mix`` says."""
    return TripletLoader(make_dataset(source, cfg, skip_batches, mix_source), cfg)


def global_batch(batch, mesh, data_axes=None):
    """Places this host's batch on `mesh` as global jax.Arrays sharded over the batch axes.

    The batch axis is sharded like the model's activations (``camclone_jax.sharding``: the
    "data" and "fsdp" axes of the mesh that exist), or over ``data_axes`` when given. Numeric
    fields become arrays of global shape [process_count * B, ...]; string fields (caption)
    stay host-local numpy arrays.
    """
    import jax  # only here and in _host: Grain's worker processes import this module without it
    from jax.sharding import NamedSharding, PartitionSpec

    if data_axes is None:
        data_axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)

    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.dtype.kind in "USO":
            out[key] = value
            continue
        spec = PartitionSpec(data_axes, *([None] * (value.ndim - 1)))
        out[key] = jax.make_array_from_process_local_data(NamedSharding(mesh, spec), value)
    return out

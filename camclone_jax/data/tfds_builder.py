"""`camclone_triplets`: a tensorflow-datasets builder of triplet records (array_record format).

    import tensorflow_datasets as tfds
    from camclone_jax.data import tfds_builder
    builder = tfds_builder.CamcloneTriplets(
        data_dir=DATA_DIR, config=tfds_builder.source_config("DIR/CamCloneDataset.csv", frames=81))
    builder.download_and_prepare()
    source = builder.as_data_source()["train"]  # or tfds.data_source("camclone_triplets:1.0.0/<name>",
                                                #   data_dir=DATA_DIR) after importing this module
    loader = pipeline.make_loader(source, cfg)  # the same Grain pipeline as for ArrayRecord files

The source is a `CamCloneDataset.csv` (rows converted as `prepare.py` does: bad rows are
rejected with a logged reason and listed in the dataset description's metadata count) or a
folder of triplet ArrayRecord files (e.g. the synthetic generator's DIR/records or prepare's
OUT; a record that cannot be read, a corrupt chunk, is logged with its file and position and
skipped, the others keep their FILE:INDEX keys). Features are Tensor/Text only, so no TensorFlow is needed to build or read it:
  record      bytes (a scalar object Tensor): the triplet record of records.py, mp4 or latent
  caption     Text
  kind        Text ("mp4" or "latent")
  num_frames, height, width   int32 scalars (of the source videos)
Only the "train" split exists (the paper trains on all triplets).
"""
import dataclasses
import logging
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from camclone_jax.data import prepare, records

log = logging.getLogger(__name__)


@dataclasses.dataclass
class CamcloneTripletsConfig(tfds.core.BuilderConfig):
    """A source: `path` is a CamCloneDataset.csv or a folder of ArrayRecord triplet files."""
    path: str = ""
    min_frames: int = 1


def source_config(path, frames=1, name=None):
    """A builder config for `path` (CSV: rows with videos shorter than `frames` are rejected)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no CSV file or record folder at {path}")
    folder = os.path.dirname(path) if path.endswith(".csv") else path
    name = name or os.path.basename(os.path.normpath(folder))
    return CamcloneTripletsConfig(name=name.replace("-", "_").lower(), path=os.path.abspath(path),
                                  min_frames=frames, description=f"triplets from {path}")


class CamcloneTriplets(tfds.core.GeneratorBasedBuilder):
    """Camera-clone triplets (target, camera reference, content reference, caption)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Triplet records of schema version 1 as one bytes feature."}
    BUILDER_CONFIGS = []
    # tfds finds a builder's code through importlib_resources, which is an optional dependency
    # that may be absent; this file is the code path (no checksums file sits next to it).
    code_path = epath.Path(os.path.abspath(__file__))

    def __init__(self, *, file_format="array_record", **kwargs):
        """As tfds builders; the file format defaults to array_record (needs no TensorFlow)."""
        super().__init__(file_format=file_format, **kwargs)

    def _info(self):
        return self.dataset_info_from_configs(
            description=__doc__.split("\n")[0],
            features=tfds.features.FeaturesDict({
                "record": tfds.features.Tensor(shape=(), dtype=np.object_),
                "caption": tfds.features.Text(),
                "kind": tfds.features.Text(),
                "num_frames": tfds.features.Tensor(shape=(), dtype=np.int32),
                "height": tfds.features.Tensor(shape=(), dtype=np.int32),
                "width": tfds.features.Tensor(shape=(), dtype=np.int32)}),
            homepage="https://github.com/KwaiVGI/CamCloneMaster")

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is local
        if not self.builder_config.path:
            raise ValueError("camclone_triplets needs a source: config=source_config(path)")
        return {"train": self._generate_examples(self.builder_config.path)}

    def _generate_examples(self, path):
        if path.endswith(".csv"):
            raws = _csv_records(path, self.builder_config.min_frames)
        else:
            raws = _folder_records(path)
        for key, raw in raws:
            rec = records.decode_triplet(raw)  # a corrupt record stops the build, naming it
            yield key, {"record": raw, "caption": rec["caption"], "kind": rec["kind"],
                        "num_frames": rec["num_frames"], "height": rec["height"],
                        "width": rec["width"]}


def _record_files(folder):
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".array_record"))
    if not files:
        raise FileNotFoundError(f"no .array_record files in {folder}")
    return files


def _folder_records(folder):
    """(key, record bytes) per readable record of the folder's files, keyed FILE:INDEX; an
    unreadable one (a corrupt chunk) is logged with its file and position and skipped, so the
    keys, and the order, of all the others are kept."""
    skipped = []
    for f in _record_files(folder):
        name, bad = os.path.basename(f), set()

        def report(index, message, bad=bad):
            bad.add(index)
            skipped.append(message)
            log.warning("camclone_triplets: skipping %s", message)

        i = 0
        for raw in records.read_records(f, on_error=report):  # reports come before later records
            while i in bad:
                i += 1
            yield f"{name}:{i}", raw
            i += 1
    if skipped:
        log.warning("camclone_triplets: %d unreadable record(s) skipped in %s", len(skipped), folder)


def _csv_records(csv_path, min_frames):
    """(key, record bytes) per usable CSV row; rejected rows are logged with their reason."""
    rows = prepare.read_csv(csv_path)
    base, name, cache = os.path.dirname(os.path.abspath(csv_path)), os.path.basename(csv_path), {}
    rejected = 0
    for r, row in enumerate(rows):
        try:
            yield f"row{r:09d}", prepare.row_record(row, r, base, min_frames, name, cache)
        except prepare.Rejected as e:
            rejected += 1
            log.warning("camclone_triplets: CSV row %d rejected (%s): %s", r, e.reason, e.detail)
    log.info("camclone_triplets: %d rows, %d rejected", len(rows), rejected)

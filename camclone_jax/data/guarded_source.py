"""A random-access source that turns unreadable records into bad examples, not a crash.

A corrupt ArrayRecord chunk (bytes flipped on disk: "chunk data hash mismatch") passes the
start-up check of a file, and reading that one record raises. Since the data order is fixed,
every resume would raise at the same step. ``GuardedSource`` wraps a source (grain's
``ArrayRecordDataSource`` over our files, or a TFDS data source) so that such a read returns an
``Unreadable`` marker naming the file and the record's position in it; the pipeline's transform
turns the marker into a bad example, which is logged, counted against ``max_bad_records`` and
skipped like any corrupt record. Every other record keeps its index, position and random
stream, so the order of everything else is unchanged.
"""

from __future__ import annotations

import bisect
import dataclasses
import os

from camclone_jax.data.transforms import bad_example


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """What a read of an unreadable record returns: where it is and what the reader said."""
    reason: str


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def tfds_files(source) -> list[tuple[str, int, int]] | None:
    """(file, first record read, records read) per shard of a TFDS data source, or None."""
    info, split = getattr(source, "dataset_info", None), getattr(source, "split", None)
    if info is None or split is None:
        return None
    try:
        # heavy (seconds to import): only sources built by the TFDS builder need it
        from tensorflow_datasets.core.data_sources import base
        out = []
        for fi in base.file_instructions(info, split):
            take = fi.take if fi.take >= 0 else fi.examples_in_shard - fi.skip
            out.append((str(fi.filename), int(fi.skip), int(take)))
        return out
    except Exception:  # noqa: BLE001 (another tfds layout: the index alone is named)
        return None


class GuardedSource:
    """``source`` with unreadable records returned as ``Unreadable`` (see the module docstring).

    ``files``: (path, first record, number of records) per file in index order, to name the
    file and the position of a bad record; without it only the global index is named."""

    def __init__(self, source, files=None, name=""):
        self._source, self._files = source, list(files) if files else None
        self._name = name or type(source).__name__
        self._starts = []
        total = 0
        for _, _, n in self._files or ():
            self._starts.append(total)
            total += n

    def __len__(self):
        return len(self._source)

    def where(self, index: int) -> str:
        """'FILE, record J' for global record ``index`` (or 'record I of SOURCE')."""
        if not self._files:
            return f"record {index} of {self._name}"
        k = bisect.bisect_right(self._starts, index) - 1
        path, first, _ = self._files[k]
        return f"{os.path.basename(path)}, record {first + index - self._starts[k]} ({path})"

    def __getitem__(self, index):
        try:
            return self._source[index]
        except Exception as e:  # noqa: BLE001 (riegeli raises RuntimeError, tfds may wrap it)
            return Unreadable(f"unreadable record at {self.where(int(index))}: {_one_line(e)}")

    def __repr__(self):
        return f"GuardedSource({self._name})"


def unreadable_example(index: int, raw):
    """The bad example for an ``Unreadable`` raw record, else None."""
    return bad_example(index, raw.reason) if isinstance(raw, Unreadable) else None

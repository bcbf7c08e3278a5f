"""The wallpaper world mixed into a stream of records: a curriculum aid for rendered worlds.

Camera reading emerges on a CPU in the wallpaper world (data/wallpaper_source.py) and, once
there, carries over to the rendered world's held-out references; fine-tuned on rendered records
alone, a tiny model loses it while it learns the new appearance (docs/results.md). Mixing keeps
it exercised: element i of the global example stream is, with probability ``schedule.at(i //
examples_per_step)`` drawn from (seed, i) alone, example i of the procedural source instead of
the record the stream holds there, so the mix is the same on every host count and on resume.
The schedule is a ``Curriculum``: its ``same_scene`` is the starting fraction, decaying
linearly to 0 over ``same_scene_steps`` (0: constant).

A wallpaper example is made to look like a latent record's: it keeps the fields the first
record has (an empty caption added, ``in_first_view`` dropped), and records with a field the
world does not make are refused by name; the world's geometry and codec must be the records'
(``training.data.wallpaper_mix_source`` checks them).
"""
from __future__ import annotations

import grain
import numpy as np

from camclone_jax.data.curriculum import Curriculum

_MIX_STREAM = 13  # the draw's stream, apart from the curriculum's (7) and the augmentation's


class WorldMix(grain.MapDataset):
    """Element i: example i of ``source`` with the schedule's probability, else ``parent[i]``."""

    def __init__(self, parent, source, schedule: Curriculum, seed: int):
        super().__init__(parent)
        self._source, self._schedule, self._seed = source, schedule, seed
        first = next((e for e in (parent[i] for i in range(min(len(parent), 8)))
                      if "target" in e), None)  # bad-example placeholders have no target
        made = set(source[0]) | {"caption"}
        self._keys = set(first) if first is not None else made
        missing = sorted(self._keys - made)
        if missing:
            raise ValueError(f"the records have {missing}, which the mixed-in world does not "
                             "make (re-encode them with i2v latents and without cached text, "
                             "or train without data.wallpaper_mix)")

    def __len__(self):
        return len(self._parent)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.slice(i)
        step = i // self._schedule.examples_per_step
        if np.random.default_rng([self._seed, _MIX_STREAM, i]).random() < self._schedule.at(step):
            example = dict(self._source[i % len(self._source)], caption="")
            return {k: v for k, v in example.items() if k in self._keys}
        return self._parent[i]

    def __str__(self):
        return f"WorldMix({self._schedule}, seed={self._seed})"

"""The same-scene curriculum: early camera references that show the target itself.

Camera reading emerges on a CPU when the model first learns to copy (the clone world's finding,
docs/results.md): at step s a training example's camera reference is replaced by its own target
with probability ``same_scene * max(0, 1 - s / same_scene_steps)`` (constant ``same_scene`` when
``same_scene_steps`` is 0). In the procedural clone world (data/wallpaper_source.py) the
reference films the target's own wallpaper; on records (data/pipeline.py) it is the target's
video: the generator's (same location, same trajectory) pair. Steps count global batches, so
the draw does not depend on the number of hosts.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Curriculum:
    """How often, and until when, a camera reference is the target's own scene."""

    same_scene: float = 0.0
    same_scene_steps: int = 0
    examples_per_step: int = 1  # the global batch: example i belongs to step i // this

    def __post_init__(self):
        if not 0.0 <= self.same_scene <= 1.0 or self.same_scene_steps < 0:
            raise ValueError(f"same_scene must be in [0, 1] and same_scene_steps >= 0, got "
                             f"{self.same_scene}, {self.same_scene_steps}")

    def at(self, step: int) -> float:
        """The probability that a camera reference of ``step`` films the target's own scene."""
        if not self.same_scene_steps:
            return self.same_scene
        return self.same_scene * max(0.0, 1.0 - step / self.same_scene_steps)


class SameSceneStage:
    """Grain map-with-index stage over the global example stream: example i (of step
    i // examples_per_step) gets its target as camera reference with the curriculum's
    probability, drawn from (seed, i) alone."""

    def __init__(self, curriculum: Curriculum, seed: int):
        self.curriculum, self.seed = curriculum, seed

    def __call__(self, index: int, example: dict) -> dict:
        if "target" not in example:  # a bad-example placeholder passes through
            return example
        step = index // self.curriculum.examples_per_step
        if np.random.default_rng([self.seed, 7, index]).random() < self.curriculum.at(step):
            example = dict(example, camera_ref=example["target"].copy())  # [F, ...] the target
        return example

    def __repr__(self):
        return f"SameSceneStage({self.curriculum}, seed={self.seed})"

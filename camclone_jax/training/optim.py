"""A masked optimizer from (regex over param paths, rule) pairs, big_vision style.

  rules = [("self_attn", "train"), (".*", None)]     # the paper: only the 3D attention trains

Each parameter takes the first rule whose regex matches (``re.search``) its path
("blocks/self_attn/q/kernel"); every parameter must be matched (an error names the ones that are
not). A rule is ``None`` (frozen: no update and no optimizer state), ``"train"`` (the base
learning-rate schedule), or a float multiplying the base learning rate for that group.
Frozen parameters get ``optax.set_to_zero`` inside ``optax.multi_transform``, so Adam moments
exist only for trainable leaves.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import optax

from camclone_jax.utils import flatten_params, unflatten_params

Rule = tuple[str, Any]


def label_params(params, rules: Sequence[Rule]) -> dict:
    """Tree of group labels ("frozen" or "group_<i>") shaped like ``params``."""
    compiled = [(re.compile(pattern), rule) for pattern, rule in rules]
    labels, unmatched = {}, []
    for path in flatten_params(params):
        index = next((i for i, (regex, _) in enumerate(compiled) if regex.search(path)), None)
        if index is None:
            unmatched.append(path)
            continue
        labels[path] = "frozen" if compiled[index][1] is None else f"group_{index}"
    if unmatched:
        raise ValueError(f"{len(unmatched)} params match no optimizer rule, e.g. {unmatched[:10]}; "
                         "end the rules with ('.*', None) to freeze the rest")
    return unflatten_params(labels)


def trainable_mask(params, rules: Sequence[Rule]) -> dict:
    """Tree of bools: True where a parameter trains."""
    return jax.tree_util.tree_map(lambda label: label != "frozen", label_params(params, rules))


def warmup_cosine(base_lr: float, warmup_steps: int, total_steps: int, end_factor: float = 0.0):
    """Linear warmup then cosine decay to ``end_factor * base_lr`` (constant if total_steps=0)."""
    if total_steps <= 0:
        return optax.join_schedules([optax.linear_schedule(0.0, base_lr, max(warmup_steps, 1)),
                                     optax.constant_schedule(base_lr)], [warmup_steps])
    return optax.warmup_cosine_decay_schedule(0.0, base_lr, max(warmup_steps, 1),
                                              max(total_steps, warmup_steps + 1),
                                              end_value=end_factor * base_lr)


def make_optimizer(params, rules: Sequence[Rule], schedule, *, b1: float = 0.9,
                   b2: float = 0.999, weight_decay: float = 0.0, clip_norm: float | None = 1.0,
                   eps: float = 1e-8) -> optax.GradientTransformation:
    """AdamW (Adam when weight_decay=0) over the trainable groups, nothing for frozen params.

    ``schedule``: a float or an optax schedule for the base learning rate. Gradient clipping by
    global norm is computed over the trainable parameters only.
    """
    labels = label_params(params, rules)
    used = set(jax.tree_util.tree_leaves(labels))
    transforms = {"frozen": optax.set_to_zero()}
    for i, (_, rule) in enumerate(rules):
        if f"group_{i}" not in used:
            continue
        scale = 1.0 if rule == "train" else rule
        if not isinstance(scale, (int, float)):
            raise ValueError(f"optimizer rule {rules[i]!r}: expected None, 'train' or a float")
        lr = (lambda step, s=scale: s * schedule(step)) if callable(schedule) else scale * schedule
        transforms[f"group_{i}"] = optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    tx = optax.multi_transform(transforms, labels)
    if clip_norm:
        mask = jax.tree_util.tree_map(lambda label: label != "frozen", labels)
        tx = optax.chain(optax.masked(optax.clip_by_global_norm(clip_norm), mask), tx)
    return tx

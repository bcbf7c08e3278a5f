"""What every model here shares: the config base and the plain-param helpers.

Configs (``DiTConfig``, ``WanVAEConfig``, ``T5Config``, ``CLIPVisionConfig``, ``DinoConfig``,
``RaftConfig``) are frozen dataclasses deriving from ``ConfigBase``: ``to_dict`` (JSON-ready,
tuples as lists), ``from_dict`` (its inverse; unknown keys are one error naming them all),
``replace`` and ``from_keys`` (from a peer library's config dict by a key table, which is how
each ``from_transformers`` reads transformers' config.json).

Params are plain nested dicts of arrays (no Flax boxes). ``init_plain`` / ``shapes_plain`` /
``specs_plain`` turn a model's ``init_boxed(config, rng) -> boxed params`` into random params,
shapes without memory and logical axis names; ``prepare_params`` puts params on the device in
the config's ``param_dtype`` once, before many encoder calls.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp


def _lists(value):
    """Tuples (nested too) -> lists, for JSON."""
    return [_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value):
    """Lists (nested too) -> tuples, for frozen (hashable) configs."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (tuple, list)) else value


class ConfigBase:
    """Dict round trip and peer-config reading for a frozen dataclass config."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (tuples as lists) that ``from_dict`` reads back."""
        return {k: _lists(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Inverse of ``to_dict`` (lists back to tuples); unknown keys are an error naming them."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {unknown}")
        return cls(**{k: _tuples(v) for k, v in d.items()})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_keys(cls, peer: Mapping[str, Any], keys: Mapping[str, Any], overrides: Mapping):
        """``cls`` from a peer's config dict: ``keys`` maps our field to the peer's key (it must
        be there) or to (key, default); ``overrides`` win."""
        kwargs = {}
        for field, key in keys.items():
            if isinstance(key, tuple):
                kwargs[field] = peer.get(key[0], key[1])
            else:
                kwargs[field] = peer[key]
        return cls(**{**kwargs, **overrides})


# ----------------------------------------------------------------------------- plain params
def init_plain(init_boxed, config, rng: jax.Array | int = 0) -> dict:
    """Randomly initialised params of ``init_boxed`` as a plain nested dict."""
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    return nn.meta.unbox(jax.jit(init_boxed, static_argnums=0)(config, rng))


def shapes_plain(init_boxed, config) -> dict:
    """``jax.ShapeDtypeStruct`` tree of the params, computed without allocating them."""
    return nn.meta.unbox(jax.eval_shape(functools.partial(init_boxed, config),
                                        jax.random.PRNGKey(0)))


def specs_plain(init_boxed, config) -> dict:
    """Logical axis names of every param (e.g. ('layers', 'embed', 'heads')), same tree."""
    return nn.get_partition_spec(jax.eval_shape(functools.partial(init_boxed, config),
                                                jax.random.PRNGKey(0)))


def prepare_params(config, params) -> dict:
    """Params as device arrays of ``config.param_dtype`` (a no-op for params already so); call
    once before encoding many batches, so host weights are not copied on every call."""
    return jax.tree_util.tree_map(lambda p: jnp.asarray(p, config.param_dtype), params)

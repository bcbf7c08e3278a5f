"""Device mesh and logical-axis sharding rules.

The mesh has four named axes, sized from config, one of them may be -1 (all the remaining
devices): ``data`` (pure data parallel), ``fsdp`` (data parallel with params, grads and
optimizer state sharded), ``context`` (sequence), ``tensor`` (heads and FFN width). Model code
names logical axes only (see models/layers.py and models/blocks.py); ``DEFAULT_RULES`` maps
them onto the mesh:

  params       layers -> -, embed -> fsdp, heads/mlp -> tensor, in/mod/kv -> -
  activations  batch -> (data, fsdp), length -> context, act_embed -> -
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "context", "tensor")
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", "context"),
    ("act_embed", None),
    ("layers", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("in", None),
    ("mod", None),
)


def mesh_shape(axes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Resolves the sizes of ``axes`` (missing = 1, one -1 = the rest) for ``num_devices``."""
    unknown = sorted(set(axes) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"unknown mesh axes {unknown}; the mesh axes are {MESH_AXES}")
    sizes = {name: int(axes.get(name, 1)) for name in MESH_AXES}
    auto = [n for n, s in sizes.items() if s == -1]
    if len(auto) > 1 or any(s == 0 or s < -1 for s in sizes.values()):
        raise ValueError(f"mesh sizes {sizes}: at most one axis may be -1, the rest positive")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if auto:
        if num_devices % fixed:
            raise ValueError(f"mesh sizes {sizes} do not divide {num_devices} devices")
        sizes[auto[0]] = num_devices // fixed
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(f"mesh sizes {sizes} use {math.prod(sizes.values())} devices, "
                         f"but {num_devices} are present")
    return sizes


def make_mesh(axes: Mapping[str, int], devices: Sequence | None = None) -> Mesh:
    """A ``Mesh`` over ``devices`` (default: all) with the four named axes."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(axes, len(devices))
    grid = np.array(devices).reshape([sizes[n] for n in MESH_AXES])
    return Mesh(grid, MESH_AXES)


def use_mesh(mesh: Mesh):
    """Context manager making ``mesh`` the ambient mesh (``jax.set_mesh`` where it exists,
    else the legacy ``with mesh:``), for sharding constraints given as bare specs."""
    return jax.set_mesh(mesh) if hasattr(jax, "set_mesh") else mesh


def logical_sharding(logical_specs, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedSharding tree for a tree of logical PartitionSpecs (e.g. models.params.logical_specs)."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
    """Sharding of a [batch, ...] input: batch over the data-parallel axes, the rest replicated."""
    spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (ndim - 1), rules)
    return NamedSharding(mesh, PartitionSpec(*spec))

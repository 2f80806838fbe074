"""Device mesh and placements: a 1-D data-parallel mesh over all devices.

Parameters and optimizer state are replicated; batches are split along their leading axis.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A ('data',) mesh over the first ``num_devices`` devices (all by default)."""
    count = jax.device_count() if num_devices is None else num_devices
    if count > jax.device_count():
        raise ValueError(f"Asked for {count} devices but only {jax.device_count()} exist.")
    return jax.make_mesh(
        (count,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:count]
    )


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def put_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Host batch (leading axis divisible by the mesh size) -> sharded global arrays."""
    size = mesh.devices.size
    for name, value in batch.items():
        if value.shape[0] % size:
            raise ValueError(
                f"Batch field {name!r} has leading size {value.shape[0]}, not divisible by the "
                f"{size} devices of the mesh."
            )
    return jax.device_put(batch, batch_sharding(mesh))


def put_replicated(tree, mesh):
    return jax.device_put(tree, replicated(mesh))

"""Device mesh and placements: a 2-D ('data', 'fsdp') mesh over every device of every process.

Batches are split along their leading axis over both mesh axes (every device holds B / devices
requests). Parameters and optimizer state follow :func:`state_sharding`: an array with at least
``fsdp_min_size`` elements is split along its largest dimension divisible by the 'fsdp' size,
everything else (small arrays, scalars) is replicated. Inside the one compiled train step XLA
all-gathers the split parameters where they are used and reduce-scatters their gradients, so
the step function itself knows nothing about the mesh.

Multi-host: every process calls the same functions with the same global mesh. Training batches
are process-local (each process reads its own rows, :func:`put_local_batch`); evaluation batches
and freshly initialised states are the same on every process (:func:`put_batch`,
:func:`put_tree`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
# 16384 float32 = 64 KiB: below this the all-gather costs more than the memory it saves.
FSDP_MIN_SIZE = 2**14


def resolve_mesh_shape(
    data: int, fsdp: int, num_devices: int, names: Sequence[str] = ("data", "fsdp")
) -> tuple[int, int]:
    """(data, fsdp) sizes with at most one of them -1 or 0 meaning "every remaining device".

    Raises:
      ValueError naming the field (``names``) of an impossible size, or both fields when their
        product is not ``num_devices``.
    """
    data_name, fsdp_name = names
    for name, value in ((data_name, data), (fsdp_name, fsdp)):
        if value < -1:
            raise ValueError(
                f"{name} must be > 0, or -1 / 0 for every remaining device; got {value}"
            )
    auto = [name for name, value in ((data_name, data), (fsdp_name, fsdp)) if value <= 0]
    if len(auto) == 2:
        raise ValueError(
            f"At most one of {data_name} and {fsdp_name} may be -1 / 0 (every remaining "
            f"device); got {data_name}={data}, {fsdp_name}={fsdp}."
        )
    if auto:
        fixed = fsdp if data <= 0 else data
        if num_devices % fixed:
            raise ValueError(
                f"{data_name if data > 0 else fsdp_name} ({fixed}) must divide the number of "
                f"devices ({num_devices}) when {auto[0]} is -1 / 0."
            )
        data, fsdp = (num_devices // fixed, fsdp) if data <= 0 else (data, num_devices // fixed)
    if data * fsdp != num_devices:
        raise ValueError(
            f"{data_name} ({data}) x {fsdp_name} ({fsdp}) = {data * fsdp} devices, but there are "
            f"{num_devices}; make the product equal the device count (or set one of them to -1)."
        )
    return data, fsdp


def make_mesh(num_devices: int | None = None, data: int = -1, fsdp: int = 1) -> jax.sharding.Mesh:
    """A ('data', 'fsdp') mesh over the first ``num_devices`` devices (all by default).

    With the defaults it is a pure data-parallel mesh (fsdp = 1). Over all devices the device
    order is left to ``jax.make_mesh`` (topology-aware on TPU; process-major elsewhere, so each
    process owns a contiguous block of the batch).
    """
    count = jax.device_count() if num_devices is None else num_devices
    if count > jax.device_count():
        raise ValueError(f"Asked for {count} devices but only {jax.device_count()} exist.")
    shape = resolve_mesh_shape(data, fsdp, count)
    devices = None if count == jax.device_count() else jax.devices()[:count]
    return jax.make_mesh(
        shape, BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices
    )


def mesh_from_config(mesh_config) -> jax.sharding.Mesh:
    """The mesh of a ``configs.MeshConfig`` over every device of every process."""
    return make_mesh(None, mesh_config.data, mesh_config.fsdp)


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh) -> NamedSharding:
    """Leading (batch) axis split over every device of the mesh, the rest unsplit."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def fsdp_spec(shape: Sequence[int], fsdp_size: int, min_size: int = FSDP_MIN_SIZE) -> PartitionSpec:
    """PartitionSpec of one parameter-like array of ``shape`` on a mesh with 'fsdp' size
    ``fsdp_size``: 'fsdp' on the largest dimension divisible by it (the first of equal ones)
    when the array has at least ``min_size`` elements, otherwise fully replicated."""
    if fsdp_size <= 1 or math.prod(shape) < min_size:
        return PartitionSpec()
    divisible = [axis for axis, size in enumerate(shape) if size % fsdp_size == 0]
    if not divisible:
        return PartitionSpec()
    axis = max(divisible, key=lambda a: (shape[a], -a))
    return PartitionSpec(*(FSDP_AXIS if a == axis else None for a in range(len(shape))))


def state_sharding(tree: Any, mesh, min_size: int = FSDP_MIN_SIZE) -> Any:
    """NamedSharding tree for a (possibly abstract, ``jax.eval_shape``) state, params or
    optimizer-state tree: :func:`fsdp_spec` for every array leaf. Adam's moments have their
    parameter's shape and so get its sharding; step counters stay replicated."""
    fsdp_size = mesh.shape[FSDP_AXIS]
    return jax.tree_util.tree_map(
        lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), fsdp_size, min_size)), tree
    )


def _check_rows(batch: dict, parts: int, what: str) -> None:
    for name, value in batch.items():
        if value.shape[0] % parts:
            raise ValueError(
                f"Batch field {name!r} has leading size {value.shape[0]}, not divisible by the "
                f"{parts} {what}."
            )


def put_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Global host batch, the same on every process (leading axis divisible by the mesh size)
    -> global arrays split over the batch axes. Used for evaluation batches."""
    _check_rows(batch, mesh.devices.size, "devices of the mesh")
    shard = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(batch, shard)
    # global_shape == local shape: every process holds the whole batch and each device picks
    # its rows (no cross-process equality check, unlike device_put).
    return {
        name: jax.make_array_from_process_local_data(shard, value, value.shape)
        for name, value in batch.items()
    }


def put_local_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """This process's rows of a training batch ([B / processes, ...]) -> global arrays
    [B, ...] split over the batch axes. On one process it equals :func:`put_batch`."""
    _check_rows(batch, len(mesh.local_devices), "local devices of the mesh")
    if jax.process_count() == 1:
        return jax.device_put(batch, batch_sharding(mesh))
    shard = batch_sharding(mesh)
    return {
        name: jax.make_array_from_process_local_data(shard, value) for name, value in batch.items()
    }


def put_tree(tree: Any, shardings: Any) -> Any:
    """Places a tree whose host values are the same on every process (e.g. a state initialised
    eagerly from the same key) into ``shardings`` (a tree of the same structure); leaves that
    are already global arrays (e.g. frozen parameters placed earlier) are resharded."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def put(value, shard):
        if isinstance(value, jax.Array) and not value.is_fully_addressable:
            return jax.device_put(value, shard)
        # device_put would all-gather every value to check that the processes agree.
        host = np.asarray(value)
        return jax.make_array_from_process_local_data(shard, host, host.shape)

    return jax.tree_util.tree_map(put, tree, shardings)


def put_replicated(tree, mesh):
    return jax.device_put(tree, replicated(mesh))


def process_is_chief() -> bool:
    """True on the process that writes logs, metrics and result files (process 0)."""
    return jax.process_index() == 0

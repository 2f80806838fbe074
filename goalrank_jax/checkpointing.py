"""Orbax checkpoints of a train state together with the data-iterator state.

Each stage of a run keeps its own ``CheckpointManager`` directory. Orbax writes a checkpoint into
a temporary directory and renames it when complete, so an interrupted save never replaces the
latest complete checkpoint; ``latest_step`` only sees finished ones. Temporary directories left
by a killed process are removed when the directory is opened again, and old checkpoints are
first renamed into ``.deleted/`` (one atomic rename) and only then removed, so a process killed
while deleting never leaves a half-deleted step directory behind.

Nothing is read through pickle: arrays are tensorstore (zarr / OCDBT) files, the tree structure
and the data state are JSON.

Several processes (multi-host): every process calls ``save`` and ``restore`` with the same step,
on a directory they all see. Orbax writes each array's shards from the process that holds them
and the metadata and JSON data from process 0. It restores into the shardings of the abstract
state, so a checkpoint written on one mesh or process count restores on another.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

TRASH_DIR = ".deleted"


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored: it does not match the configured state, or it is
    truncated or corrupted. The message names the directory, the step and the problem."""


def _registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item, args in (
        ("state", ocp.args.StandardSave),
        ("state", ocp.args.StandardRestore),
        ("data", ocp.args.JsonSave),
        ("data", ocp.args.JsonRestore),
    ):
        registry.add(item, args)
    return registry


class Checkpointer:
    """Save / restore ``(state, data_state)`` pairs under ``directory``."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=True,
                cleanup_tmp_directories=True,
                todelete_subdir=TRASH_DIR,
            ),
            handler_registry=_registry(),
        )
        self._empty_trash()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict | None = None) -> None:
        # Orbax waits for the previous save before starting one anyway; once it has finished,
        # the steps it retired can leave the trash.
        self.wait()
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state or {}),
            ),
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restores into the structure, shapes, dtypes and shardings of ``abstract_state``
        (e.g. from ``jax.eval_shape``).

        Raises CheckpointError naming the first differing arrays when the saved state does not
        match ``abstract_state`` (another model size, variant or optimizer), and naming the step
        directory when it cannot be read (truncated or corrupted files).
        """
        where = self._step_dir(step)
        problems = _differences(_leaf_specs(abstract_state), self._saved_specs(step))
        if problems:
            shown = "; ".join(problems[:3])
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise CheckpointError(
                f"checkpoint {where} does not match the configured model (different size, "
                f"variant or optimizer?): {shown}{more}"
            )
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=ocp.args.JsonRestore(),
                ),
            )
        except Exception as err:  # tensorstore and orbax raise many types for damaged files
            raise self._corrupted(step, err) from err
        return restored.state, dict(restored.data or {})

    def read_data(self, step: int) -> dict:
        """The JSON data item saved with ``step`` (without restoring the state)."""
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(data=ocp.args.JsonRestore())
            )
        except Exception as err:
            raise self._corrupted(step, err) from err
        return dict(restored.data or {})

    def wait(self) -> None:
        self._manager.wait_until_finished()
        self._empty_trash()

    def close(self) -> None:
        self._manager.close()
        self._empty_trash()

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _saved_specs(self, step: int) -> dict[str, tuple]:
        try:
            metadata = self._manager.item_metadata(step)["state"]
        except Exception as err:
            raise self._corrupted(step, err) from err
        if metadata is None:
            raise self._corrupted(step, FileNotFoundError("no readable state metadata"))
        return _leaf_specs(getattr(metadata, "tree", metadata))

    def _corrupted(self, step: int, err: Exception) -> CheckpointError:
        detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        others = [s for s in self.all_steps() if s != step]
        hint = (
            f"delete {self._step_dir(step)} to resume from step {max(others)}"
            if others
            else f"delete {self._step_dir(step)} to start the stage again"
        )
        return CheckpointError(
            f"checkpoint {self._step_dir(step)} is truncated or corrupted "
            f"({type(err).__name__}: {detail}); {hint}"
        )

    def _empty_trash(self) -> None:
        if jax.process_index() == 0:
            shutil.rmtree(os.path.join(self.directory, TRASH_DIR), ignore_errors=True)


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _leaf_specs(tree: Any) -> dict[str, tuple]:
    """'params/Dense_0/kernel' -> (shape, dtype name) of every array leaf of a state, an
    abstract state or orbax's saved metadata tree (dataclass fields and dict keys alike)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(_key_name(k) for k in path): (tuple(leaf.shape), str(leaf.dtype))
        for path, leaf in leaves
        if hasattr(leaf, "shape")
    }


def _differences(expected: dict[str, tuple], saved: dict[str, tuple]) -> list[str]:
    """Differing arrays, in the order of the expected state's leaves (then extra saved ones)."""
    problems = []
    for name in [*expected, *(name for name in saved if name not in expected)]:
        if name not in saved:
            problems.append(f"{name} is not in the checkpoint")
        elif name not in expected:
            problems.append(f"saved array {name} is not in the configured state")
        elif saved[name] != expected[name]:
            problems.append(
                f"{name} is saved with shape {saved[name][0]} {saved[name][1]}, the configured "
                f"state has {expected[name][0]} {expected[name][1]}"
            )
    return problems


def abstract_like(state: Any) -> Any:
    """ShapeDtypeStruct tree (with shardings) of a concrete state, for restoring into."""
    return jax.tree_util.tree_map(
        lambda x: (
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
            if isinstance(x, jax.Array)
            else x
        ),
        state,
    )

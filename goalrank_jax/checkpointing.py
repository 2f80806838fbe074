"""Orbax checkpoints of a train state together with the data-iterator state.

Each stage of a run keeps its own ``CheckpointManager`` directory. Orbax writes a checkpoint into
a temporary directory and renames it when complete, so an interrupted save never replaces the
latest complete checkpoint; ``latest_step`` only sees finished ones.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Save / restore ``(state, data_state)`` pairs under ``directory``."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("state", "data"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict | None = None) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state or {}),
            ),
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restores into the structure, shapes, dtypes and shardings of ``abstract_state``
        (e.g. from ``jax.eval_shape``); raises ValueError naming the mismatch otherwise."""
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=ocp.args.JsonRestore(),
                ),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"Checkpoint {self.directory} step {step} does not match the configured model "
                f"(different size, variant or optimizer?): {err}"
            ) from err
        return restored.state, dict(restored.data or {})

    def read_data(self, step: int) -> dict:
        """The JSON data item saved with ``step`` (without restoring the state)."""
        restored = self._manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
        return dict(restored.data or {})

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


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

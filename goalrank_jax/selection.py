"""Model selection and the record of a stage's checkpoints.

A stage keeps ``<workdir>/<name>/checkpoints`` (its latest states, with the data iterator and
early-stopping counters) and, under ``select_metric``, ``<workdir>/<name>/best`` (the state of
its best validation evaluation). These functions read and write the second and read both for a
finished stage, without training.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from goalrank_jax import checkpointing


def restore_stage(*, name: str, workdir: str, state: Any, stage_config, log_fn=print) -> Any:
    """The state a finished stage returned (its selected state under ``select_metric``, else
    its final one), restored into ``state`` without training.

    Raises:
      checkpointing.CheckpointError: the stage has no checkpoint, has not finished, or its
        checkpoint does not fit ``state``.
    """
    ckpt, best_ckpt = checkpointers(name, workdir, stage_config)
    try:
        latest = ckpt.latest_step()
        done = latest is not None and (
            latest >= stage_config.num_steps or ckpt.read_data(latest).get("stopped_early")
        )
        if not done:
            raise checkpointing.CheckpointError(
                f"[{name}] has not finished under {workdir}: latest checkpoint "
                f"{latest} of {stage_config.num_steps} steps. Rerun the training command first."
            )
        state, _ = ckpt.restore(latest, checkpointing.abstract_like(state))
    except BaseException:
        if best_ckpt is not None:
            best_ckpt.close()
        raise
    finally:
        ckpt.close()
    return selected(state, best_ckpt, stage_config.select_metric, name, log_fn)


def stage_record(name: str, workdir: str, stage_config) -> dict:
    """How far a stage trained, from its checkpoints: ``steps`` (latest checkpoint),
    ``stopped_early``, ``train_seconds`` (wall seconds of training up to that checkpoint, summed
    over the invocations that ran it; None if unknown), and under model selection
    ``selected_step`` and ``selected_value``."""
    ckpt, best_ckpt = checkpointers(name, workdir, stage_config)
    try:
        latest = ckpt.latest_step()
        data = ckpt.read_data(latest) if latest else {}
        record = {
            "steps": int(latest or 0),
            "stopped_early": bool(data.get("stopped_early")),
            "train_seconds": data.get("train_seconds"),
        }
        if best_ckpt is not None and best_ckpt.latest_step() is not None:
            best = best_ckpt.latest_step()
            record["selected_step"] = int(best)
            record["selected_value"] = float(best_ckpt.read_data(best)["value"])
        return record
    finally:
        ckpt.close()
        if best_ckpt is not None:
            best_ckpt.close()


def checkpointers(name: str, workdir: str, stage_config):
    """The stage's checkpoint manager and, under model selection, that of its best state."""
    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, name, "checkpoints"), stage_config.keep_checkpoints
    )
    best_ckpt = None
    if stage_config.select_metric:
        best_ckpt = checkpointing.Checkpointer(os.path.join(workdir, name, "best"), max_to_keep=1)
    return ckpt, best_ckpt


def update_best(best_ckpt, step, state, results, metric, name, log_fn) -> bool:
    """Saves ``state`` as the stage's best when ``results[metric]`` beats the best so far;
    returns whether it did."""
    if metric not in results:
        raise ValueError(
            f"select_metric {metric!r} is not among the stage's validation metrics: "
            f"{sorted(results)}"
        )
    value = float(results[metric])
    latest = best_ckpt.latest_step()
    if latest is not None:
        best = best_ckpt.read_data(latest).get("value", -np.inf)
        if not value > best:
            return False
    best_ckpt.save(step, state, {"value": value, "metric": metric})
    best_ckpt.wait()
    log_fn(f"[{name}] new best {metric}={value:.4f} at step {step}")
    return True


def selected(state, best_ckpt, metric, name, log_fn):
    """The best saved state of the stage (model selection), or ``state`` itself."""
    if best_ckpt is None:
        return state
    try:
        step = best_ckpt.latest_step()
        if step is None:
            return state
        best, data = best_ckpt.restore(step, checkpointing.abstract_like(state))
        # The name the checkpoint recorded: a caller that restores a stage selected elsewhere
        # (the diagnosis of a comparison run) may not know which metric selected it.
        recorded = data.get("metric") or metric
        log_fn(f"[{name}] selected the state of step {step}: {recorded}={data['value']:.4f}")
        return best
    finally:
        best_ckpt.close()

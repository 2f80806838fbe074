"""The training loop of one stage: resume, steps, progress, metrics, evaluation, checkpoints."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from goalrank_jax import checkpointing, sharding
from goalrank_jax.metric_writer import MetricWriter


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def train_stage(
    *,
    name: str,
    workdir: str,
    state: Any,
    step_fn: Callable,
    dataset,
    stage_config,
    base_key: jax.Array,
    mesh,
    writer: MetricWriter,
    log_fn: Callable[[str], None] = print,
    eval_fn: Callable[[Any], dict[str, float]] | None = None,
) -> Any:
    """Runs (or resumes, or skips if finished) a stage and returns its final state.

    Args:
      name: stage name; checkpoints go to ``<workdir>/<name>/checkpoints`` and metric names are
        prefixed with it.
      state: freshly initialised, placed state (used as the restore target when resuming).
      step_fn: compiled ``(state, batch, key) -> (state, metrics)``.
      dataset: indexable grain dataset of training batches (see ``data.pipeline``).
      stage_config: ``StageConfig``.
      eval_fn: optional ``state -> metrics`` run every ``eval_every`` steps and at the end.
    """
    from goalrank_jax.data import pipeline

    num_steps = stage_config.num_steps
    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, name, "checkpoints"), stage_config.keep_checkpoints
    )
    select = stage_config.select_metric
    best_ckpt = (
        checkpointing.Checkpointer(os.path.join(workdir, name, "best"), max_to_keep=1)
        if select
        else None
    )
    iterator = pipeline.train_iterator(dataset)
    start_step = 0
    latest = ckpt.latest_step()
    if latest is not None:
        state, data_state = ckpt.restore(latest, checkpointing.abstract_like(state))
        if "iterator" in data_state:
            iterator.set_state(data_state["iterator"])
        start_step = int(latest)
        if start_step >= num_steps:
            log_fn(f"[{name}] finished earlier at step {start_step}; restored, skipping")
            ckpt.close()
            return _selected(state, best_ckpt, select, name, log_fn)
        log_fn(f"[{name}] resuming from checkpoint at step {start_step}")

    # An exception inside the loop still lets an in-flight asynchronous save finish and close,
    # so the latest checkpoint on disk is always complete.
    try:
        log_fn(f"[{name}] training steps {start_step + 1}..{num_steps}")
        pending: list[dict] = []
        window_start, window_steps = time.time(), 0
        batch_size = stage_config.batch_size
        for step in range(start_step, num_steps):
            batch = sharding.put_batch(next(iterator), mesh)
            state, metrics = step_fn(state, batch, base_key)
            pending.append(metrics)
            window_steps += 1
            done = step + 1
            if done % stage_config.log_every == 0 or done == num_steps:
                host = jax.device_get(pending)
                summary = {f"{name}/{k}": float(np.mean([m[k] for m in host])) for k in host[0]}
                pending = []
                elapsed = time.time() - window_start
                rate = window_steps / max(elapsed, 1e-9)
                summary[f"{name}/steps_per_second"] = rate
                summary[f"{name}/requests_per_second"] = rate * batch_size
                writer.write(done, summary)
                shown = " ".join(
                    f"{k.split('/', 1)[1]}={v:.4g}"
                    for k, v in summary.items()
                    if k.split("/", 1)[1]
                    in ("loss", "gro_loss", "sup_loss", "group_reward_mean", "skipped")
                )
                log_fn(
                    f"[{name}] step {done}/{num_steps} ({100 * done / num_steps:.1f}%) "
                    f"{rate:.2f} steps/s {rate * batch_size:.0f} req/s "
                    f"eta {format_duration((num_steps - done) / rate)} {shown}"
                )
                window_start, window_steps = time.time(), 0
            if done % stage_config.checkpoint_every == 0 or done == num_steps:
                ckpt.save(done, state, {"iterator": iterator.get_state()})
            every = stage_config.eval_every
            if eval_fn is not None and ((every and done % every == 0) or done == num_steps):
                eval_start = time.time()
                results = eval_fn(state)
                writer.write(done, results)
                if select:
                    _update_best(best_ckpt, done, state, results, select, name, log_fn)
                log_fn(
                    f"[{name}] eval at step {done} ({time.time() - eval_start:.1f}s): "
                    + " ".join(f"{k}={v:.4f}" for k, v in results.items())
                )
                window_start = time.time()
    finally:
        ckpt.wait()
        ckpt.close()
    return _selected(state, best_ckpt, select, name, log_fn)


def _update_best(best_ckpt, step, state, results, metric, name, log_fn) -> None:
    """Saves ``state`` as the stage's best when ``results[metric]`` beats the best so far."""
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
            return
    best_ckpt.save(step, state, {"value": value, "metric": metric})
    best_ckpt.wait()
    log_fn(f"[{name}] new best {metric}={value:.4f} at step {step}")


def _selected(state, best_ckpt, metric, name, log_fn):
    """The best saved state of the stage (model selection), or ``state`` itself."""
    if best_ckpt is None:
        return state
    try:
        step = best_ckpt.latest_step()
        if step is None:
            return state
        best, data = best_ckpt.restore(step, checkpointing.abstract_like(state))
        log_fn(f"[{name}] selected the state of step {step}: {metric}={data['value']:.4f}")
        return best
    finally:
        best_ckpt.close()

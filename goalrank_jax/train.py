"""The training loop of one stage: resume, steps, progress, metrics, evaluation, checkpoints.

What the loop guarantees when things go wrong (tests and figures: docs/reliability.md):

* Killed (SIGKILL, power loss): the stage resumes from its latest complete checkpoint with the
  same batches (the grain iterator state is saved with the train state) and the same PRNG keys
  (``fold_in(base_key, step)``), so a resumed run equals an uninterrupted one bit for bit. The
  evaluation due at a step runs before that step's checkpoint is written, so a checkpoint of
  step s implies that the evaluation (and model selection) of step s is done.
* Stopped (SIGTERM): at the next step boundary (with several processes: the next log or
  checkpoint step, all processes together) the stage finishes the work due at that step,
  saves a checkpoint of the step if none was due, waits for it and raises
  :class:`TrainingInterrupted` (``main`` exits with code 143); rerunning resumes exactly.
  Outside a stage's loop (data preparation, the final evaluation) SIGTERM keeps its default
  action and ends the process at once, which loses nothing: those outputs are written
  atomically and the rerun redoes them.
* Diverging: the train step skips updates with non-finite gradients (metric ``skipped``; the
  stage also logs ``<stage>/skipped_total``). The loop inspects the per-step metrics whenever it
  fetches them anyway (every ``log_every`` steps and at every checkpoint, so no extra
  device-to-host sync per step). No intermediate checkpoint is written while the latest step is
  non-finite (the final one is: skipped steps leave the parameters as they were), none ever of
  non-finite parameters, and after ``max_nonfinite_steps`` consecutive non-finite steps
  (noticed at the next fetch) the stage raises :class:`NonFiniteTrainingError` (``main`` exits
  with code 3); its latest checkpoint then holds the last good state.

Several processes run the loop in lockstep on the same global mesh: each feeds its own rows of
every batch and all take part in every checkpoint save; ``main``'s ``log_fn`` and the
``MetricWriter`` write on process 0 only.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from goalrank_jax import checkpointing, selection, sharding
from goalrank_jax.metric_writer import MetricWriter


class TrainingInterrupted(Exception):
    """SIGTERM stopped a stage at a step boundary; its checkpoint of that step is on disk."""


class NonFiniteTrainingError(RuntimeError):
    """The loss or gradients stayed non-finite for the configured number of steps."""


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@contextlib.contextmanager
def _sigterm_requests() -> Iterator[threading.Event]:
    """An event set when SIGTERM arrives while the block runs (main thread only: elsewhere
    Python cannot install handlers and SIGTERM keeps its default action)."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())
    try:
        yield requested
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _stop_agreed(requested: bool, at_boundary: bool) -> bool:
    """Whether to stop at this step. One process: as soon as SIGTERM arrived. Several: only
    where every process asks the others (log and checkpoint steps), and then all stop together
    if any received it, so the stop checkpoint is saved by all of them."""
    if jax.process_count() == 1:
        return requested
    if not at_boundary:
        return False
    flags = multihost_utils.process_allgather(np.asarray(requested, np.int32))
    return bool(np.any(flags))


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves] or [jnp.bool_(True)]))


class _NonFiniteSteps:
    """Counts consecutive steps whose update was skipped or whose loss is not finite."""

    def __init__(self, limit: int):
        self.limit = limit
        self.streak = 0
        self.first = 0

    def update(self, host_metrics: list[dict], first_step: int) -> bool:
        """Consumes the metrics of steps ``first_step, first_step + 1, ...``; True when the
        streak has reached the limit (never with limit 0)."""
        for offset, metrics in enumerate(host_metrics):
            loss = float(metrics.get("loss", 0.0))
            if float(metrics.get("skipped", 0.0)) > 0 or not math.isfinite(loss):
                if not self.streak:
                    self.first = first_step + offset
                self.streak += 1
            else:
                self.streak = 0
        return bool(self.limit) and self.streak >= self.limit


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
    config_path: str = "",
) -> Any:
    """Runs (or resumes, or skips if finished) a stage and returns its final state.

    Args:
      name: stage name; checkpoints go to ``<workdir>/<name>/checkpoints`` and metric names are
        prefixed with it.
      state: freshly initialised, placed state (used as the restore target when resuming).
      step_fn: compiled ``(state, batch, key) -> (state, metrics)``; the metrics ``loss`` and
        ``skipped`` (if present) feed the non-finite guard.
      dataset: indexable grain dataset of this process's rows of the training batches (see
        ``data.pipeline.train_dataset``); every process runs the stage in lockstep.
      stage_config: ``StageConfig``.
      eval_fn: optional ``state -> metrics`` run every ``eval_every`` steps and at the end.
      config_path: where ``stage_config`` sits in the experiment config (e.g. ``train``), to
        name its fields in error messages; defaults to ``name``.

    Raises:
      checkpointing.CheckpointError: the latest checkpoint does not fit ``state`` or is damaged.
      TrainingInterrupted: SIGTERM arrived; the checkpoint of the step reached is saved.
      NonFiniteTrainingError: ``max_nonfinite_steps`` consecutive non-finite steps.
    """
    loop = _StageLoop(name, workdir, dataset, stage_config, writer, log_fn, eval_fn, config_path)
    try:
        state, finished = loop.restore(state)
        if not finished:
            state = loop.run(state, step_fn, base_key, mesh)
    except BaseException:
        if loop.best_ckpt is not None:
            loop.best_ckpt.close()
        raise
    return selection.selected(state, loop.best_ckpt, loop.select, name, log_fn)


class _StageLoop:
    """The state of one stage's loop: checkpointers, data iterator, counters, metric window."""

    def __init__(self, name, workdir, dataset, stage_config, writer, log_fn, eval_fn, config_path):
        from goalrank_jax.data import pipeline

        self.name = name
        self.config = stage_config
        self.writer = writer
        self.log_fn = log_fn
        self.eval_fn = eval_fn
        self.select = stage_config.select_metric
        self.ckpt, self.best_ckpt = selection.checkpointers(name, workdir, stage_config)
        self.iterator = pipeline.train_iterator(dataset)
        self.start_step, self.skipped_total = 0, 0
        # Wall seconds the stage trained in earlier invocations (from its latest checkpoint;
        # None when that checkpoint predates the field, so the total is unknown) and the time
        # this invocation's training began: each checkpoint stores their running total.
        self.seconds_before: float | None = 0.0
        self.run_start = time.time()
        self.nonfinite = _NonFiniteSteps(stage_config.max_nonfinite_steps)
        self.limit_field = f"{config_path or name}.max_nonfinite_steps"
        self.pending: list[dict] = []
        self.window: list[dict] = []
        self.window_start, self.window_steps = time.time(), 0
        # Early stopping: the best select_metric value so far (None before the first
        # evaluation), evaluations since it, and whether the stage stopped.
        self.best_value, self.since_best, self.stopped_early = None, 0, False

    def restore(self, state) -> tuple[Any, bool]:
        """Restores the latest checkpoint into ``state`` if there is one: (state, finished)."""
        latest = self.ckpt.latest_step()
        if latest is None:
            return state, False
        try:
            state, data_state = self.ckpt.restore(latest, checkpointing.abstract_like(state))
        except checkpointing.CheckpointError:
            self.ckpt.close()
            raise
        if "iterator" in data_state:
            self.iterator.set_state(data_state["iterator"])
        self.skipped_total = int(data_state.get("skipped_total", 0))
        self.since_best = int(data_state.get("since_best", 0))
        self.best_value = data_state.get("best_value")
        self.seconds_before = data_state.get("train_seconds")
        self.start_step = int(latest)
        if data_state.get("stopped_early"):
            self.log_fn(
                f"[{self.name}] stopped early at step {self.start_step}; restored, skipping"
            )
            self.ckpt.close()
            return state, True
        if self.start_step >= self.config.num_steps:
            self.log_fn(
                f"[{self.name}] finished earlier at step {self.start_step}; restored, skipping"
            )
            self.ckpt.close()
            return state, True
        self.log_fn(f"[{self.name}] resuming from checkpoint at step {self.start_step}")
        return state, False

    def run(self, state, step_fn, base_key, mesh):
        """Steps ``start_step + 1 .. num_steps`` with their logging, evaluation and saves."""
        name, config = self.name, self.config
        num_steps = config.num_steps
        # An exception inside the loop still lets an in-flight asynchronous save finish and
        # close, so the latest checkpoint on disk is always complete.
        with _sigterm_requests() as stop_requested:
            try:
                self.log_fn(f"[{name}] training steps {self.start_step + 1}..{num_steps}")
                self.window_start = self.run_start = time.time()
                done = self.start_step
                for step in range(self.start_step, num_steps):
                    batch = sharding.put_local_batch(next(self.iterator), mesh)
                    state, metrics = step_fn(state, batch, base_key)
                    self.pending.append(metrics)
                    self.window_steps += 1
                    done = step + 1
                    final = done == num_steps
                    log_now = done % config.log_every == 0 or final
                    save_now = done % config.checkpoint_every == 0 or final
                    every = config.eval_every
                    eval_now = self.eval_fn is not None and ((every and done % every == 0) or final)
                    stopping = _stop_agreed(stop_requested.is_set(), log_now or save_now)
                    if log_now or save_now or stopping:
                        self._fetch(done)
                    if log_now:
                        self._log(done)
                    if eval_now:
                        self._evaluate(done, state)
                    if self.stopped_early and not (log_now or save_now or stopping):
                        self._fetch(done)  # the final step of the stage: nothing left pending
                        self._log(done)
                    if save_now or stopping or self.stopped_early:
                        self._save(done, state, final or self.stopped_early)
                    if stopping:
                        self.ckpt.wait()
                        raise TrainingInterrupted(
                            f"[{name}] SIGTERM received: stopped after step {done}/{num_steps}; "
                            f"latest checkpoint: step {self.ckpt.latest_step()} in "
                            f"{self.ckpt.directory}. Rerun the same command to resume."
                        )
                    if self.stopped_early:
                        break
                # Arrived during the evaluation of the last step (every process has saved it).
                if _stop_agreed(stop_requested.is_set(), True):
                    self.ckpt.wait()
                    raise TrainingInterrupted(
                        f"[{name}] SIGTERM received: the stage finished at step {done} "
                        f"(checkpoint in {self.ckpt.directory}). Rerun the same command to resume."
                    )
            finally:
                self.ckpt.wait()
                self.ckpt.close()
        return state

    def _fetch(self, done: int) -> None:
        """Brings the pending per-step metrics to the host and applies the non-finite guard."""
        host = jax.device_get(self.pending)
        self.pending = []
        self.window.extend(host)
        self.skipped_total += sum(float(m.get("skipped", 0.0)) > 0 for m in host)
        nonfinite = self.nonfinite
        if nonfinite.update(host, done - len(host) + 1):
            self.ckpt.wait()
            raise NonFiniteTrainingError(
                f"[{self.name}] the loss or gradients were non-finite for "
                f"{nonfinite.streak} consecutive steps ({nonfinite.first}..{done}); "
                f"stopping at {self.limit_field}={nonfinite.limit}. Their updates were "
                f"skipped; the latest checkpoint (step {self.ckpt.latest_step()}) in "
                f"{self.ckpt.directory} holds the last good state. Check the data or "
                "lower the learning rate, then rerun to resume from it."
            )

    def _log(self, done: int) -> None:
        elapsed = time.time() - self.window_start
        rate = self.window_steps / max(elapsed, 1e-9)
        _log_window(
            self.name,
            done,
            self.window,
            rate,
            self.skipped_total,
            self.config,
            self.writer,
            self.log_fn,
        )
        self.window = []
        self.window_start, self.window_steps = time.time(), 0

    def _evaluate(self, done: int, state) -> None:
        eval_start = time.time()
        results = self.eval_fn(state)
        self.writer.write(done, results)
        if self.select:
            selection.update_best(
                self.best_ckpt, done, state, results, self.select, self.name, self.log_fn
            )
            # Counted against the value kept with the train state (not the best checkpoint on
            # disk, which may be newer than the checkpoint a killed run resumes from).
            value = float(results[self.select])
            if self.best_value is None or value > self.best_value:
                self.best_value, self.since_best = value, 0
            else:
                self.since_best += 1
            patience = self.config.patience
            if patience and self.since_best >= patience:
                self.stopped_early = True
                self.log_fn(
                    f"[{self.name}] early stop at step {done}/{self.config.num_steps}: no new "
                    f"best {self.select} in {patience} evaluations"
                )
        self.log_fn(
            f"[{self.name}] eval at step {done} ({time.time() - eval_start:.1f}s): "
            + " ".join(f"{k}={v:.4f}" for k, v in results.items())
        )
        # The window's rate counts training only: its steps before the evaluation keep their
        # time, the evaluation's is left out.
        self.window_start += time.time() - eval_start

    def _save(self, done: int, state, final: bool) -> None:
        """Checkpoints step ``done`` unless it is non-finite (the final step always is saved:
        skipped steps leave the parameters as they were)."""
        if self.nonfinite.streak and not final:
            self.log_fn(f"[{self.name}] step {done} is non-finite: not checkpointed")
        elif not bool(_all_finite(state.params)):
            self.ckpt.wait()
            raise NonFiniteTrainingError(
                f"[{self.name}] the parameters are non-finite at step {done}; not "
                f"checkpointed. The latest checkpoint (step {self.ckpt.latest_step()}) "
                f"in {self.ckpt.directory} holds the last good state."
            )
        else:
            data_state = {
                "iterator": self.iterator.get_state(),
                "skipped_total": self.skipped_total,
                "since_best": self.since_best,
                "best_value": self.best_value,
                "stopped_early": self.stopped_early,
                "num_steps": self.config.num_steps,
                "train_seconds": (
                    None
                    if self.seconds_before is None
                    else self.seconds_before + time.time() - self.run_start
                ),
            }
            self.ckpt.save(done, state, data_state)


def _log_window(name, done, window, rate, skipped_total, stage_config, writer, log_fn) -> None:
    """Writes the mean of the window's per-step metrics and prints the progress line."""
    num_steps, batch_size = stage_config.num_steps, stage_config.batch_size
    summary = {f"{name}/{k}": float(np.mean([m[k] for m in window])) for k in window[0]}
    summary[f"{name}/steps_per_second"] = rate
    summary[f"{name}/requests_per_second"] = rate * batch_size
    if "skipped" in window[0]:
        summary[f"{name}/skipped_total"] = float(skipped_total)
    writer.write(done, summary)
    shown_names = ("loss", "gro_loss", "sup_loss", "group_reward_mean", "skipped")
    shown = " ".join(
        f"{k.split('/', 1)[1]}={v:.4g}"
        for k, v in summary.items()
        if k.split("/", 1)[1] in shown_names
    )
    if skipped_total:
        shown += f" skipped_total={skipped_total}"
    log_fn(
        f"[{name}] step {done}/{num_steps} ({100 * done / num_steps:.1f}%) "
        f"{rate:.2f} steps/s {rate * batch_size:.0f} req/s "
        f"eta {format_duration((num_steps - done) / rate)} {shown}"
    )

"""Numerical guards and graceful stop of the training loop, on a toy stage whose step is the
real ``apply_gradients`` (non-finite-gradient skip) on a one-parameter regression.

NaNs are injected by poisoning the batch inside the step at chosen steps. A skipped step leaves
the parameters unchanged and is counted; a run that stays non-finite for
``max_nonfinite_steps`` stops with a message naming the field, and its latest checkpoint is the
last good state. SIGTERM stops the loop at the next step boundary after a checkpoint of that
step, and the rerun equals an uninterrupted run.
"""

import dataclasses
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from step_fixtures import random_batch

from goalrank_jax import checkpointing, configs, sharding
from goalrank_jax import train_step as ts
from goalrank_jax.data import pipeline
from goalrank_jax.metric_writer import MetricWriter
from goalrank_jax.train import NonFiniteTrainingError, TrainingInterrupted, train_stage

OPTIMIZER = ts.make_optimizer(configs.OptimConfig(learning_rate=0.05))


def poisoned_step(is_poisoned):
    """A train step fitting ``w * x ~ 1`` whose batch is all-NaN when
    ``is_poisoned(step index)`` (0-based, traced) holds."""

    @jax.jit
    def step(state, batch, key):
        x = batch["cand_retriever_score"]
        x = jnp.where(is_poisoned(state.step), jnp.nan, x)
        loss_fn = lambda params: jnp.mean((x * params["w"] - 1.0) ** 2)
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        new_state, metrics = ts.apply_gradients(state, grads, OPTIMIZER)
        return new_state, {"loss": loss, "w": new_state.params["w"], **metrics}

    return step


def run_toy(workdir, step_fn, num_steps, log_fn=None, eval_fn=None, **stage):
    raw = random_batch(batch_size=8)
    source = [{k: v[i] for k, v in raw.items()} for i in range(8)]
    mesh = sharding.make_mesh()
    state = ts.create_state({"w": jnp.zeros(())}, OPTIMIZER)
    stage.setdefault("log_every", 1)
    stage_config = configs.StageConfig(num_steps=num_steps, batch_size=4, eval_every=0, **stage)
    stage_config.validate()
    logs = []
    writer = MetricWriter(str(workdir))
    try:
        out = train_stage(
            name="toy",
            config_path="train",
            workdir=str(workdir),
            state=sharding.put_replicated(state, mesh),
            step_fn=step_fn,
            dataset=pipeline.train_dataset(source, 4, 0),
            stage_config=stage_config,
            base_key=jax.random.key(0),
            mesh=mesh,
            writer=writer,
            log_fn=log_fn or logs.append,
            eval_fn=eval_fn,
        )
    finally:
        writer.close()
    return out, logs


def metric_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {row["step"]: row for row in rows}


def restore(workdir, step):
    like = ts.create_state({"w": jnp.zeros(())}, OPTIMIZER)
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "toy", "checkpoints"))
    try:
        return ckpt.restore(step, checkpointing.abstract_like(like))
    finally:
        ckpt.close()


def test_non_finite_steps_are_skipped_and_counted(tmp_path):
    # Steps 3 and 4 (1-based) see NaN inputs.
    step_fn = poisoned_step(lambda s: (s == 2) | (s == 3))
    out, _ = run_toy(tmp_path, step_fn, 8, checkpoint_every=4, max_nonfinite_steps=3)
    rows = metric_rows(str(tmp_path))
    assert [rows[s]["toy/skipped"] for s in range(1, 9)] == [0, 0, 1, 1, 0, 0, 0, 0]
    assert rows[8]["toy/skipped_total"] == 2
    assert not np.isfinite(rows[3]["toy/loss"])
    # A skipped update leaves the parameter where it was; the next good step moves it.
    w = {s: rows[s]["toy/w"] for s in rows}
    assert w[3] == w[2] and w[4] == w[2] and w[5] != w[4]
    assert np.isfinite(float(out.params["w"])) and int(out.step) == 8
    _, data = restore(str(tmp_path), 8)
    assert data["skipped_total"] == 2


def test_persistent_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # Every step from the 5th on sees NaN inputs.
    step_fn = poisoned_step(lambda s: s >= 4)
    with pytest.raises(NonFiniteTrainingError) as err:
        run_toy(tmp_path, step_fn, 12, checkpoint_every=2, max_nonfinite_steps=3)
    message = str(err.value)
    assert "train.max_nonfinite_steps=3" in message, message
    assert "3 consecutive steps (5..7)" in message, message
    assert "latest checkpoint (step 4)" in message, message
    directory = os.path.join(tmp_path, "toy", "checkpoints")
    assert sorted(os.listdir(directory)) == ["2", "4"]  # step 6 was non-finite: not saved
    rows = metric_rows(str(tmp_path))
    state, _ = restore(str(tmp_path), 4)
    assert float(state.params["w"]) == rows[4]["toy/w"]
    assert np.isfinite(float(state.params["w"]))
    # max_nonfinite_steps=0 never stops: the rerun resumes from the last good checkpoint and
    # skips (and counts) every remaining poisoned step.
    out, logs = run_toy(tmp_path, step_fn, 12, checkpoint_every=2, max_nonfinite_steps=0)
    assert "[toy] resuming from checkpoint at step 4" in logs
    assert float(out.params["w"]) == rows[4]["toy/w"]
    assert metric_rows(str(tmp_path))[12]["toy/skipped_total"] == 8


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
    @jax.jit
    def diverging(state, batch, key):
        bad = jnp.where(state.step >= 2, jnp.inf, state.params["w"] + 1.0)
        new = dataclasses.replace(state, step=state.step + 1, params={"w": bad})
        return new, {"loss": jnp.zeros(())}

    with pytest.raises(NonFiniteTrainingError, match="parameters are non-finite at step 4"):
        run_toy(tmp_path, diverging, 8, checkpoint_every=2)
    assert sorted(os.listdir(os.path.join(tmp_path, "toy", "checkpoints"))) == ["2"]


def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint_and_resumes_exactly(tmp_path):
    step_fn = poisoned_step(lambda s: s < 0)
    reference, _ = run_toy(tmp_path / "reference", step_fn, 8, checkpoint_every=5)
    previous = signal.getsignal(signal.SIGTERM)
    logs = []

    def log_and_terminate(line):
        logs.append(line)
        if line.startswith("[toy] step 3/8"):
            os.kill(os.getpid(), signal.SIGTERM)

    workdir = tmp_path / "terminated"
    with pytest.raises(TrainingInterrupted, match="stopped after step 4/8"):
        run_toy(workdir, step_fn, 8, log_fn=log_and_terminate, checkpoint_every=5)
    assert signal.getsignal(signal.SIGTERM) is previous
    # Step 4 is not a multiple of checkpoint_every: the stop wrote it.
    assert sorted(os.listdir(os.path.join(workdir, "toy", "checkpoints"))) == ["4"]
    resumed, logs = run_toy(workdir, step_fn, 8, checkpoint_every=5)
    assert "[toy] resuming from checkpoint at step 4" in logs
    assert float(resumed.params["w"]) == float(reference.params["w"])
    for got, want in zip(
        jax.tree_util.tree_leaves(resumed.opt_state),
        jax.tree_util.tree_leaves(reference.opt_state),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)


def test_sigterm_during_the_last_evaluation_still_stops_the_run(tmp_path):
    def evaluate_and_terminate(state):
        os.kill(os.getpid(), signal.SIGTERM)
        return {"validation/w": float(state.params["w"])}

    step_fn = poisoned_step(lambda s: s < 0)
    with pytest.raises(TrainingInterrupted, match="the stage finished at step 4"):
        run_toy(tmp_path, step_fn, 4, eval_fn=evaluate_and_terminate, checkpoint_every=2)
    _, logs = run_toy(tmp_path, step_fn, 4, checkpoint_every=2)
    assert "[toy] finished earlier at step 4; restored, skipping" in logs

"""Model selection in train_stage: the stage returns the state of its best validation metric,
also when a finished stage is restored; an unknown metric is a clear error; early stopping on a
scripted metric sequence, across a resume."""

import dataclasses
import shutil
import time

import jax
import jax.numpy as jnp
import pytest
from step_fixtures import random_batch

from goalrank_jax import checkpointing, configs, selection, sharding, stages
from goalrank_jax.data import pipeline
from goalrank_jax.metric_writer import MetricWriter
from goalrank_jax.train import train_stage
from goalrank_jax.train_step import TrainState


@jax.jit
def count_step(state, batch, key):
    """w <- w + 1 every step (the batch and key are unused)."""
    new = dataclasses.replace(state, step=state.step + 1, params={"w": state.params["w"] + 1.0})
    return new, {"loss": state.params["w"]}


def run_toy(workdir, select_metric, target=3.0, num_steps=6, patience=0, score=None):
    raw = random_batch(batch_size=8)
    source = [{k: v[i] for k, v in raw.items()} for i in range(8)]
    mesh = sharding.make_mesh()
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params={"w": jnp.zeros(())},
        opt_state={"m": jnp.zeros(())},
    )
    stage = configs.StageConfig(
        num_steps=num_steps,
        batch_size=4,
        log_every=1,
        eval_every=1,
        checkpoint_every=2,
        select_metric=select_metric,
        patience=patience,
    )
    logs = []
    writer = MetricWriter(str(workdir))
    out = train_stage(
        name="toy",
        workdir=str(workdir),
        state=sharding.put_replicated(state, mesh),
        step_fn=count_step,
        dataset=pipeline.train_dataset(source, 4, 0),
        stage_config=stage,
        base_key=jax.random.key(0),
        mesh=mesh,
        writer=writer,
        log_fn=logs.append,
        # Peak at w = target: the best state is the one after `target` steps.
        eval_fn=lambda s: {
            "validation/score": score(float(s.params["w"]))
            if score
            else -((float(s.params["w"]) - target) ** 2)
        },
    )
    writer.close()
    return out, logs


def test_best_state_is_returned_and_restored(tmp_path):
    out, logs = run_toy(tmp_path, "validation/score")
    assert float(out.params["w"]) == 3.0 and int(out.step) == 3
    assert any("selected the state of step 3" in line for line in logs)
    again, logs = run_toy(tmp_path, "validation/score")  # finished stage: restored and skipped
    assert any("finished earlier" in line for line in logs)
    assert float(again.params["w"]) == 3.0


def test_without_selection_the_last_state_is_returned(tmp_path):
    out, _ = run_toy(tmp_path, "")
    assert float(out.params["w"]) == 6.0


def test_unknown_select_metric_is_named(tmp_path):
    with pytest.raises(ValueError, match="validation/nope"):
        run_toy(tmp_path, "validation/nope")


# Validation metric after each step (w = step): best at step 2, then three evaluations
# without a new best (0.2, 0.25, 0.28 < 0.3), then a better one that patience 3 never reaches.
SCRIPTED = {1.0: 0.1, 2.0: 0.3, 3.0: 0.2, 4.0: 0.25, 5.0: 0.28, 6.0: 0.9, 7.0: 0.95}


def test_early_stopping_stops_after_patience_evaluations_and_selects_the_best(tmp_path):
    out, logs = run_toy(
        tmp_path, "validation/score", num_steps=7, patience=3, score=SCRIPTED.__getitem__
    )
    assert float(out.params["w"]) == 2.0 and int(out.step) == 2
    assert any("early stop at step 5/7" in line for line in logs)
    config = configs.StageConfig(num_steps=7, select_metric="validation/score", patience=3)
    record = selection.stage_record("toy", str(tmp_path), config)
    seconds = record.pop("train_seconds")
    assert record == {
        "steps": 5,
        "stopped_early": True,
        "selected_step": 2,
        "selected_value": 0.3,
    }
    assert seconds > 0
    # A rerun restores the stopped stage instead of training on to step 7.
    again, logs = run_toy(
        tmp_path, "validation/score", num_steps=7, patience=3, score=SCRIPTED.__getitem__
    )
    assert any("stopped early at step 5" in line for line in logs)
    assert float(again.params["w"]) == 2.0


def test_early_stopping_counter_survives_a_resume(tmp_path):
    # Four steps: evaluations 3 and 4 bring no new best (count 2), then the stage finishes.
    run_toy(tmp_path, "validation/score", num_steps=4, patience=3, score=SCRIPTED.__getitem__)
    # Resumed with a larger budget: step 5 is the third evaluation without a new best.
    out, logs = run_toy(
        tmp_path, "validation/score", num_steps=7, patience=3, score=SCRIPTED.__getitem__
    )
    assert any("resuming from checkpoint at step 4" in line for line in logs)
    assert any("early stop at step 5/7" in line for line in logs)
    assert float(out.params["w"]) == 2.0


def test_patience_needs_a_select_metric():
    with pytest.raises(ValueError, match="patience"):
        configs.StageConfig(patience=2).validate()


def test_budget_in_epochs_is_resolved_to_steps():
    config = configs.StageConfig(batch_size=32, num_epochs=2.5, eval_every_epochs=0.5)
    resolved = stages.resolve_budget(config, train_requests=1000)
    # 2.5 epochs of 1000 requests at 32 per step: ceil(78.125) steps; evaluations every 15.625.
    assert resolved.num_steps == 79 and resolved.eval_every == 16
    assert stages.resolve_budget(configs.StageConfig(), 1000) == configs.StageConfig()


# Best at step 3, which is not a checkpoint step (checkpoint_every=2).
ODD_BEST = {1.0: 0.1, 2.0: 0.2, 3.0: 0.3, 4.0: 0.25, 5.0: 0.26, 6.0: 0.27, 7.0: 0.9}


def test_early_stopping_after_a_kill_matches_the_uninterrupted_run(tmp_path):
    uninterrupted, logs = run_toy(
        tmp_path / "a", "validation/score", num_steps=7, patience=3, score=ODD_BEST.__getitem__
    )
    assert any("early stop at step 6/7" in line for line in logs)
    # A run killed after step 4: its best checkpoint (step 3) is newer than the training
    # checkpoint it resumes from (step 2), as when the checkpoint of step 4 never completed.
    run_toy(tmp_path / "b", "validation/score", num_steps=4, patience=3, score=ODD_BEST.__getitem__)
    shutil.rmtree(tmp_path / "b" / "toy" / "checkpoints" / "4")
    resumed, logs = run_toy(
        tmp_path / "b", "validation/score", num_steps=7, patience=3, score=ODD_BEST.__getitem__
    )
    assert any("resuming from checkpoint at step 2" in line for line in logs)
    assert any("early stop at step 6/7" in line for line in logs)
    assert float(resumed.params["w"]) == float(uninterrupted.params["w"]) == 3.0


def test_training_seconds_add_up_over_a_resume_and_survive_a_restore(tmp_path):
    config = configs.StageConfig(num_steps=6)
    start = time.time()
    run_toy(tmp_path, "", num_steps=4)
    first_wall = time.time() - start
    first = selection.stage_record("toy", str(tmp_path), config)["train_seconds"]
    assert 0 < first <= first_wall
    start = time.time()
    _, logs = run_toy(tmp_path, "", num_steps=6)  # resumes at step 4
    second_wall = time.time() - start
    assert any("resuming from checkpoint at step 4" in line for line in logs)
    total = selection.stage_record("toy", str(tmp_path), config)["train_seconds"]
    # The resumed invocation adds its own training to the first's, no more than its wall time.
    assert first < total <= first + second_wall
    _, logs = run_toy(tmp_path, "", num_steps=6)  # finished: restored, nothing trained
    assert any("finished earlier" in line for line in logs)
    assert selection.stage_record("toy", str(tmp_path), config)["train_seconds"] == total


def test_progress_rate_leaves_out_the_evaluation_time(monkeypatch):
    """A window of 2 steps of 1 s each with a 100 s evaluation between them logs 1 step/s
    (the evaluation's time is not training; the steps before it keep theirs)."""
    from goalrank_jax import train

    clock = [0.0]
    monkeypatch.setattr(train.time, "time", lambda: clock[0])

    class Writer:
        def __init__(self):
            self.rows = []

        def write(self, step, values):
            self.rows.append((step, dict(values)))

    def slow_eval(state):
        clock[0] += 100.0
        return {"validation/score": 0.0}

    loop = object.__new__(train._StageLoop)
    loop.name, loop.select, loop.skipped_total = "toy", "", 0
    loop.config = configs.StageConfig(num_steps=10, batch_size=4)
    loop.writer, loop.eval_fn = Writer(), slow_eval
    logs = []
    loop.log_fn = logs.append
    loop.window_start, loop.window_steps, loop.window = clock[0], 0, []
    clock[0] += 1.0  # step 1
    loop.window_steps += 1
    loop.window.append({"loss": 1.0})
    loop._evaluate(1, state=None)
    clock[0] += 1.0  # step 2
    loop.window_steps += 1
    loop.window.append({"loss": 0.5})
    loop._log(2)
    step, values = loop.writer.rows[-1]
    assert step == 2 and values["toy/steps_per_second"] == pytest.approx(1.0)
    assert values["toy/requests_per_second"] == pytest.approx(4.0)
    assert "1.00 steps/s 4 req/s eta 0m08s" in logs[-1]


def test_the_selected_state_is_logged_under_the_metric_that_selected_it(tmp_path):
    """A caller restoring a stage may pass another metric name (a diagnosis of a comparison run
    selected on the evaluator's reward); the log names the one the checkpoint recorded."""
    state = {"w": jnp.asarray(2.0)}
    best = checkpointing.Checkpointer(str(tmp_path / "best"), max_to_keep=1)
    best.save(5, state, {"value": 0.75, "metric": "validation/toy/rm_reward"})
    best.wait()
    logs = []
    restored = selection.selected(state, best, "validation/toy/N@6", "toy", logs.append)
    assert float(restored["w"]) == 2.0
    assert logs == ["[toy] selected the state of step 5: validation/toy/rm_reward=0.7500"]

"""Model selection in train_stage: the stage returns the state of its best validation metric,
also when a finished stage is restored; an unknown metric is a clear error."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from step_fixtures import random_batch

from goalrank_jax import configs, sharding
from goalrank_jax.data import pipeline
from goalrank_jax.metric_writer import MetricWriter
from goalrank_jax.train import train_stage
from goalrank_jax.train_step import TrainState


@jax.jit
def count_step(state, batch, key):
    """w <- w + 1 every step (the batch and key are unused)."""
    new = dataclasses.replace(state, step=state.step + 1, params={"w": state.params["w"] + 1.0})
    return new, {"loss": state.params["w"]}


def run_toy(workdir, select_metric, target=3.0):
    raw = random_batch(batch_size=8)
    source = [{k: v[i] for k, v in raw.items()} for i in range(8)]
    mesh = sharding.make_mesh()
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params={"w": jnp.zeros(())},
        opt_state={"m": jnp.zeros(())},
    )
    stage = configs.StageConfig(
        num_steps=6,
        batch_size=4,
        log_every=1,
        eval_every=1,
        checkpoint_every=2,
        select_metric=select_metric,
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
        eval_fn=lambda s: {"validation/score": -((float(s.params["w"]) - target) ** 2)},
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

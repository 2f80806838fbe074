"""The stage builder: PRNG stream table, placement by the FSDP rule, a trained toy stage."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goalrank_jax import configs, sharding, stages
from goalrank_jax import train_step as ts
from goalrank_jax.metric_writer import MetricWriter


def _pipelines() -> dict[str, list[str]]:
    """Stage names of the streams table grouped by the run that draws them from one base key
    (the simulator has a base key of its own; the comparison's GoalRank runs draw the
    generator's streams)."""
    groups: dict[str, list[str]] = {"main": [], "compare": ["generator"]}
    for name in stages.STREAMS:
        run = "compare" if name.startswith("compare/") else "main"
        if name != "simulator":
            groups[run].append(name)
    return groups


@pytest.mark.parametrize("run", ["main", "compare"])
def test_no_two_stages_of_a_run_share_a_stream(run):
    names = _pipelines()[run]
    assert len(names) >= 2
    for a, b in itertools.combinations(names, 2):
        sa, sb = stages.STREAMS[a], stages.STREAMS[b]
        # Keys folded into the base key (init, steps) must differ across all purposes.
        assert not {sa.init, sa.steps} & {sb.init, sb.steps}, (a, b)
        assert sa.data != sb.data, (a, b)
        assert sa.init != sa.steps, a


def _toy_step(state, batch, base_key, *, optimizer):
    def loss_fn(params):
        return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state, metrics = ts.apply_gradients(state, grads, optimizer)
    return state, {"loss": loss, **metrics}


def test_build_state_places_by_the_fsdp_rule_and_copies_frozen_params(tmp_path):
    mesh = sharding.make_mesh()
    context = stages.StageContext(
        workdir=str(tmp_path),
        dataset=None,
        init_batch={},
        mesh=mesh,
        fsdp_min_size=1,
        writer=MetricWriter(str(tmp_path)),
        seed=5,
        prng_impl="threefry2x32",
    )
    frozen = {"r": jnp.arange(4.0)}
    stage = stages.Stage(
        name="toy",
        streams="generator",
        config_path="train",
        stage_config=configs.StageConfig(num_steps=3, batch_size=4),
        init=lambda key: {"w": jax.random.normal(key, (3,))},
        step=_toy_step,
        frozen_params=frozen,
    )
    state, step_fn = stages.build_state(context, stage)
    assert isinstance(state, ts.TrainState)
    # init drawn from fold_in(key(seed), STREAMS['generator'].init)
    expected = jax.random.normal(
        jax.random.fold_in(jax.random.key(5), stages.STREAMS["generator"].init), (3,)
    )
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.asarray(expected))
    want = sharding.state_sharding(state, mesh, 1)
    got = jax.tree_util.tree_map(lambda x: x.sharding, state)
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda g, w: g.is_equivalent_to(w, 1), got, want)
    )
    # The step donates its state: the frozen parameters given must survive it.
    batch = {"x": jnp.ones((4, 3)), "y": jnp.zeros((4,))}
    state, metrics = step_fn(state, batch, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(frozen["r"]), np.arange(4.0))
    assert np.isfinite(float(metrics["loss"]))
    context.writer.close()

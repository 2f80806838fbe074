"""The ('data', 'fsdp') mesh: placement rule, mesh-shape validation, and on a simulated 8-device
CPU mesh data-parallel and FSDP training equal to one device, with a checkpoint written on one
mesh shape resumed on another."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from goalrank_jax import configs, sharding


@pytest.mark.parametrize(
    "shape, fsdp, min_size, expected",
    [
        ((120, 8), 4, 0, P("fsdp", None)),  # largest divisible dimension
        ((6, 8), 4, 0, P(None, "fsdp")),  # the largest (6) is not divisible by 4
        ((8, 16, 8), 8, 0, P(None, "fsdp", None)),
        ((8, 8), 4, 0, P("fsdp", None)),  # equal sizes: the first
        ((7, 5), 4, 0, P()),  # nothing divisible: replicated
        ((64, 64), 4, 64 * 64 + 1, P()),  # below the minimum size: replicated
        ((), 4, 0, P()),  # scalars (step counters)
        ((128, 8), 1, 0, P()),  # no fsdp axis to split over
    ],
)
def test_fsdp_spec(shape, fsdp, min_size, expected):
    assert sharding.fsdp_spec(shape, fsdp, min_size) == expected


@pytest.mark.parametrize(
    "data, fsdp, devices, expected",
    [
        (-1, 1, 8, (8, 1)),
        (2, -1, 8, (2, 4)),
        (0, 8, 8, (1, 8)),
        (1, 1, 1, (1, 1)),
        (4, 2, 8, (4, 2)),
    ],
)
def test_resolve_mesh_shape(data, fsdp, devices, expected):
    assert sharding.resolve_mesh_shape(data, fsdp, devices) == expected


@pytest.mark.parametrize(
    "data, fsdp, message",
    [
        (3, 2, r"mesh.data \(3\) x mesh.fsdp \(2\) = 6 devices, but there are 8"),
        (-1, -1, "At most one of mesh.data and mesh.fsdp"),
        (3, -1, r"mesh.data \(3\) must divide the number of devices \(8\)"),
        (-2, 4, "mesh.data must be > 0, or -1 / 0"),
    ],
)
def test_impossible_mesh_is_rejected_naming_the_fields(data, fsdp, message):
    raw = configs.to_dict(configs.ExperimentConfig())
    raw["mesh"].update(data=data, fsdp=fsdp)
    with pytest.raises(ValueError, match=message):
        configs.from_config_dict(raw, num_devices=8)


def test_default_mesh_covers_every_device():
    mesh = sharding.make_mesh()
    assert mesh.axis_names == ("data", "fsdp")
    assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1}
    placed = sharding.put_batch({"x": np.arange(8 * jax.device_count())}, mesh)
    np.testing.assert_array_equal(placed["x"], np.arange(8 * jax.device_count()))


# Two 8-device processes at once (compiling is single-threaded; this CPU has two cores), one
# compile per mesh. "first": 1 device, then data=8, 20 steps each. "second": data=2 x fsdp=4 for
# 20 steps, then the step-10 checkpoint of the 1-device run resumed on data=2 x fsdp=4 for steps
# 11-20, and its step-20 checkpoint restored into data=2 x fsdp=4 shardings.
MESH_SCRIPT = r"""
import dataclasses, functools, json, os, shutil, sys, time
import jax
import numpy as np
tests_dir, root, role = sys.argv[1:4]
sys.path.insert(0, tests_dir)
from step_fixtures import random_batch, tiny_models
from goalrank_jax import checkpointing, configs, policies, sharding
from goalrank_jax import train_step as ts
from goalrank_jax.data import pipeline
from goalrank_jax.metric_writer import MetricWriter
from goalrank_jax.train import train_stage

MIN_SIZE = 64  # small enough to split the tiny model's embeddings and kernels
generator, reward_module = tiny_models(dropout=0.1)
raw = random_batch(batch_size=64, list_len=3, seed=5)
source = [{k: v[i] for k, v in raw.items()} for i in range(64)]
key = jax.random.key(0, impl="threefry2x32")
optimizer = ts.make_optimizer(configs.OptimConfig(learning_rate=1e-2))
step = functools.partial(
    ts.goalrank_train_step, policy=policies.GeneratorPolicy(generator, 3),
    evaluator=policies.Evaluator(reward_module, "pointwise"), optimizer=optimizer,
    gro=configs.GROConfig(group_size=4))
stage = configs.StageConfig(num_steps=20, batch_size=16, log_every=1, checkpoint_every=10,
                            eval_every=0)
initial = jax.device_get(jax.jit(lambda k: ts.create_state(
    generator.init(jax.random.fold_in(k, 1), raw), optimizer,
    reward_module.init(jax.random.fold_in(k, 2), raw)))(key))


def train(workdir, mesh, shardings, compiled):
    with jax.set_mesh(mesh):
        writer = MetricWriter(workdir)
        state = train_stage(
            name="gen", workdir=workdir, state=sharding.put_tree(initial, shardings),
            step_fn=compiled, dataset=pipeline.train_dataset(source, stage.batch_size, 3),
            stage_config=stage, base_key=key, mesh=mesh, writer=writer, log_fn=lambda _: None)
        writer.close()
    rows = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
    return state, [r["gen/loss"] for r in rows if "gen/loss" in r]


def host(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


def save_params(name, state):
    np.savez(f"{root}/{name}.npz", *host(state.params))


def mesh_setup(mesh):
    shardings = sharding.state_sharding(initial, mesh, MIN_SIZE)
    return mesh, shardings, ts.compile_step(
        step, shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh))


out = {"devices": jax.device_count(), "losses": {}}
if role == "first":
    for name, mesh in (("one", sharding.make_mesh(1)), ("data8", sharding.make_mesh(data=8))):
        state, out["losses"][name] = train(f"{root}/{name}", *mesh_setup(mesh))
        save_params(name, state)
        open(f"{root}/{name}.done", "w").close()
else:
    mesh, shardings, compiled = setup = mesh_setup(sharding.make_mesh(data=2, fsdp=4))
    state, out["losses"]["fsdp2x4"] = train(f"{root}/fsdp2x4", *setup)
    save_params("fsdp2x4", state)
    out["leaves"] = len(jax.tree_util.tree_leaves(state))
    out["split_leaves"] = sum(
        any(a is not None for a in x.sharding.spec) for x in jax.tree_util.tree_leaves(state))
    deadline = time.time() + 500
    while not os.path.exists(f"{root}/one.done"):
        assert time.time() < deadline, "the 1-device run did not finish"
        time.sleep(0.5)
    ckpt = checkpointing.Checkpointer(f"{root}/one/gen/checkpoints")
    target = checkpointing.abstract_like(sharding.put_tree(initial, shardings))
    restored, _ = ckpt.restore(20, target)
    ckpt.close()
    save_params("one_restored_on_2x4", restored)
    out["restored_shardings"] = all(
        x.sharding == s for x, s in zip(jax.tree_util.tree_leaves(restored),
                                        jax.tree_util.tree_leaves(shardings)))
    shutil.copytree(f"{root}/one/gen/checkpoints/10", f"{root}/resumed/gen/checkpoints/10")
    state, out["losses"]["resumed"] = train(f"{root}/resumed", *setup)
    save_params("resumed", state)
print("RESULT " + json.dumps(out))
"""


def _params(root, name):
    with np.load(os.path.join(root, f"{name}.npz")) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def mesh_runs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mesh"))
    # LLVM optimisation is most of the compile time of these tiny programs (about 2.5x on this
    # CPU); the test checks placements and numerics, not code speed.
    flags = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    env["XLA_FLAGS"] = flags
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MESH_SCRIPT, tests_dir, root, role],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=os.path.dirname(tests_dir),
        )
        for role in ("first", "second")
    ]
    try:
        outputs = [proc.communicate(timeout=600) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    out = {"root": root, "losses": {}}
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
        line = [x for x in stdout.splitlines() if x.startswith("RESULT ")][-1]
        result = json.loads(line[len("RESULT ") :])
        out["losses"].update(result.pop("losses"))
        out.update(result)
    return out


def test_runs_use_eight_devices_and_split_parameters(mesh_runs):
    assert mesh_runs["devices"] == 8
    # Embeddings, kernels and their Adam moments are split; biases and scalars stay replicated.
    assert 0 < mesh_runs["split_leaves"] < mesh_runs["leaves"]


@pytest.mark.parametrize("run", ["data8", "fsdp2x4"])
def test_loss_trajectory_matches_one_device(mesh_runs, run):
    reference = mesh_runs["losses"]["one"]
    assert len(reference) == 20 and len(mesh_runs["losses"][run]) == 20
    # Same batches and threefry random bits on every mesh; only the order of float32
    # reductions (gradient all-reduce / reduce-scatter) differs.
    np.testing.assert_allclose(mesh_runs["losses"][run], reference, rtol=1e-5)
    # Adam divides by sqrt(v) + eps: rounding in near-zero gradients moves a parameter by up to
    # a few percent of one lr=1e-2 step, so the bound is a tenth of a step.
    one = _params(mesh_runs["root"], "one")
    assert _max_diff(_params(mesh_runs["root"], run), one) < 1e-3


def test_checkpoint_restores_on_another_mesh_shape(mesh_runs):
    root = mesh_runs["root"]
    assert mesh_runs["restored_shardings"]
    for a, b in zip(_params(root, "one_restored_on_2x4"), _params(root, "one"), strict=True):
        np.testing.assert_array_equal(a, b)
    resumed = mesh_runs["losses"]["resumed"]
    assert len(resumed) == 10  # steps 11-20, after the restored step 10
    np.testing.assert_allclose(resumed, mesh_runs["losses"]["one"][10:], rtol=1e-5)
    assert _max_diff(_params(root, "resumed"), _params(root, "one")) < 1e-3

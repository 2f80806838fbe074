"""Multi-host training: two local CPU processes (localhost coordinator, gloo collectives, two
CPU devices each, a data=2 x fsdp=2 mesh over the four) train a stage in lockstep, each reading
only its half of every batch, and match a one-process one-device run; only process 0 logs and
writes metrics; the checkpoint they write together holds the final state."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from step_fixtures import random_batch, tiny_models

from goalrank_jax import checkpointing, configs, policies, sharding
from goalrank_jax import train_step as ts

NUM_STEPS = 8

# argv: tests dir, workdir, process id (-1 = the one-process reference), coordinator port.
WORKER_SCRIPT = r"""
import functools, json, sys
import jax
tests_dir, workdir, process_id, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
distributed = process_id >= 0
jax.config.update("jax_num_cpu_devices", 2 if distributed else 1)
from goalrank_jax import main
main.initialize_distributed(distributed, f"localhost:{port}" if distributed else None,
                            2 if distributed else None, process_id if distributed else None)
import numpy as np
from jax.experimental import multihost_utils
sys.path.insert(0, tests_dir)
from step_fixtures import random_batch, tiny_models
from goalrank_jax import configs, policies, sharding
from goalrank_jax import train_step as ts
from goalrank_jax.data import pipeline
from goalrank_jax.metric_writer import MetricWriter
from goalrank_jax.train import train_stage

_, reward_module = tiny_models(dropout=0.1)
raw = random_batch(batch_size=64, list_len=3, seed=7)
source = [{k: v[i] for k, v in raw.items()} for i in range(64)]
key = jax.random.key(0, impl="threefry2x32")
evaluator = policies.Evaluator(reward_module, "pointwise")
optimizer = ts.make_optimizer(configs.OptimConfig(learning_rate=1e-2))
mesh = sharding.make_mesh(data=2, fsdp=2) if distributed else sharding.make_mesh(1)
state = jax.jit(lambda k: ts.create_state(evaluator.init(k, raw, 3), optimizer))(key)
shardings = sharding.state_sharding(state, mesh, min_size=64)
compiled = ts.compile_step(
    functools.partial(ts.reward_model_train_step, evaluator=evaluator, optimizer=optimizer,
                      list_len=3),
    shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh))
losses = []


def recording_step(state, batch, key):
    state, metrics = compiled(state, batch, key)
    losses.append(metrics["loss"])
    return state, metrics


dataset = pipeline.train_dataset(source, 8, 3)
with jax.set_mesh(mesh):
    writer = MetricWriter(workdir)
    final = train_stage(
        name="rm", workdir=workdir, state=sharding.put_tree(state, shardings),
        step_fn=recording_step, dataset=dataset,
        stage_config=configs.StageConfig(num_steps=NUM_STEPS, batch_size=8, log_every=1,
                                         checkpoint_every=4, eval_every=0),
        base_key=key, mesh=mesh, writer=writer, log_fn=main.chief_log_fn)
    writer.close()
params = multihost_utils.process_allgather(final.params, tiled=True)
np.savez(f"{workdir}/params_{max(process_id, 0)}.npz",
         *[np.asarray(x) for x in jax.tree_util.tree_leaves(params)])
print("RESULT " + json.dumps({
    "process_index": jax.process_index(), "process_count": jax.process_count(),
    "devices": jax.device_count(), "local_rows": int(dataset[0]["user_id"].shape[0]),
    "losses": [float(x) for x in jax.device_get(losses)],
    "split_leaves": sum(any(a is not None for a in x.sharding.spec)
                        for x in jax.tree_util.tree_leaves(final))}), flush=True)
""".replace("NUM_STEPS", str(NUM_STEPS))


@pytest.mark.parametrize(
    "enabled, coordinator, num, pid, message",
    [
        (False, "localhost:1234", None, None, "--coordinator_address need"),
        (True, "localhost:1234", 2, None, "given without --process_id"),
        (True, "localhost:1234", 2, 2, r"--process_id \(2\) must be in \[0, 2\)"),
    ],
)
def test_process_flags_are_checked_before_initializing(enabled, coordinator, num, pid, message):
    from goalrank_jax import main

    with pytest.raises(ValueError, match=message):
        main.initialize_distributed(enabled, coordinator, num, pid)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multihost")
    shared, alone = root / "shared", root / "alone"
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    # LLVM optimisation is most of the compile time of this tiny step; numerics are compared
    # between processes that all compile the same way.
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    commands = [
        [sys.executable, "-c", WORKER_SCRIPT, tests_dir, str(workdir), str(pid), port]
        for workdir, pid in ((shared, 0), (shared, 1), (alone, -1))
    ]
    procs = [
        subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=os.path.dirname(tests_dir),
        )
        for cmd in commands
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=400))
    finally:
        for proc in procs:  # a crashed peer leaves the other waiting for collectives
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
    return dict(
        shared=shared,
        alone=alone,
        stdout=[out for out, _ in outputs],
        results=[_result(out) for out, _ in outputs],
    )


def _params(workdir, index):
    with np.load(os.path.join(workdir, f"params_{index}.npz")) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def test_two_processes_form_one_mesh_and_split_the_data(runs):
    first, second, alone = runs["results"]
    assert (first["process_index"], second["process_index"]) == (0, 1)
    assert first["process_count"] == second["process_count"] == 2
    assert first["devices"] == second["devices"] == 4
    assert first["local_rows"] == second["local_rows"] == 4  # half of each batch of 8
    assert alone["process_count"] == 1 and alone["local_rows"] == 8
    assert first["split_leaves"] > 0  # some parameters really are split over 'fsdp'


def test_processes_train_in_lockstep_and_match_one_process(runs):
    first, second, alone = runs["results"]
    assert len(first["losses"]) == NUM_STEPS
    assert first["losses"] == second["losses"]  # the same global computation
    # Same global batches and threefry bits; only float32 reduction order differs.
    np.testing.assert_allclose(first["losses"], alone["losses"], rtol=1e-5)
    shared0, shared1 = _params(runs["shared"], 0), _params(runs["shared"], 1)
    reference = _params(runs["alone"], 0)
    for a, b in zip(shared0, shared1, strict=True):
        np.testing.assert_array_equal(a, b)
    # Adam divides by sqrt(v) + eps: float32 rounding in near-zero gradients moves a parameter
    # by up to a few percent of the lr=1e-2 step, so the bound is in units of that step.
    diff = max(float(np.max(np.abs(a - c))) for a, c in zip(shared0, reference, strict=True))
    assert diff < 1e-3, diff


def test_only_process_zero_logs_and_writes_metrics(runs):
    chief, other, _ = runs["stdout"]
    assert f"[rm] step {NUM_STEPS}/{NUM_STEPS}" in chief
    assert "[rm]" not in other
    rows = [json.loads(line) for line in open(runs["shared"] / "metrics.jsonl")]
    steps = [row["step"] for row in rows if "rm/loss" in row]
    assert steps == list(range(1, NUM_STEPS + 1))  # one writer, each step once


def test_collective_checkpoint_restores_in_one_process(runs):
    """The checkpoint the two processes wrote together (four devices) restores on this
    process's one device into the final state."""
    _, reward_module = tiny_models(dropout=0.1)
    evaluator = policies.Evaluator(reward_module, "pointwise")
    optimizer = ts.make_optimizer(configs.OptimConfig(learning_rate=1e-2))
    batch = random_batch(batch_size=8, list_len=3)
    abstract = jax.eval_shape(
        lambda key: ts.create_state(evaluator.init(key, batch, 3), optimizer), jax.random.key(0)
    )
    one_device = sharding.replicated(sharding.make_mesh(1))
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device), abstract
    )
    ckpt = checkpointing.Checkpointer(str(runs["shared"] / "rm" / "checkpoints"))
    try:
        assert ckpt.latest_step() == NUM_STEPS
        restored, data = ckpt.restore(NUM_STEPS, abstract)
    finally:
        ckpt.close()
    assert data["iterator"] == {"next_index": NUM_STEPS}
    leaves = jax.tree_util.tree_leaves(restored.params)
    for a, b in zip(leaves, _params(runs["shared"], 0), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


# argv: workdir of this process (its own disk), process id, coordinator port.
CONFIG_CHECK_SCRIPT = r"""
import json, os, sys
import jax
workdir, process_id, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.config.update("jax_num_cpu_devices", 1)
from goalrank_jax import main
main.initialize_distributed(True, f"localhost:{port}", 2, process_id)
from goalrank_jax import configs, run
config = configs.ExperimentConfig()
try:
    run.check_workdir_config(os.path.join(workdir, "config.json"), config, workdir)
    print("RESULT " + json.dumps({"refused": ""}), flush=True)
except ValueError as err:
    print("RESULT " + json.dumps({"refused": str(err)}), flush=True)
"""


def test_every_process_stops_when_the_chief_finds_another_config(tmp_path):
    """Per-host disks: only process 0's workdir holds a config.json, of another generator
    width; both processes refuse, process 1 on process 0's verdict."""
    from goalrank_jax import config_check, configs

    disks = [tmp_path / "host0", tmp_path / "host1"]
    for disk in disks:
        disk.mkdir()
    saved = config_check.config_json(configs.ExperimentConfig())
    saved["generator"]["embed_dim"] = 2 * saved["generator"]["embed_dim"]
    (disks[0] / "config.json").write_text(json.dumps(saved))
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONFIG_CHECK_SCRIPT, str(disk), str(pid), port],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=os.path.dirname(tests_dir),
        )
        for pid, disk in enumerate(disks)
    ]
    try:
        results = [_result(proc.communicate(timeout=240)[0]) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert "generator.embed_dim: 128 there, 64 here" in results[0]["refused"]
    assert "process 0 names the fields that differ" in results[1]["refused"]

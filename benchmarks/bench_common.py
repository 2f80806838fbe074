"""Shared pieces of the train-step benchmarks: random requests, the paper's size, the compiled
GoalRank step, step timing, the XLA cost analysis, this machine's matmul rate and peak memory.

Benchmark scripts run as ``python benchmarks/<name>.py``, which puts this directory on
``sys.path``; they import this module as ``bench_common``.
"""

from __future__ import annotations

import dataclasses
import functools
import resource
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from goalrank_jax import checkpointing, configs, policies, sharding
from goalrank_jax import train_step as ts
from goalrank_jax.models import make_generator, make_reward_model

NUM_USERS, NUM_ITEMS = 1000, 2000

# SPEC section 4: the paper's generator and evaluator (D=128, 2 layers, 2 heads, FF 128) on
# N=50 candidates, lists of L=6, groups of K=20.
PAPER_MODEL = dict(embed_dim=128, num_layers=2, num_heads=2, ff_dim=128)
PAPER_DATA = dict(num_candidates=50, list_len=6)
PAPER_GROUP_SIZE = 20


def random_batch(batch_size, num_candidates, list_len, history_len, seed=0):
    """Random requests in the dataset's feature layout (the cost of a step does not depend on
    the values)."""
    rng = np.random.default_rng(seed)
    cand = np.stack(
        [rng.choice(NUM_ITEMS, num_candidates, replace=False) for _ in range(batch_size)]
    ).astype(np.int32)
    logged = np.full((batch_size, num_candidates), -1, np.int32)
    logged[:, :list_len] = np.arange(list_len)
    history = rng.integers(0, NUM_ITEMS, (batch_size, history_len)).astype(np.int32)
    return {
        "user_id": rng.integers(0, NUM_USERS, batch_size).astype(np.int32),
        "history_items": history,
        "history_mask": history >= 0,
        "history_labels": rng.integers(0, 2, (batch_size, history_len)).astype(np.int32),
        "cand_items": cand,
        "cand_mask": cand >= 0,
        "cand_labels": ((logged >= 0) & (rng.random(cand.shape) < 0.2)).astype(np.float32),
        "cand_logged_pos": logged,
        "cand_retriever_score": rng.normal(size=cand.shape).astype(np.float32),
        "example_mask": np.ones(batch_size, bool),
    }


def resize(
    config: configs.ExperimentConfig,
    *,
    size: str = "default",
    variant: str | None = None,
    dtype: str | None = None,
    batch_size: int = 0,
    group_size: int = 0,
    num_candidates: int = 0,
    list_len: int = 0,
) -> configs.ExperimentConfig:
    """The experiment config at the paper's size (``size="paper"``) or as given, with optional
    overrides (0 / None = keep)."""
    generator, reward, data, gro = (
        config.generator,
        config.reward_model.model,
        config.data,
        config.gro,
    )
    if size == "paper":
        generator = dataclasses.replace(generator, **PAPER_MODEL)
        reward = dataclasses.replace(reward, **PAPER_MODEL)
        data = dataclasses.replace(data, **PAPER_DATA)
        gro = dataclasses.replace(gro, group_size=PAPER_GROUP_SIZE)
    elif size != "default":
        raise ValueError(f"Unknown size {size!r}; use 'default' or 'paper'.")
    if variant:
        generator = dataclasses.replace(generator, variant=variant)
    if dtype:
        generator = dataclasses.replace(generator, dtype=dtype)
        reward = dataclasses.replace(reward, dtype=dtype)
    if num_candidates:
        data = dataclasses.replace(data, num_candidates=num_candidates)
    if list_len:
        data = dataclasses.replace(data, list_len=list_len)
    if group_size:
        gro = dataclasses.replace(gro, group_size=group_size)
    train = config.train
    if batch_size:
        train = dataclasses.replace(train, batch_size=batch_size)
    env = dataclasses.replace(data.env, list_len=data.list_len)
    data = dataclasses.replace(data, env=env)
    out = dataclasses.replace(
        config,
        generator=generator,
        reward_model=dataclasses.replace(config.reward_model, model=reward),
        data=data,
        gro=gro,
        train=train,
    )
    out.validate()
    return out


@dataclasses.dataclass
class StepBench:
    """A compiled GoalRank train step with its state and batch, ready to time."""

    step: object
    state: object
    batch: dict
    key: jax.Array
    config: configs.ExperimentConfig
    compile_s: float
    generator_params: int
    step_fn: Callable[[int | bool], Callable]  # unroll -> the uncompiled step function

    def run(self, num_steps: int) -> float:
        """Seconds per step over ``num_steps`` steps (blocking at the end)."""
        start = time.perf_counter()
        for _ in range(num_steps):
            self.state, metrics = self.step(self.state, self.batch, self.key)
        jax.block_until_ready(metrics)
        return (time.perf_counter() - start) / num_steps

    def median_step_s(self, repeats: int, num_steps: int) -> tuple[float, list[float]]:
        times = [self.run(num_steps) for _ in range(repeats)]
        return statistics.median(times), times


def _step_fn(config, generator, evaluator, optimizer, unroll):
    return functools.partial(
        ts.goalrank_train_step,
        policy=policies.GeneratorPolicy(
            generator,
            config.data.list_len,
            plackett_luce=config.gro.group_construction == "plackett_luce",
            unroll=unroll,
        ),
        evaluator=evaluator,
        optimizer=optimizer,
        gro=config.gro,
    )


def build(config: configs.ExperimentConfig, mesh) -> StepBench:
    """Initialises the models on a random batch and compiles the train step (timed)."""
    data = config.data
    batch = random_batch(
        config.train.batch_size, data.num_candidates, data.list_len, data.history_len
    )
    generator = make_generator(config.generator, NUM_USERS, NUM_ITEMS)
    reward = make_reward_model(
        config.reward_model.kind, config.reward_model.model, NUM_USERS, NUM_ITEMS, data.list_len
    )
    evaluator = policies.Evaluator(reward, config.reward_model.kind)
    key = jax.random.key(0, impl=config.prng_impl)
    optimizer = ts.make_optimizer(config.train.optim)
    step_fn = functools.partial(_step_fn, config, generator, evaluator, optimizer)
    reward_params = evaluator.init(key, batch, data.list_len)
    params = generator.init(key, batch)
    state = ts.create_state(params, optimizer, reward_params)
    state = sharding.put_replicated(state, mesh)
    placed = sharding.put_batch(batch, mesh)
    compiled, compile_s = compile_replicated(step_fn(1), state, placed, key, mesh)
    count = sum(x.size for x in jax.tree_util.tree_leaves(params))
    return StepBench(compiled, state, placed, key, config, compile_s, count, step_fn)


def compile_replicated(step_fn, state, batch, key, mesh):
    """(compiled step, compile seconds): ``step_fn`` jitted with the state replicated and
    donated, the batch on the data axis, lowered on ``state`` (arrays or ShapeDtypeStructs)."""
    repl = sharding.replicated(mesh)
    step = ts.compile_step(step_fn, repl, sharding.batch_sharding(mesh), repl)
    start = time.perf_counter()
    compiled = step.lower(state, batch, key).compile()
    return compiled, time.perf_counter() - start


def step_flops(bench: StepBench) -> float:
    """FLOPs of one train step from XLA's cost analysis of the step compiled with the L-step
    decoding loop unrolled (the analysis counts a rolled loop's body once)."""
    abstract = checkpointing.abstract_like((bench.state, bench.batch))
    cost = jax.jit(bench.step_fn(True)).lower(*abstract, bench.key).compile().cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0]
    return float(cost["flops"])


def matmul_flops_per_s(size: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
    """Dense [size, size] @ [size, size] FLOP/s on the default device (best of ``repeats``)."""
    a = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), dtype)
    b = jnp.asarray(np.random.default_rng(1).normal(size=(size, size)), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def memory_report() -> dict:
    """Peak resident memory of this process and, on an accelerator, device memory."""
    report = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    if stats:
        report["device_peak_mb"] = round(stats.get("peak_bytes_in_use", 0) / 2**20, 1)
        report["device_in_use_mb"] = round(stats.get("bytes_in_use", 0) / 2**20, 1)
    return report

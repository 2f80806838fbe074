"""Train-step throughput of an experiment config on random requests; prints JSON.

    python benchmarks/train_step_throughput.py --config=experiments/goalrank.py --repeats=5

Times the compiled GoalRank train step (group sampling, rewards, reference policy, loss,
gradients, update) after compilation: the median over ``repeats`` timed windows of ``steps``
steps each. Sizes (B, N, L, K, D) come from the config; the requests are random, which does
not change the cost of a step.
"""

import functools
import json
import platform
import statistics
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from goalrank_jax import configs, policies, sharding
from goalrank_jax import train_step as ts
from goalrank_jax.models import make_generator, make_reward_model

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/goalrank.py", "Experiment config.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed windows.")
_STEPS = flags.DEFINE_integer("steps", 5, "Steps per timed window.")
NUM_USERS, NUM_ITEMS = 1000, 2000


def random_batch(batch_size, num_candidates, list_len, history_len, rng):
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


def main(_):
    config = configs.from_config_dict(_CONFIG.value, jax.device_count())
    data = config.data
    batch_size = config.train.batch_size
    rng = np.random.default_rng(0)
    batch = random_batch(batch_size, data.num_candidates, data.list_len, data.history_len, rng)
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        generator = make_generator(config.generator, NUM_USERS, NUM_ITEMS)
        reward = make_reward_model(
            config.reward_model.kind,
            config.reward_model.model,
            NUM_USERS,
            NUM_ITEMS,
            data.list_len,
        )
        evaluator = policies.Evaluator(reward, config.reward_model.kind)
        key = jax.random.key(0, impl=config.prng_impl)
        optimizer = ts.make_optimizer(config.train.optim)
        reward_params = evaluator.init(key, batch, data.list_len)
        state = ts.create_state(generator.init(key, batch), optimizer, reward_params)
        state = sharding.put_replicated(state, mesh)
        repl = sharding.replicated(mesh)
        step = ts.compile_step(
            functools.partial(
                ts.goalrank_train_step,
                policy=policies.GeneratorPolicy(
                    generator,
                    data.list_len,
                    plackett_luce=config.gro.group_construction == "plackett_luce",
                ),
                evaluator=evaluator,
                optimizer=optimizer,
                gro=config.gro,
            ),
            repl,
            sharding.batch_sharding(mesh),
            repl,
        )
        placed = sharding.put_batch(batch, mesh)
        start = time.perf_counter()
        state, metrics = step(state, placed, key)
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - start
        times = []
        for _ in range(_REPEATS.value):
            start = time.perf_counter()
            for _ in range(_STEPS.value):
                state, metrics = step(state, placed, key)
            jax.block_until_ready(metrics)
            times.append((time.perf_counter() - start) / _STEPS.value)
    step_s = statistics.median(times)
    print(
        json.dumps(
            {
                "benchmark": "goalrank_train_step",
                "backend": jax.default_backend(),
                "devices": jax.device_count(),
                "machine": platform.machine(),
                "batch_size": batch_size,
                "num_candidates": data.num_candidates,
                "list_len": data.list_len,
                "group_size": config.gro.group_size,
                "embed_dim": config.generator.embed_dim,
                "num_layers": config.generator.num_layers,
                "group_construction": config.gro.group_construction,
                "prng_impl": config.prng_impl,
                "compile_plus_first_step_s": round(compile_s, 3),
                "step_s_median": round(step_s, 4),
                "requests_per_second": round(batch_size / step_s, 2),
                "step_s_all": [round(t, 4) for t in times],
            }
        )
    )


if __name__ == "__main__":
    app.run(main)

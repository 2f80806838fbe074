"""Train-step time and memory of the generator size presets at the scaling study's budget;
prints one JSON line per (variant, preset).

    python benchmarks/preset_step_time.py --presets=1m,3m,10m,30m,100m,300m --variants=fast
    python benchmarks/preset_step_time.py --presets=0.3m,1m,3m,10m --variants=prefix

The config is the scaling study's (experiments/scaling.py: batch 32, K = 8, N = 50, L = 6, reward
model D = 64, float32) with the generator of each preset (goalrank_jax/scaling/presets.py); the
requests are random (the cost of a step does not depend on the values). For each point the step is
first compiled on *abstract* state (nothing allocated) and XLA's memory analysis gives the bytes the
step needs (arguments + outputs - donated aliases + temporaries). A point whose need exceeds
``--memory_limit_gb`` (default: 90 % of MemAvailable, so this machine's) is reported as not
fitting and the larger presets of that variant are skipped. Otherwise the state is allocated,
one warm-up step runs, and the median of ``--repeats`` windows of ``--steps`` steps is reported,
with the 1-minute load average at the start and end (figures on a shared machine are slower).
``--notimed`` stops after the memory analysis (for presets whose step takes minutes here).
"""

import dataclasses
import functools
import json
import os
import platform
import statistics
import time

import bench_common
import jax
from absl import app, flags
from ml_collections import config_flags

from goalrank_jax import configs, policies, sharding
from goalrank_jax import train_step as ts
from goalrank_jax.models import make_generator, make_reward_model
from goalrank_jax.scaling import presets

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/scaling.py", "Experiment config.")
_PRESETS = flags.DEFINE_list("presets", list(presets.PRESETS), "Size presets, any order.")
_VARIANTS = flags.DEFINE_list("variants", ["prefix", "fast"], "Generator variants.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Requests per step (0 = the config's).")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed windows (the median is reported).")
_STEPS = flags.DEFINE_integer("steps", 1, "Steps per timed window.")
_TIMED = flags.DEFINE_bool(
    "timed", True, "Run and time the step; --notimed reports compilation and memory only."
)
_LIMIT = flags.DEFINE_float(
    "memory_limit_gb", 0.0, "Skip points needing more (0 = 90% of this machine's MemAvailable)."
)


def available_gb() -> float:
    """MemAvailable of /proc/meminfo in GB (Linux); 0 when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return 0.0


def step_memory_gb(compiled) -> float:
    """Bytes one call of the compiled step holds at its peak, per XLA's memory analysis."""
    mem = compiled.memory_analysis()
    total = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
        + mem.temp_size_in_bytes
    )
    return total / 1e9


def measure(config: configs.ExperimentConfig, mesh, limit_gb: float) -> dict:
    data = config.data
    batch = bench_common.random_batch(
        config.train.batch_size, data.num_candidates, data.list_len, data.history_len
    )
    num_users, num_items = bench_common.NUM_USERS, bench_common.NUM_ITEMS
    generator = make_generator(config.generator, num_users, num_items)
    reward = make_reward_model(
        config.reward_model.kind, config.reward_model.model, num_users, num_items, data.list_len
    )
    evaluator = policies.Evaluator(reward, config.reward_model.kind)
    optimizer = ts.make_optimizer(config.train.optim)
    key = jax.random.key(0, impl=config.prng_impl)

    def init(key):
        params = generator.init(key, batch)
        return ts.create_state(params, optimizer, evaluator.init(key, batch, data.list_len))

    abstract = jax.eval_shape(init, key)
    params = sum(x.size for x in jax.tree_util.tree_leaves(abstract.params))
    counts = presets.count(abstract.params)
    step_fn = functools.partial(
        ts.goalrank_train_step,
        policy=policies.GeneratorPolicy(generator, data.list_len),
        evaluator=evaluator,
        optimizer=optimizer,
        gro=config.gro,
    )
    placed = sharding.put_batch(batch, mesh)
    compiled, compile_s = bench_common.compile_replicated(step_fn, abstract, placed, key, mesh)
    need_gb = step_memory_gb(compiled)
    record = {
        "generator_params": params,
        "generator_params_non_embedding": counts.non_embedding,
        "compile_s": round(compile_s, 1),
        "step_memory_gb": round(need_gb, 3),
        "memory_limit_gb": round(limit_gb, 1),
        "fits": need_gb <= limit_gb,
    }
    if not record["fits"] or not _TIMED.value:
        return record
    state = jax.jit(init, out_shardings=sharding.replicated(mesh))(key)
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    state, metrics = compiled(state, placed, key)  # warm-up
    jax.block_until_ready(metrics)
    record["first_step_s"] = round(time.perf_counter() - start, 3)
    times = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        for _ in range(_STEPS.value):
            state, metrics = compiled(state, placed, key)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / _STEPS.value)
    median = statistics.median(times)
    record.update(
        step_s_median=round(median, 3),
        step_s_all=[round(t, 3) for t in times],
        requests_per_second=round(config.train.batch_size / median, 2),
        load_avg_1m_start=round(load_start, 2),
        load_avg_1m_end=round(os.getloadavg()[0], 2),
    )
    return record


def main(_):
    values = _CONFIG.value.to_dict()
    values.pop("scaling", None)  # The study's own group (sizes, variants): not used here.
    base = configs.from_config_dict(values, jax.device_count())
    limit_gb = _LIMIT.value or 0.9 * available_gb()
    if limit_gb <= 0:
        raise ValueError("Cannot read MemAvailable here: pass --memory_limit_gb.")
    names = presets.sorted_names(_PRESETS.value)  # Unknown names raise, listing the valid ones.
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        for variant in _VARIANTS.value:
            for name in names:
                generator = presets.apply_preset(base.generator, name, variant)
                config = bench_common.resize(
                    dataclasses.replace(base, generator=generator),
                    batch_size=_BATCH.value,
                )
                record = {
                    "benchmark": "preset_train_step",
                    "variant": variant,
                    "preset": name,
                    "embed_dim": generator.embed_dim,
                    "num_layers": generator.num_layers,
                    "decoder_layers": generator.decoder_layers if variant == "fast" else 0,
                    "backend": jax.default_backend(),
                    "devices": jax.device_count(),
                    "machine": platform.machine(),
                    "cpu_count": os.cpu_count(),
                    "batch_size": config.train.batch_size,
                    "group_size": config.gro.group_size,
                    "num_candidates": config.data.num_candidates,
                    "list_len": config.data.list_len,
                    "dtype": generator.dtype,
                }
                record.update(measure(config, mesh, limit_gb))
                record.update(bench_common.memory_report())
                print(json.dumps(record), flush=True)
                if not record["fits"]:
                    break  # Larger presets of this variant need more still.


if __name__ == "__main__":
    app.run(main)

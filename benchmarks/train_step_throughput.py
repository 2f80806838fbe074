"""Train-step throughput, compile time, FLOP rate (MFU) and memory of both generator variants.

    python benchmarks/train_step_throughput.py                        # both variants, both sizes
    python benchmarks/train_step_throughput.py --sizes=paper --variants=prefix --batch_size=16

For each (size, variant) prints one JSON line: compile time, the median over ``repeats`` timed
windows of ``steps`` steps (after compilation), requests per second, the step's FLOPs from XLA's
cost analysis (of the step compiled with the decoding loop unrolled, since a rolled loop's body
is counted once), the achieved FLOP/s, the dense matmul FLOP/s measured in the same process, their
ratio (the MFU on this machine) and peak memory. A last line gives the fast/prefix speed-up per
size. Sizes: ``default`` = the experiment config as it is; ``paper`` = D=128, 2 layers, 2 heads,
FF 128, N=50, L=6, K=20 for generator and reward model (SPEC section 4). The requests are random,
which does not change the cost of a step.
"""

import json
import platform

import bench_common
import jax
from absl import app, flags
from ml_collections import config_flags

from goalrank_jax import configs, sharding

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/goalrank.py", "Experiment config.")
_VARIANTS = flags.DEFINE_list("variants", ["prefix", "fast"], "Generator variants to time.")
_SIZES = flags.DEFINE_list("sizes", ["default", "paper"], "'default' (config) and/or 'paper'.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Requests per step (0 = the config's).")
_DTYPE = flags.DEFINE_enum("dtype", "", ["", "float32", "bfloat16"], "Compute dtype override.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed windows (the median is reported).")
_STEPS = flags.DEFINE_integer("steps", 3, "Steps per timed window.")
_FLOPS = flags.DEFINE_bool("flops", True, "Compile the unrolled step for its FLOP count.")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Size of the reference square matmul.")


def main(_):
    base = configs.from_config_dict(_CONFIG.value, jax.device_count())
    mesh = sharding.make_mesh()
    matmul_rate = bench_common.matmul_flops_per_s(_MATMUL.value)
    throughput = {}
    with jax.set_mesh(mesh):
        for size in _SIZES.value:
            for variant in _VARIANTS.value:
                config = bench_common.resize(
                    base,
                    size=size,
                    variant=variant,
                    dtype=_DTYPE.value or None,
                    batch_size=_BATCH.value,
                )
                bench = bench_common.build(config, mesh)
                bench.run(1)  # warm-up
                step_s, times = bench.median_step_s(_REPEATS.value, _STEPS.value)
                rps = config.train.batch_size / step_s
                throughput[(size, variant)] = rps
                record = {
                    "benchmark": "goalrank_train_step",
                    "size": size,
                    "variant": variant,
                    "dtype": config.generator.dtype,
                    "backend": jax.default_backend(),
                    "devices": jax.device_count(),
                    "machine": platform.machine(),
                    "batch_size": config.train.batch_size,
                    "num_candidates": config.data.num_candidates,
                    "list_len": config.data.list_len,
                    "group_size": config.gro.group_size,
                    "embed_dim": config.generator.embed_dim,
                    "num_layers": config.generator.num_layers,
                    "reward_embed_dim": config.reward_model.model.embed_dim,
                    "generator_params": bench.generator_params,
                    "prng_impl": config.prng_impl,
                    "compile_s": round(bench.compile_s, 2),
                    "step_s_median": round(step_s, 4),
                    "step_s_all": [round(t, 4) for t in times],
                    "requests_per_second": round(rps, 2),
                    "matmul_gflops_per_s": round(matmul_rate / 1e9, 2),
                }
                if _FLOPS.value:
                    flops = bench_common.step_flops(bench)
                    record.update(
                        gflops_per_step=round(flops / 1e9, 3),
                        gflops_per_request=round(flops / 1e9 / config.train.batch_size, 4),
                        achieved_gflops_per_s=round(flops / step_s / 1e9, 2),
                        mfu_vs_matmul=round(flops / step_s / matmul_rate, 4),
                    )
                record.update(bench_common.memory_report())
                print(json.dumps(record), flush=True)
    speedups = {
        size: round(throughput[(size, "fast")] / throughput[(size, "prefix")], 2)
        for size in _SIZES.value
        if (size, "fast") in throughput and (size, "prefix") in throughput
    }
    if speedups:
        print(json.dumps({"benchmark": "fast_over_prefix_throughput", **speedups}), flush=True)


if __name__ == "__main__":
    app.run(main)

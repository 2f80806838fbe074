"""How the train-step time grows with K, N and L, for both generator variants; prints JSON and
writes a table (markdown) and a PNG.

    python benchmarks/step_scaling.py --output_dir=docs/figures

One axis varies at a time around the base point (the experiment config's sizes, K=8, N=50, L=6
by default): K in --group_sizes, N in --num_candidates, L in --list_lens. Each point is the
median over ``repeats`` windows of ``steps`` compiled steps. For each axis and variant a
least-squares line ``time = a + b * x`` is fitted; its R^2 says how linear the growth is.
"""

import json
import os

import bench_common
import jax
import matplotlib
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from goalrank_jax import configs, sharding

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/goalrank.py", "Experiment config.")
_VARIANTS = flags.DEFINE_list("variants", ["prefix", "fast"], "Generator variants.")
_K = flags.DEFINE_list("group_sizes", ["4", "8", "16", "32", "64"], "K values.")
_N = flags.DEFINE_list("num_candidates", ["25", "50", "100", "200"], "N values.")
_L = flags.DEFINE_list("list_lens", ["3", "6", "9", "12"], "L values.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Requests per step.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed windows per point (median reported).")
_STEPS = flags.DEFINE_integer("steps", 2, "Steps per timed window.")
_OUT = flags.DEFINE_string(
    "output_dir", "", "Where to write step_scaling.{md,png,json}; '' = none."
)

AXES = {"K": "group_size", "N": "num_candidates", "L": "list_len"}


def linear_fit(xs, ys) -> dict:
    slope, intercept = np.polyfit(xs, ys, 1)
    pred = slope * np.asarray(xs) + intercept
    ss_res = float(((np.asarray(ys) - pred) ** 2).sum())
    ss_tot = float(((np.asarray(ys) - np.mean(ys)) ** 2).sum())
    return {
        "slope_s": float(slope),
        "intercept_s": float(intercept),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0,
    }


def main(_):
    base = configs.from_config_dict(_CONFIG.value, jax.device_count())
    mesh = sharding.make_mesh()
    values = {"K": _K.value, "N": _N.value, "L": _L.value}
    results = []
    with jax.set_mesh(mesh):
        for variant in _VARIANTS.value:
            for axis, field in AXES.items():
                for value in map(int, values[axis]):
                    config = bench_common.resize(
                        base, variant=variant, batch_size=_BATCH.value, **{field: value}
                    )
                    bench = bench_common.build(config, mesh)
                    bench.run(1)
                    step_s, _ = bench.median_step_s(_REPEATS.value, _STEPS.value)
                    record = {
                        "benchmark": "step_scaling",
                        "variant": variant,
                        "axis": axis,
                        "value": value,
                        "batch_size": config.train.batch_size,
                        "K": config.gro.group_size,
                        "N": config.data.num_candidates,
                        "L": config.data.list_len,
                        "compile_s": round(bench.compile_s, 2),
                        "step_s": round(step_s, 5),
                    }
                    results.append(record)
                    print(json.dumps(record), flush=True)
    fits = {}
    for variant in _VARIANTS.value:
        for axis in AXES:
            points = [
                (r["value"], r["step_s"])
                for r in results
                if (r["variant"], r["axis"]) == (variant, axis)
            ]
            fits[f"{variant}/{axis}"] = linear_fit(*zip(*points, strict=True))
    print(json.dumps({"benchmark": "step_scaling_fits", **fits}), flush=True)
    if _OUT.value:
        write_outputs(results, fits, _OUT.value)


def write_outputs(results, fits, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "step_scaling.json"), "w") as f:
        json.dump({"points": results, "fits": fits}, f, indent=1)
    lines = ["| variant | axis | value | step (s) |", "|---|---|---|---|"]
    lines += [
        f"| {r['variant']} | {r['axis']} | {r['value']} | {r['step_s']:.4f} |" for r in results
    ]
    lines += [
        "",
        "| variant / axis | slope (s per unit) | intercept (s) | R^2 |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {fit['slope_s']:.5f} | {fit['intercept_s']:.4f} | {fit['r2']:.4f} |"
        for name, fit in fits.items()
    ]
    with open(os.path.join(out_dir, "step_scaling.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, axis in zip(axes, AXES, strict=True):
        for variant in sorted({r["variant"] for r in results}):
            pts = [
                (r["value"], r["step_s"])
                for r in results
                if (r["variant"], r["axis"]) == (variant, axis)
            ]
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "o-", label=variant)
        ax.set_xlabel(axis)
        ax.set_ylabel("train step (s)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("GoalRank train-step time vs K, N, L (others at the base point)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "step_scaling.png"), dpi=110)


if __name__ == "__main__":
    app.run(main)

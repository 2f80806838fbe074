"""The scaling study's outputs: ``scaling.md`` (table and trend lines), ``scaling.json`` and
``scaling.png`` (quality vs parameters on a log axis, with the MG-E curve vs k when given)."""

from __future__ import annotations

import json
import os

import numpy as np

from goalrank_jax.train import format_duration


def write_json(path: str, value) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def _quality_columns(list_len: int) -> list[tuple[str, str]]:
    names = ("true_reward", "oracle_fraction", f"N@{list_len}", f"H@{list_len}")
    return [(f"test/{n}", n.replace("_", " ")) for n in names]


def mge_points(mge: dict | None, metric: str) -> list[tuple[int, float, float]]:
    """(k, mean, std) of ``metric`` along the comparison's MG-E curve, by k."""
    points = []
    for point in (mge or {}).get("mge_curve", []):
        value = point["metrics"].get(metric)
        if value is not None:
            points.append((int(point["k"]), float(value["mean"]), float(value.get("std", 0.0))))
    return sorted(points)


def mge_reference(mge: dict | None, metric: str, curve) -> tuple[str, float] | None:
    """(label, value) of the MG-E reference line: MG-E with k chosen on validation when the
    comparison has it, else the best k of the curve itself (an optimistic bound)."""
    selection = (mge or {}).get("mge_selection")
    selected = (mge or {}).get("summary", {}).get("mge_selected", {})
    name = metric.split("/", 1)[-1]
    if selection and name in selected:
        ks = ",".join(str(k) for k in selection["k"].values())
        return f"MG-E, k chosen on validation (k={ks})", float(selected[name]["mean"])
    if curve:
        k, best, _ = max(curve, key=lambda p: p[1])
        return f"best MG-E on this split (k={k}, optimistic)", best
    return None


def seed_groups(records: list[dict]) -> list[list[dict]]:
    """The runs grouped by (variant, size), in the order of first appearance; a group holds
    one run per seed."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["variant"], r["size"]), []).append(r)
    return list(groups.values())


def mean_std(runs: list[dict], key: str) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one run) of ``results[key]`` over ``runs``."""
    values = np.array([r["results"].get(key, float("nan")) for r in runs], float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


def _variant_rows(records: list[dict], variant: str) -> list[list[dict]]:
    """The seed groups of ``variant``, smallest size first."""
    groups = [g for g in seed_groups(records) if g[0]["variant"] == variant]
    return sorted(groups, key=lambda g: g[0]["params_non_embedding"])


def trend_lines(records: list[dict], metric: str) -> list[str]:
    """Per variant: the metric (mean over seeds) at the smallest and the largest size, and at
    how many steps up in size it rose."""
    lines = []
    for variant in dict.fromkeys(r["variant"] for r in records):
        groups = _variant_rows(records, variant)
        rows = [g[0] for g in groups]
        values = [mean_std(g, metric)[0] for g in groups]
        first, last = values[0], values[-1]
        rises = sum(b > a for a, b in zip(values, values[1:], strict=False))
        change = 100 * (last - first) / abs(first) if first else float("nan")
        lines.append(
            f"- {variant}: {metric} {first:.4f} at {rows[0]['size']} -> {last:.4f} at "
            f"{rows[-1]['size']} ({change:+.1f} %); rises at {rises} of {len(values) - 1} steps "
            "up in size"
        )
    return lines


def plot(
    path: str, records: list[dict], metric: str, references: dict, mge_curve, mge_line=None
) -> None:
    """Quality versus non-embedding parameters (log x), one line per variant; a second panel
    with the MG-E curve versus k when given (same y axis); ``mge_line``: (label, value) of
    :func:`mge_reference`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if mge_curve else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), sharey=True, squeeze=False)
    ax = axes[0][0]
    for variant in dict.fromkeys(r["variant"] for r in records):
        groups = _variant_rows(records, variant)
        rows = [g[0] for g in groups]
        xs = [r["params_non_embedding"] for r in rows]
        stats = [mean_std(g, metric) for g in groups]
        ys = [m for m, _ in stats]
        ax.errorbar(
            xs,
            ys,
            yerr=[sd for _, sd in stats],
            marker="o",
            capsize=3,
            label=f"GoalRank ({variant})",
        )
        for x, y, r in zip(xs, ys, rows, strict=True):
            ax.annotate(r["size"], (x, y), textcoords="offset points", xytext=(3, 5), fontsize=7)
    for name, style, label in (
        ("reward_model_greedy", ":", "reward-model greedy"),
        ("random", "-.", "random lists"),
    ):
        if name in references:
            ax.axhline(references[name], ls=style, color="gray", label=label)
    if mge_line is not None:
        ax.axhline(mge_line[1], ls="--", color="C3", label=mge_line[0])
    if mge_curve:
        right = axes[0][1]
        right.errorbar(
            [p[0] for p in mge_curve],
            [p[1] for p in mge_curve],
            yerr=[p[2] for p in mge_curve],
            marker="s",
            color="C3",
            capsize=3,
            label="MG-E + reward model",
        )
        right.set_xscale("log")
        right.set_xlabel("number of generators k (MG-E)")
        right.set_title("MG-E versus k")
        right.legend(fontsize=8)
        right.grid(alpha=0.3)
    ax.set_xscale("log")
    ax.set_xlabel("generator parameters (non-embedding)")
    ax.set_ylabel(metric)
    ax.set_title("GoalRank versus generator size (fixed data and budget)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)


def _epochs(runs: list[dict]) -> str:
    """Epochs the runs' generators trained (each seed's, '*' where it stopped early)."""
    cells = []
    for r in runs:
        epochs = r["results"].get("stages/generator/epochs")
        if epochs is None:
            return "-"
        cells.append(
            f"{epochs:.1f}" + ("*" if r["results"].get("stages/generator/stopped_early") else "")
        )
    return ", ".join(cells)


def _cell(runs: list[dict], key: str) -> str:
    mean, std = mean_std(runs, key)
    return f"{mean:.4f}" + (f" ± {std:.4f}" if len(runs) > 1 else "")


def estimate_lines(estimates: list[dict]) -> list[str]:
    """The table of the study's time estimates against the time the runs took."""
    if not estimates:
        return []
    lines = [
        "Time estimates printed by the study, against the time the runs they were for took:",
        "",
        "| after run | runs estimated | estimated | actual | estimated / actual |",
        "|---|---|---|---|---|",
    ]
    for e in estimates:
        after = e["after"] + (f" (of {e['report']})" if e.get("report") else "")
        lines.append(
            f"| {after} | {len(e['runs'])} | {format_duration(e['estimate_s'])} | "
            f"{format_duration(e['actual_s'])} | {e['ratio']:.2f} |"
        )
    return lines + [""]


def earlier_lines(records: list[dict]) -> list[str]:
    """Which rows come from earlier reports of the study (``--earlier_reports``)."""
    sources: dict[str, list[str]] = {}
    for r in records:
        if r.get("report"):
            sources.setdefault(r["report"], []).append(f"{r['variant']} {r['size']} {r['seed']}")
    if not sources:
        return []
    lines = [
        "",
        "Runs from earlier reports of this study (same dataset, vocabulary, budget and metric; "
        "the same test scores of the seedless reference lists, so the same data and reward "
        "model), as variant, size, seed:",
        "",
    ]
    return lines + [f"- {path}: {', '.join(runs)}" for path, runs in sources.items()]


def budget_of(experiment) -> dict:
    """The budget every run of the study trains under (the report's "budget"; two reports of
    one study have the same)."""
    train = experiment.train
    return {
        "batch_size": train.batch_size,
        **(
            {"max_epochs": train.num_epochs, "patience": train.patience}
            if train.num_epochs
            else {
                "generator_steps": train.num_steps,
                "requests_seen": train.num_steps * train.batch_size,
            }
        ),
        "select_metric": train.select_metric or "none (last state)",
        "group_size": experiment.gro.group_size,
        "learning_rate": experiment.train.optim.learning_rate,
        "reward_weight": experiment.gro.reward_weight,
        "supervised_weight": experiment.gro.supervised_weight,
        "reward_model_steps": experiment.reward_model.train.num_steps,
    }


def write_report(
    workdir, records, *, experiment, study, vocabulary, mge, command, estimates=()
) -> dict:
    """Writes scaling.md, scaling.json and scaling.png under ``workdir``; returns the JSON."""
    list_len, metric = experiment.data.list_len, study["metric"]
    columns = _quality_columns(list_len)
    budget = budget_of(experiment)
    first = records[0]["results"]
    references = {}
    for policy in ("reward_model_greedy", "logged", "true_relevance_sort", "oracle", "random"):
        if f"test/{policy}/{metric.split('/', 1)[1]}" in first:
            references[policy] = first[f"test/{policy}/{metric.split('/', 1)[1]}"]
    curve = mge_points(mge, metric)
    mge_line = mge_reference(mge, metric, curve)
    plot(os.path.join(workdir, "scaling.png"), records, metric, references, curve, mge_line)
    lines = [
        f"# GoalRank scaling study ({experiment.data.dataset})",
        "",
        f"Command: `{command}`" if command else "",
        "",
        "Budget, the same for every run: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in budget.items())
        + f". Vocabulary: {vocabulary['num_users']:,} users, {vocabulary['num_items']:,} items"
        f"; N={experiment.data.num_candidates}, L={list_len}. Parameters from `jax.eval_shape` "
        "of the generator's init; embedding = item / user / label tables and item bias. Step "
        "time: median of the logged windows after the first (compilation). With several "
        "seeds: mean ± std over the seeds; epochs per seed (* = stopped early); step and wall "
        "time the mean per run.",
        "",
        "| variant | preset | params (non-emb) | params (total) | seeds | "
        + " | ".join(label for _, label in columns)
        + " | epochs | step (s) | wall time | reward model |",
        "|---|---|---|---|---|" + "---|" * len(columns) + "---|---|---|---|",
    ]
    groups = sorted(
        seed_groups(records), key=lambda g: (g[0]["variant"], g[0]["params_non_embedding"])
    )
    for runs in groups:
        r = runs[0]
        cells = [_cell(runs, key) for key, _ in columns]
        seeds = ", ".join(str(run.get("seed", "-")) for run in runs)
        step = float(np.mean([run["step_time_s"] for run in runs]))
        wall = float(np.mean([run["wall_time_s"] for run in runs]))
        sources = ", ".join(dict.fromkeys(run["reward_model"] for run in runs))
        lines.append(
            f"| {r['variant']} | {r['size']} | {r['params_non_embedding']:,} | "
            f"{r['params_total']:,} | {seeds} | " + " | ".join(cells) + f" | {_epochs(runs)} | "
            f"{step:.3f} | {format_duration(wall)} | {sources} |"
        )
    lines += earlier_lines(records)
    lines += ["", "Trend:", "", *trend_lines(records, metric), ""]
    if references:
        lines += [f"Reference policies on the same test split ({metric}): "]
        lines += ["", *[f"- {k}: {v:.4f}" for k, v in references.items()], ""]
    if curve:
        lines += [f"MG-E ({study['mge_results']}), {metric} mean ± std over seeds:", ""]
        lines += ["| k | mean | std |", "|---|---|---|"]
        lines += [f"| {k} | {m:.4f} | {sd:.4f} |" for k, m, sd in curve] + [""]
    if mge_line is not None:
        lines += [f"MG-E reference line: {mge_line[0]}, {mge_line[1]:.4f}.", ""]
    lines += estimate_lines(list(estimates))
    lines += ["![scaling](scaling.png)", ""]
    with open(os.path.join(workdir, "scaling.md.tmp"), "w") as f:
        f.write("\n".join(lines))
    os.replace(os.path.join(workdir, "scaling.md.tmp"), os.path.join(workdir, "scaling.md"))
    document = {
        "command": command,
        "dataset": experiment.data.dataset,
        "budget": budget,
        "study": study,
        "vocabulary": vocabulary,
        "runs": records,
        "references": references,
        "mge_curve": [{"k": k, "mean": m, "std": sd} for k, m, sd in curve],
        "mge_reference": None if mge_line is None else {"label": mge_line[0], "value": mge_line[1]},
        "time_estimates": list(estimates),
    }
    write_json(os.path.join(workdir, "scaling.json"), document)
    return document

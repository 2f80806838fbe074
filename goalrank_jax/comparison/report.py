"""The comparison's outputs: mean and standard deviation over seeds, ``comparison.md``,
``comparison.json`` and the PNG plots.

Inputs are the per-seed results ``{row: {metric: value}}`` written by the comparison; nothing
here trains or evaluates.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np

GENERATOR_ONLY = ("dnn", "prm", "supervised_ar", "nar")
GE = ("pier_ge", "nar4rec_ge")
REFERENCES = (
    "reward_model_greedy",
    "retriever",
    "logged",
    "random",
    "true_relevance_sort",
    "oracle",
)
MAIN_MGE_KS = (3, 20, 100)
LABELS = {
    "dnn": "DNN (pointwise MLP, sort)",
    "prm": "PRM (transformer scorer, sort)",
    "supervised_ar": "supervised AR generator (w_R = 0)",
    "nar": "NAR generator alone (greedy, no evaluator)",
    "pier_ge": "PIER-style G-E",
    "nar4rec_ge": "NAR4Rec-style G-E",
    "goalrank": "**GoalRank**",
    "reward_model_greedy": "reward model's own greedy list",
    "retriever": "retriever order",
    "logged": "logged list",
    "random": "random list",
    "true_relevance_sort": "sort by true relevance",
    "oracle": "oracle (beam search, true model)",
}


def summarize(per_seed: Sequence[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """[{row: {metric: value}}] -> {row: {metric: {mean, std, n}}} (std with ddof = 1; 0 for
    one seed). Rows and metrics missing from some seeds are averaged over the seeds that have
    them."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    rows = sorted({row for results in per_seed for row in results})
    for row in rows:
        metrics = sorted({m for results in per_seed for m in results.get(row, {})})
        for metric in metrics:
            values = [
                float(r[row][metric])
                for r in per_seed
                if row in r and metric in r[row] and math.isfinite(float(r[row][metric]))
            ]
            if not values:
                continue
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            summary.setdefault(row, {})[metric] = {
                "mean": float(np.mean(values)),
                "std": std,
                "n": len(values),
            }
    return summary


def primary_metric(summary) -> str:
    """The list-quality metric of the plots: the true reward on synthetic data, else the
    held-out simulator's reward, else N@L."""
    metrics = {m for row in summary.values() for m in row}
    for name in ("true_reward", "sim_reward"):
        if name in metrics:
            return name
    return next(m for m in sorted(metrics) if m.startswith("N@"))


def metric_columns(summary, list_len: int) -> list[str]:
    metrics = {m for row in summary.values() for m in row}
    wanted = [f"H@{list_len}", f"N@{list_len}", f"M@{list_len}", f"F1@{list_len}", "AUC"]
    wanted += ["true_reward", "oracle_fraction", "sim_reward", "rm_reward"]
    return [m for m in wanted if m in metrics]


def _cell(stat) -> str:
    if stat is None:
        return "n/a"
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def table(summary, rows: Sequence[tuple[str, str]], columns: Sequence[str]) -> str:
    """Markdown table of mean ± std; ``rows`` = [(row key, label)], missing rows skipped."""
    lines = [
        "| method | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for key, label in rows:
        if key not in summary:
            continue
        cells = [_cell(summary[key].get(c)) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean(summary, row, metric) -> float:
    return summary.get(row, {}).get(metric, {}).get("mean", float("nan"))


def mge_curve(summary, ks: Sequence[int], prefix: str = "mge") -> list[dict]:
    """[{"k": k, "metrics": {"<split>/<metric>": {mean, std, n}}}] of the MG-E rows."""
    return [
        {"k": int(k), "metrics": summary[f"{prefix}@{k}"]} for k in ks if f"{prefix}@{k}" in summary
    ]


def best_of(summary, rows: Sequence[str], metric: str) -> str | None:
    present = [r for r in rows if r in summary and metric in summary[r]]
    return max(present, key=lambda r: summary[r][metric]["mean"]) if present else None


def ordering(summary, metric: str, mge_rows: Sequence[str]) -> dict:
    """The paper's claimed ordering GoalRank > best MG-E > best G-E > best generator-only,
    checked on the means of ``metric``: each comparison with its two rows and values."""
    groups = {
        "goalrank": ["goalrank"],
        "best MG-E": list(mge_rows),
        "best G-E": list(GE),
        "best generator-only": [r for r in GENERATOR_ONLY if r != "nar"],
    }
    best = {name: best_of(summary, rows, metric) for name, rows in groups.items()}
    names = list(groups)
    checks = []
    for upper, lower in zip(names, names[1:], strict=False):
        a, b = best[upper], best[lower]
        if a is None or b is None:
            continue
        va, vb = summary[a][metric]["mean"], summary[b][metric]["mean"]
        checks.append(
            {
                "upper": upper,
                "row": a,
                "value": va,
                "lower": lower,
                "other_row": b,
                "other_value": vb,
                "holds": bool(va > vb),
            }
        )
    return {"metric": metric, "best": best, "checks": checks}


def plots(summary, output_dir: str, ks, group_sizes, list_len: int, dataset: str) -> list[str]:
    """Writes the PNG plots; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = primary_metric(summary)
    ndcg = f"N@{list_len}"
    written = []

    def stat(row, m):
        s = summary.get(row, {}).get(m)
        return (s["mean"], s["std"]) if s else (float("nan"), float("nan"))

    def hline(ax, row, m, label, style):
        mean, std = stat(row, m)
        if math.isfinite(mean):
            ax.axhline(
                mean, linestyle=style, label=label, color="C3" if row == "goalrank" else "C7"
            )
            if row == "goalrank":
                ax.axhspan(mean - std, mean + std, color="C3", alpha=0.15)

    # MG-E quality as k grows, GoalRank as a line.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, m in zip(axes, (metric, ndcg), strict=True):
        for prefix, label in (
            ("mge", "MG-E"),
            ("mge_no_rm", "MG-E without the evaluator's greedy"),
        ):
            xs = [k for k in ks if f"{prefix}@{k}" in summary]
            if not xs:
                continue
            values = np.array([stat(f"{prefix}@{k}", m) for k in xs])
            ax.errorbar(xs, values[:, 0], yerr=values[:, 1], marker="o", capsize=3, label=label)
        hline(ax, "goalrank", m, "GoalRank (one generator)", "-")
        hline(ax, "reward_model_greedy", m, "evaluator's greedy list", ":")
        ax.set_xscale("log")
        ax.set_xlabel("number of generators k")
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"MG-E vs number of generators ({dataset}; mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "mge_vs_k.png"), dpi=110)
    plt.close(fig)
    written.append("mge_vs_k.png")

    rows = [(k, f"goalrank_K{k}") for k in group_sizes if f"goalrank_K{k}" in summary]
    if rows:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, m in zip(axes, (metric, ndcg), strict=True):
            values = np.array([stat(row, m) for _, row in rows])
            ax.errorbar(
                [k for k, _ in rows], values[:, 0], yerr=values[:, 1], marker="o", capsize=3
            )
            ax.set_xscale("log", base=2)
            ax.set_xlabel("group size K")
            ax.set_ylabel(m)
            ax.grid(alpha=0.3)
        fig.suptitle(f"GoalRank vs group size K ({dataset}; mean ± std over seeds)")
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, "group_size.png"), dpi=110)
        plt.close(fig)
        written.append("group_size.png")

    for name, title, bars in (
        ("loss_form", "Loss form and weights", loss_form_rows(summary)),
        ("group_construction", "Group construction", construction_rows(summary)),
    ):
        if len(bars) < 2:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, m in zip(axes, (metric, ndcg), strict=True):
            values = np.array([stat(row, m) for row, _ in bars])
            ax.bar(range(len(bars)), values[:, 0], yerr=values[:, 1], capsize=4, color="C0")
            ax.set_xticks(range(len(bars)), [label for _, label in bars], fontsize=8, rotation=15)
            ax.set_ylabel(m)
            low = np.nanmin(values[:, 0] - values[:, 1])
            high = np.nanmax(values[:, 0] + values[:, 1])
            ax.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
            ax.grid(alpha=0.3, axis="y")
        fig.suptitle(f"{title} ({dataset}; mean ± std over seeds)")
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, f"{name}.png"), dpi=110)
        plt.close(fig)
        written.append(f"{name}.png")
    return written


def loss_form_rows(summary) -> list[tuple[str, str]]:
    rows = [
        ("goalrank", "log-prob CE, w_R=0.01, w_G=1 (default)"),
        ("goalrank_prob", "prob CE (ablation)"),
        ("goalrank_log_prob", "log-prob CE"),
        ("goalrank_wG0", "pure GRO: w_G=0, w_R=1"),
        ("supervised_ar", "supervised only: w_R=0"),
    ]
    return [(r, label) for r, label in rows if r in summary]


def construction_rows(summary) -> list[tuple[str, str]]:
    rows = [
        ("goalrank_on_policy", "on-policy"),
        ("goalrank", "default"),
        ("goalrank_plackett_luce", "Plackett-Luce"),
        ("goalrank_mixed", "mixed with auxiliary policies"),
    ]
    if "goalrank_on_policy" in summary:  # the default run under its ablation name
        rows = [r for r in rows if r[0] != "goalrank"]
    return [(r, label) for r, label in rows if r in summary]


def write(
    output_dir: str,
    per_seed: dict[int, dict],
    *,
    dataset: str,
    split: str,
    list_len: int,
    ks: Sequence[int],
    group_sizes: Sequence[int],
    aliases: dict[str, str],
    defaults: dict[str, object],
    command: str,
    timings: dict[int, dict[str, float]],
) -> dict:
    """Writes comparison.md, comparison.json and the plots; returns the JSON document."""
    seeds = sorted(per_seed)
    results = [dict(per_seed[s]) for s in seeds]
    for r in results:
        for alias, row in aliases.items():
            if row in r and alias not in r:
                r[alias] = r[row]
    summary = summarize(results)
    metric = primary_metric(summary)
    columns = metric_columns(summary, list_len)
    mge_rows = [f"mge@{k}" for k in ks if f"mge@{k}" in summary]
    checks = ordering(summary, metric, mge_rows)
    # The paper's real-data claims are on logged-label metrics: N@L is checked as well.
    ndcg = f"N@{list_len}"
    other_checks = [ordering(summary, ndcg, mge_rows)] if ndcg != metric else []
    pictures = plots(summary, output_dir, ks, group_sizes, list_len, dataset)

    main_rows = [(r, LABELS[r]) for r in GENERATOR_ONLY + GE]
    main_rows += [(f"mge@{k}", f"MG-E, k = {k}") for k in MAIN_MGE_KS if k in ks]
    best_mge = best_of(summary, mge_rows, metric)
    if best_mge is not None:
        main_rows.append((best_mge, f"best MG-E on {metric}: k = {best_mge.split('@')[1]}"))
    main_rows.append(("goalrank", LABELS["goalrank"]))
    main_rows += [(r, LABELS[r]) for r in REFERENCES]
    mge_table_rows = []
    for k in ks:
        mge_table_rows.append((f"mge@{k}", f"MG-E, k = {k}"))
    for k in ks:
        mge_table_rows.append((f"mge_no_rm@{k}", f"MG-E without the evaluator's greedy, k = {k}"))
    k_rows = [(f"goalrank_K{k}", f"K = {k}") for k in group_sizes]

    lines = [
        f"# Comparison on {dataset}",
        "",
        f"Command: `{command}`",
        "",
        f"Seeds: {', '.join(map(str, seeds))}; cells are mean ± standard deviation over seeds "
        f"(ddof = 1). Split: `{split}`, no model selection on it. Primary list-quality metric: "
        f"`{metric}`.",
        "",
        "Defaults of every GoalRank run unless the row says otherwise: "
        + ", ".join(f"{k} = {v}" for k, v in defaults.items())
        + ".",
        "",
        "## All methods",
        "",
        table(summary, main_rows, columns),
        "",
        "## The paper's ordering",
        "",
        f"Checked on the mean `{metric}` (GoalRank > best MG-E > best G-E > best generator-only):",
        "",
    ]
    for index, result in enumerate([checks] + other_checks):
        if index:
            lines += ["", f"Checked on the mean `{result['metric']}` (logged labels):", ""]
        for c in result["checks"]:
            sign = ">" if c["holds"] else "<="
            verdict = "holds" if c["holds"] else "does not hold"
            lines.append(
                f"- {c['upper']} (`{c['row']}`, {c['value']:.4f}) {sign} {c['lower']} "
                f"(`{c['other_row']}`, {c['other_value']:.4f}): {verdict}"
            )
    lines += [
        "",
        "## MG-E as the number of generators k grows",
        "",
        "![MG-E vs k](mge_vs_k.png)",
        "",
        table(summary, mge_table_rows, columns),
        "",
    ]
    if "group_size.png" in pictures:
        lines += [
            "## GoalRank vs group size K",
            "",
            "![K sweep](group_size.png)",
            "",
            table(summary, k_rows, columns),
            "",
        ]
    if "loss_form.png" in pictures:
        lines += [
            "## Loss form and loss weights",
            "",
            "![loss form](loss_form.png)",
            "",
            table(summary, loss_form_rows(summary), columns),
            "",
        ]
    if "group_construction.png" in pictures:
        lines += [
            "## Group construction",
            "",
            "![group construction](group_construction.png)",
            "",
            table(summary, construction_rows(summary), columns),
            "",
        ]
    lines += [
        "## Wall time",
        "",
        "Seconds each stage took when it ran (a seed's stages in the invocation that finished",
        "that seed; the shared stages summed over the invocations that ran them). `seed_total`",
        "of the first seed run in an invocation includes the shared stages.",
        "",
        "| runs of | stage | seconds |",
        "|---|---|---|",
    ]
    for group, stages in timings.items():
        for stage, seconds in stages.items():
            lines.append(f"| {group} | {stage} | {seconds:.1f} |")
    lines.append("")
    with open(os.path.join(output_dir, "comparison.md.tmp"), "w") as f:
        f.write("\n".join(lines))
    os.replace(
        os.path.join(output_dir, "comparison.md.tmp"), os.path.join(output_dir, "comparison.md")
    )
    document = {
        "dataset": dataset,
        "split": split,
        "seeds": seeds,
        "primary_metric": metric,
        "summary": summary,
        "mge_curve": [
            {"k": p["k"], "metrics": {f"{split}/{m}": v for m, v in p["metrics"].items()}}
            for p in mge_curve(summary, ks)
        ],
        "mge_no_rm_curve": mge_curve(summary, ks, "mge_no_rm"),
        "ordering": checks,
        "ordering_other_metrics": other_checks,
        "plots": pictures,
        "timings": timings,
    }
    tmp = os.path.join(output_dir, "comparison.json.tmp")
    with open(tmp, "w") as f:
        json.dump(document, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(output_dir, "comparison.json"))
    return document

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

from goalrank_jax import reference_policies

GENERATOR_ONLY = ("dnn", "prm", "supervised_ar", "nar")
GE = ("pier_ge", "nar4rec_ge")
# The reference rows: every policy of goalrank_jax/reference_policies.py, in its order.
REFERENCES = reference_policies.NAMES
MAIN_MGE_KS = (3, 20, 100)
# The row of MG-E with k chosen on the validation split (per seed; comparison/compare.py).
SELECTED_MGE = "mge_selected"
# A seed's evaluated results in its directory ``<workdir>/seed_<s>/`` (comparison/compare.py
# writes it, comparison/restore.py writes it back from a one-seed report).
RESULTS_FILE = "results.json"
ORDERING_INTRO = (
    "Checked on the mean `{metric}` (GoalRank > best MG-E > best G-E > best generator-only):"
)
# A default changes only if an ablation validates above it in every seed and by more than this
# many standard errors of the mean paired difference (default_rule; docs/results.md).
RULE_STANDARD_ERRORS = 2.0
MGE_CURVES = (("mge", "MG-E"), ("mge_no_rm", "MG-E without the evaluator's greedy"))
LABELS = {
    "dnn": "DNN (pointwise MLP, sort)",
    "prm": "PRM (transformer scorer, sort)",
    "supervised_ar": "supervised AR generator (w_R = 0)",
    "nar": "NAR generator alone (greedy, no evaluator)",
    "pier_ge": "PIER-style G-E",
    "nar4rec_ge": "NAR4Rec-style G-E",
    "goalrank": "**GoalRank**",
    "goalrank_prefix": "GoalRank, prefix generator (paper-faithful)",
    **{name: policy.label for name, policy in reference_policies.REGISTRY.items()},
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
            mean = float(np.mean(values))
            summary.setdefault(row, {})[metric] = {"mean": mean, "std": std, "n": len(values)}
    return summary


def primary_metric(summary) -> str:
    """The list-quality metric of the plots and of the first ordering check: the true reward on
    synthetic data, else N@L of the logged labels. The held-out simulator's reward is never
    primary: it is reported and checked as a secondary figure, not used for a conclusion (on
    ML-100K it ranks random lists above the logged ones)."""
    metrics = {m for row in summary.values() for m in row}
    if "true_reward" in metrics:
        return "true_reward"
    return next(m for m in sorted(metrics) if m.startswith("N@"))


# How the report names the metrics it checks the ordering on after the primary one.
SECONDARY_LABELS = {
    "N@": "logged labels",
    "sim_reward": "the held-out simulator: secondary, not used for a conclusion",
}


def secondary_metrics(summary, metric: str, list_len: int) -> list[str]:
    """The metrics the ordering is also checked on: N@L of the logged labels when the primary
    metric is another, then the held-out simulator's reward where it was measured."""
    metrics = {m for row in summary.values() for m in row}
    ndcg = f"N@{list_len}"
    wanted = [m for m in (ndcg, "sim_reward") if m != metric]
    return [m for m in wanted if m in metrics]


def secondary_label(metric: str) -> str:
    return next(label for prefix, label in SECONDARY_LABELS.items() if metric.startswith(prefix))


def plot_metrics(summary, list_len: int) -> tuple[str, str]:
    """The two panels of each plot: the primary metric and N@L (H@L where N@L is primary)."""
    metric = primary_metric(summary)
    ndcg = f"N@{list_len}"
    return (metric, ndcg if ndcg != metric else f"H@{list_len}")


def metric_columns(summary, list_len: int) -> list[str]:
    metrics = {m for row in summary.values() for m in row}
    wanted = [f"H@{list_len}", f"N@{list_len}", f"M@{list_len}", f"F1@{list_len}", "AUC"]
    wanted += ["true_reward", "oracle_fraction", "sim_reward", "rm_reward"]
    return [m for m in wanted if m in metrics]


def _cell(stat) -> str:
    if stat is None:
        return "n/a"
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def table(
    summary, rows: Sequence[tuple[str, str]], columns: Sequence[str], num_seeds: int = 0
) -> str:
    """Markdown table of mean ± std; ``rows`` = [(row key, label)], missing rows skipped. With
    ``num_seeds``, a row measured in fewer seeds says in how many (its std covers only those)."""
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key, label in rows:
        if key not in summary:
            continue
        cells = [_cell(summary[key].get(c)) for c in columns]
        seen = max((summary[key][c]["n"] for c in columns if c in summary[key]), default=0)
        if 0 < seen < num_seeds:
            label = f"{label} (seeds: {seen} of {num_seeds})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
        # NAR alone is a reference row, the generator half of the NAR4Rec-style G-E system
        # (evaluation.py), not one of the paper's generator-only baselines; its table row
        # stays, so a reader can set it beside them.
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
        check = dict(upper=upper, row=a, value=va, lower=lower, other_row=b, other_value=vb)
        checks.append({**check, "holds": bool(va > vb)})
    return {"metric": metric, "best": best, "checks": checks}


def _stat(summary, row, metric) -> tuple[float, float]:
    s = summary.get(row, {}).get(metric)
    return (s["mean"], s["std"]) if s else (float("nan"), float("nan"))


def _save(fig, plt, output_dir: str, name: str, title: str, dataset: str) -> str:
    fig.suptitle(f"{title} ({dataset}; mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, name), dpi=110)
    plt.close(fig)
    return name


def _mge_plot(plt, summary, metrics, ks) -> object:
    """MG-E quality as k grows, GoalRank and the evaluator's greedy list as lines."""

    def hline(ax, row, m, label, style):
        mean, std = _stat(summary, row, m)
        if math.isfinite(mean):
            ax.axhline(
                mean, linestyle=style, label=label, color="C3" if row == "goalrank" else "C7"
            )
            if row == "goalrank":
                ax.axhspan(mean - std, mean + std, color="C3", alpha=0.15)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, m in zip(axes, metrics, strict=True):
        for prefix, label in MGE_CURVES:
            xs = [k for k in ks if f"{prefix}@{k}" in summary]
            if not xs:
                continue
            values = np.array([_stat(summary, f"{prefix}@{k}", m) for k in xs])
            ax.errorbar(xs, values[:, 0], yerr=values[:, 1], marker="o", capsize=3, label=label)
        hline(ax, "goalrank", m, "GoalRank (one generator)", "-")
        hline(ax, "reward_model_greedy", m, "evaluator's greedy list", ":")
        ax.set_xscale("log")
        ax.set_xlabel("number of generators k")
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


def _group_size_plot(plt, summary, metrics, rows) -> object:
    """GoalRank's quality vs the group size K; ``rows`` = [(K, row)]."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, m in zip(axes, metrics, strict=True):
        values = np.array([_stat(summary, row, m) for _, row in rows])
        ax.errorbar([k for k, _ in rows], values[:, 0], yerr=values[:, 1], marker="o", capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("group size K")
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
    return fig


def _bar_plot(plt, summary, metrics, bars) -> object:
    """One bar per ablation row; ``bars`` = [(row, label)]."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, m in zip(axes, metrics, strict=True):
        values = np.array([_stat(summary, row, m) for row, _ in bars])
        ax.bar(range(len(bars)), values[:, 0], yerr=values[:, 1], capsize=4, color="C0")
        ax.set_xticks(range(len(bars)), [label for _, label in bars], fontsize=8, rotation=15)
        ax.set_ylabel(m)
        spans = values[:, 0:1] + np.array([-1.0, 1.0]) * values[:, 1:2]
        if np.isfinite(spans).any():  # (a metric no row of the panel has: empty panel)
            low, high = np.nanmin(spans[:, 0]), np.nanmax(spans[:, 1])
            ax.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
        ax.grid(alpha=0.3, axis="y")
    return fig


def plots(summary, output_dir: str, ks, group_sizes, list_len: int, dataset: str) -> list[str]:
    """Writes the PNG plots; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = plot_metrics(summary, list_len)
    written = []
    if any(f"mge@{k}" in summary for k in ks):  # a comparison without MG-E has no curve
        fig = _mge_plot(plt, summary, metrics, ks)
        title = "MG-E vs number of generators"
        written.append(_save(fig, plt, output_dir, "mge_vs_k.png", title, dataset))
    rows = [(k, f"goalrank_K{k}") for k in group_sizes if f"goalrank_K{k}" in summary]
    if rows:
        fig = _group_size_plot(plt, summary, metrics, rows)
        title = "GoalRank vs group size K"
        written.append(_save(fig, plt, output_dir, "group_size.png", title, dataset))
    for name, title, bars in (
        ("loss_form", "Loss form and weights", loss_form_rows(summary)),
        ("group_construction", "Group construction", construction_rows(summary)),
    ):
        if len(bars) >= 2:
            fig = _bar_plot(plt, summary, metrics, bars)
            written.append(_save(fig, plt, output_dir, f"{name}.png", title, dataset))
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


def selected_mge_label(selection) -> str:
    """The label of the row ``mge_selected``: MG-E with k chosen on validation, per seed."""
    ks = ", ".join(f"{k} (seed {seed})" for seed, k in selection["k"].items())
    return f"**MG-E, k chosen on `{selection['metric']}`**: k = {ks}"


def main_rows(summary, ks, mge_rows, metric, selection=None) -> list[tuple[str, str]]:
    """The rows of the "All methods" table: baselines, G-E, MG-E, GoalRank, references."""
    rows = [(r, LABELS[r]) for r in GENERATOR_ONLY + GE]
    rows += [(f"mge@{k}", f"MG-E, k = {k}") for k in MAIN_MGE_KS if k in ks]
    if selection is not None and SELECTED_MGE in summary:
        rows.append((SELECTED_MGE, selected_mge_label(selection)))
    best_mge = best_of(summary, mge_rows, metric)
    if best_mge is not None:
        rows.append(
            (
                best_mge,
                f"MG-E, best k on this split's {metric}: k = {best_mge.split('@')[1]} "
                "(an optimistic bound, chosen on the split itself)",
            )
        )
    rows.append(("goalrank", LABELS["goalrank"]))
    if "goalrank_prefix" in summary:
        rows.append(("goalrank_prefix", LABELS["goalrank_prefix"]))
    return rows + [(r, LABELS[r]) for r in REFERENCES]


def picture_sections(summary, ks, group_sizes) -> list[tuple[str, str, str, list]]:
    """(picture, heading, alt text, rows [(row, label)]) of the sections with a plot: MG-E as k
    grows (with the evaluator's greedy list, then without it) and the ablations."""
    mge_rows = [(f"mge@{k}", f"MG-E, k = {k}") for k in ks]
    mge_rows += [(f"mge_no_rm@{k}", f"MG-E without the evaluator's greedy, k = {k}") for k in ks]
    k_rows = [(f"goalrank_K{k}", f"K = {k}") for k in group_sizes]
    construction = construction_rows(summary)
    return [
        ("mge_vs_k.png", "MG-E as the number of generators k grows", "MG-E vs k", mge_rows),
        ("group_size.png", "GoalRank vs group size K", "K sweep", k_rows),
        ("loss_form.png", "Loss form and loss weights", "loss form", loss_form_rows(summary)),
        ("group_construction.png", "Group construction", "group construction", construction),
    ]


def validation_summary(
    records: dict[str, dict[str, dict]], aliases: dict[str, str]
) -> dict[str, dict[str, float]]:
    """{stage: {mean, std, n}} of the validation value each stage was selected at
    (``selected_value`` of its training record) over the seeds that have one (:func:`summarize`
    over the seeds' records); an alias row (the default run under an ablation's name) gets its
    run's."""
    per_seed = [
        {
            stage: {"selected_value": record["selected_value"]}
            for stage, record in stages.items()
            if record.get("selected_value") is not None
        }
        for stages in records.values()
    ]
    values = {stage: m["selected_value"] for stage, m in summarize(per_seed).items()}
    for alias, row in aliases.items():
        if alias not in values and row in values:
            values[alias] = values[row]
    return values


def _seed_order(seed) -> tuple[int, int, str]:
    """Sort key of a records key: seeds by number, anything else after them."""
    text = str(seed)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def default_rule(
    records: dict[str, dict[str, dict]],
    runs: Sequence[tuple[str, str]],
    aliases: dict[str, str],
    default: str = "goalrank",
) -> list[dict]:
    """The rule for changing a default, applied to each run of ``runs`` ([(stage, label)]) that
    is not the default itself or one of its ``aliases``: the validation value it was selected at
    minus the default's, paired by seed over the seeds whose records hold both (finite), their
    mean and its standard error (sample std with ddof = 1 over sqrt(n)), in how many seeds the
    run is above, and whether it meets the rule: above the default in every one of at least
    two seeds, and the mean difference more than RULE_STANDARD_ERRORS standard errors."""

    def value(stages, stage):
        selected = stages.get(stage, {}).get("selected_value")
        return float(selected) if selected is not None and math.isfinite(selected) else None

    verdicts = []
    for stage, label in runs:
        if stage == default or aliases.get(stage) == default:
            continue
        pairs = {
            str(seed): (value(stages, stage), value(stages, default))
            for seed, stages in sorted(records.items(), key=lambda item: _seed_order(item[0]))
        }
        pairs = {s: p for s, p in pairs.items() if None not in p}
        if not pairs:
            continue
        differences = np.array([run - base for run, base in pairs.values()])
        n = len(differences)
        se = float(np.std(differences, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        mean = float(differences.mean())
        above = int((differences > 0).sum())
        verdicts.append(
            {
                "run": stage,
                "label": label,
                "seeds": list(pairs),
                "values": [run for run, _ in pairs.values()],
                "default_values": [base for _, base in pairs.values()],
                "difference_mean": mean,
                "difference_se": se,
                "seeds_above": above,
                "meets_rule": bool(n > 1 and above == n and mean > RULE_STANDARD_ERRORS * se),
            }
        )
    return verdicts


def default_rule_lines(verdicts: Sequence[dict], metric: str) -> list[str]:
    """The markdown section of :func:`default_rule`'s verdicts."""
    lines = [
        "## Ablations against the default on validation",
        "",
        f"The rule for changing a default: an ablation replaces it only if its `validation/"
        f"{metric}` at the selected step is above the default's in every seed (at least two) and "
        f"the mean paired difference is more than {RULE_STANDARD_ERRORS:g} standard errors above "
        "zero. The test split is not used.",
        "",
        f"| GoalRank run | validation {metric}, by seed | default's, by seed | "
        "minus default, mean ± se | seeds above | meets the rule |",
        "|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        by_seed = " / ".join(f"{x:.4f}" for x in v["values"])
        defaults = " / ".join(f"{x:.4f}" for x in v["default_values"])
        seeds = ("seed " if len(v["seeds"]) == 1 else "seeds ") + ", ".join(v["seeds"])
        se = "n/a" if math.isnan(v["difference_se"]) else f"{v['difference_se']:.4f}"
        lines.append(
            f"| {v['label']} | {by_seed} ({seeds}) | {defaults} | "
            f"{v['difference_mean']:+.4f} ± {se} | {v['seeds_above']} of {len(v['seeds'])} | "
            f"{'**yes**' if v['meets_rule'] else 'no'} |"
        )
    return lines + [""]


def with_validation(summary, validation, column: str) -> dict:
    """``summary`` with each row's validation statistic added as the metric ``column``."""
    return {
        row: ({**metrics, column: validation[row]} if row in validation else metrics)
        for row, metrics in summary.items()
    }


def section(heading: str, picture: str, alt: str, body: str) -> list[str]:
    """Markdown lines of one section: heading, picture, table."""
    return [f"## {heading}", "", f"![{alt}]({picture})", "", body, ""]


def ordering_lines(metric: str, results: Sequence[dict]) -> list[str]:
    """One bullet per check of each ordering; the later ones are on logged-label metrics."""
    lines = ["## The paper's ordering", ""]
    if not any(result["checks"] for result in results):
        missing = [name for name, row in results[0]["best"].items() if row is None]
        named = ", ".join(missing)
        return lines + [f"Not checked: the comparison has no row of {named} (compare.methods)."]
    lines += [ORDERING_INTRO.format(metric=metric), ""]
    for index, result in enumerate(results):
        if index:
            label = secondary_label(result["metric"])
            lines += ["", f"Checked on the mean `{result['metric']}` ({label}):", ""]
        for c in result["checks"]:
            sign = ">" if c["holds"] else "<="
            verdict = "holds" if c["holds"] else "does not hold"
            lines.append(
                f"- {c['upper']} (`{c['row']}`, {c['value']:.4f}) {sign} {c['lower']} "
                f"(`{c['other_row']}`, {c['other_value']:.4f}): {verdict}"
            )
    return lines


def timing_lines(timings: dict[int, dict[str, float]]) -> list[str]:
    lines = [
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
    return lines + [""]


def at_the_cap(record: dict) -> bool:
    """Whether a stage used its whole budget and kept its last evaluated state: it may still
    have been improving when the budget ended."""
    selected = record.get("selected_step")
    return (
        not record["stopped_early"]
        and record["steps"] >= record["num_steps"]
        and selected is not None
        and selected >= record["steps"]
    )


def training_lines(records: dict[int, dict[str, dict]]) -> list[str]:
    """How far each method trained, per seed: epochs, steps of the budget, early stop, the
    step selected on validation and whether that was the budget's last step."""
    if not any(records.values()):
        return []
    lines = [
        "## Training",
        "",
        "Epochs of the train split each stage trained, its step budget, whether it stopped early,",
        "the step selected on validation (`-` = the last state) and whether the selected step is",
        "the budget's last (`best at the cap`: the run may still have been improving).",
        "",
        "| seed | stage | epochs | steps / budget | stopped early | selected step "
        "| best at the cap |",
        "|---|---|---|---|---|---|---|",
    ]
    capped = total = 0
    for seed, stages in records.items():
        for stage, r in stages.items():
            selected = r.get("selected_step")
            name = f"{stage} (copied from `{r['copied_from']}`)" if r.get("copied_from") else stage
            capped_here = at_the_cap(r)
            capped += capped_here
            total += 1
            lines.append(
                f"| {seed} | {name} | {r['epochs']:.2f} | {r['steps']} / {r['num_steps']} | "
                f"{'yes' if r['stopped_early'] else 'no'} | "
                f"{'-' if selected is None else selected} | {'yes' if capped_here else 'no'} |"
            )
    lines += [
        "",
        f"{capped} of {total} stages were selected at the last step of their budget"
        + (": a larger budget may still improve them." if capped else "."),
    ]
    return lines + [""]


def header_lines(dataset, command, seeds, split, metric, defaults) -> list[str]:
    return [
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
    ]


def _replace_file(path: str, write_fn) -> None:
    """Writes ``path`` through a temporary file, so a reader never sees half of it."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        write_fn(f)
    os.replace(tmp, path)


def write_json(path: str, value) -> None:
    """Writes ``value`` as indented, key-sorted JSON through a temporary file."""
    _replace_file(path, lambda f: json.dump(value, f, indent=2, sort_keys=True))


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
    records: dict[int, dict[str, dict]] | None = None,
    mge_selection: dict | None = None,
    select_metric: str = "",
) -> dict:
    """Writes comparison.md, comparison.json and the plots; returns the JSON document.
    ``records``: seed -> stage -> how far it trained (``stages.record``). ``mge_selection``:
    {"metric", "k": {seed: k}} when every seed's results hold the row ``mge_selected`` (MG-E
    with k chosen on validation): the ordering's best MG-E is then that row; without it, the
    best k on the compared split itself (an optimistic bound, said so in the report).
    ``select_metric``: the validation metric the rankers were selected on; the ablation tables
    then lead with its value at the selected step, mean ± std over seeds (the column defaults
    are chosen by)."""
    records = {str(k): v for k, v in (records or {}).items()}
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
    selected = mge_selection is not None and SELECTED_MGE in summary
    ordering_mge = [SELECTED_MGE] if selected else mge_rows
    checks = ordering(summary, metric, ordering_mge)
    # The paper's real-data claims are on logged-label metrics: N@L is checked as well (and the
    # held-out simulator's reward, as a secondary figure, where it was measured).
    other_checks = [
        ordering(summary, m, ordering_mge) for m in secondary_metrics(summary, metric, list_len)
    ]
    pictures = plots(summary, output_dir, ks, group_sizes, list_len, dataset)

    lines = header_lines(dataset, command, seeds, split, metric, defaults)
    rows = main_rows(summary, ks, mge_rows, metric, mge_selection if selected else None)
    lines += [table(summary, rows, columns, len(seeds)), ""]
    lines += ordering_lines(metric, [checks] + other_checks) + [""]
    if selected:
        lines += [f"The best MG-E is MG-E with k chosen on `{mge_selection['metric']}`.", ""]
    elif mge_rows:
        lines += [
            f"The best MG-E is the best k on `{split}` itself: an optimistic bound for MG-E "
            "(these cached results hold no MG-E evaluation on the validation split).",
            "",
        ]
    validation = validation_summary(records, aliases)
    val_column = f"validation {select_metric} (selected)"
    sections = picture_sections(summary, ks, group_sizes)
    for picture, heading, alt, rows in sections:
        if picture not in pictures:
            continue
        if picture != "mge_vs_k.png" and select_metric and any(r in validation for r, _ in rows):
            body = table(
                with_validation(summary, validation, val_column),
                rows,
                [val_column, *columns],
                len(seeds),
            )
        else:
            body = table(summary, rows, columns, len(seeds))
        lines += section(heading, picture, alt, body)
    ablation_runs = [
        row
        for picture, _, _, rows in sections
        if picture != "mge_vs_k.png" and picture in pictures
        for row in rows
    ]
    ablation_runs += [("goalrank_prefix", LABELS["goalrank_prefix"])]
    verdicts = default_rule(records, ablation_runs, aliases) if select_metric else []
    if verdicts:
        lines += default_rule_lines(verdicts, select_metric)
    lines += training_lines(records)
    lines += timing_lines(timings)
    _replace_file(os.path.join(output_dir, "comparison.md"), lambda f: f.write("\n".join(lines)))
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
        "mge_selection": mge_selection if selected else None,
        "plots": pictures,
        "timings": timings,
        "training": records,
        "validation_selected": {"metric": select_metric, "rows": validation},
        "default_rule": {
            "metric": select_metric,
            "standard_errors": RULE_STANDARD_ERRORS,
            "runs": verdicts,
        },
    }
    write_json(os.path.join(output_dir, "comparison.json"), document)
    return document

"""A seed's cached results, written back from a one-seed comparison report.

    python -m goalrank_jax.comparison.restore --report=DIR/comparison.json --workdir=WORKDIR

A comparison keeps each seed's evaluation in ``<workdir>/seed_<s>/results.json``; its report
(``comparison.json``) keeps only the mean and std over seeds. When the report has one seed, its
means *are* that seed's values, so the seed's results can be written back into another workdir
of the same comparison (same config, other seeds), whose ``--report_only`` run then covers every
seed. A report of several seeds holds one seed's values only together with the one-seed reports
of all its other seeds:

    python -m goalrank_jax.comparison.restore --report=TWO_SEEDS/comparison.json \
        --known=SEED_1/comparison.json --workdir=WORKDIR

writes the remaining seed's values, n x mean minus the known seeds' values, after checking that
they reproduce the report's std as well (a known report from another comparison fails that
check). Without ``--known`` a report of several seeds is refused (its means cannot be split), as
is a workdir that already holds results for that seed. The restored file records where it came
from. It holds no MG-E evaluation on the validation split, so a report over it names its best
MG-E as chosen on the compared split (an optimistic bound) for every seed.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
from absl import app, flags

from goalrank_jax.comparison import report as report_lib


def _results_document(report: dict, seed: int, rows: dict) -> dict:
    """The content of seed ``seed``'s results.json: its ``rows`` and what the report keeps of
    that seed (seconds per stage, training records, the split)."""
    return {
        "rows": rows,
        "seconds": report.get("timings", {}).get(f"seed {seed}", {}),
        "stages": report.get("training", {}).get(str(seed), {}),
        "split": report["split"],
    }


def seed_results(report: dict) -> tuple[int, dict]:
    """(seed, the content of its results.json) of a one-seed comparison report."""
    seeds = report.get("seeds", [])
    if len(seeds) != 1:
        raise ValueError(
            f"the report has seeds {seeds}: only a one-seed report holds a seed's own values"
        )
    seed = int(seeds[0])
    # The selected MG-E row is derived from validation results a report does not keep.
    rows = {
        row: {metric: stat["mean"] for metric, stat in metrics.items()}
        for row, metrics in report["summary"].items()
        if row != report_lib.SELECTED_MGE
    }
    return seed, _results_document(report, seed, rows)


def remaining_seed_results(report: dict, known: list[dict]) -> tuple[int, dict]:
    """(seed, results.json content) of the one seed of an n-seed report that ``known`` (the
    one-seed reports of its other n - 1 seeds) does not cover: each value is n x mean minus the
    known values. A metric whose mean is over fewer seeds than the report has (non-finite in
    some seed) is left out; a value whose std over all n seeds differs from the report's
    raises ValueError (the known reports are not of this comparison)."""
    seeds = [int(s) for s in report.get("seeds", [])]
    known_results = dict(seed_results(r) for r in known)
    missing = sorted(set(seeds) - set(known_results))
    if len(seeds) < 2 or len(missing) != 1 or set(known_results) - set(seeds):
        raise ValueError(
            f"the report has seeds {seeds} and the known reports seeds {sorted(known_results)}: "
            "they must cover every seed of the report but one"
        )
    seed, n = missing[0], len(seeds)
    rows: dict[str, dict[str, float]] = {}
    for row, metrics in report["summary"].items():
        if row == report_lib.SELECTED_MGE:
            continue
        for metric, stat in metrics.items():
            others = [r["rows"].get(row, {}).get(metric) for r in known_results.values()]
            if stat.get("n") != n or any(v is None or not math.isfinite(v) for v in others):
                continue
            value = n * stat["mean"] - sum(others)
            std = float(np.std(others + [value], ddof=1))
            scale = max(abs(stat["mean"]), abs(stat["std"]), 1.0)
            if abs(std - stat["std"]) > 1e-6 * scale:
                raise ValueError(
                    f"{row}/{metric}: the known seeds and the report's mean give a std of {std}, "
                    f"the report says {stat['std']}: the known reports are not of this comparison"
                )
            rows.setdefault(row, {})[metric] = value
    return seed, _results_document(report, seed, rows)


def restore(report_path: str, workdir: str, known_paths: tuple[str, ...] = ()) -> str:
    """Writes ``<workdir>/seed_<s>/results.json`` from the report (with ``known_paths``, the
    one-seed reports of its other seeds, from a report of several seeds); returns its path."""
    with open(report_path) as f:
        report = json.load(f)
    if known_paths:
        known = []
        for known_path in known_paths:
            with open(known_path) as f:
                known.append(json.load(f))
        seed, results = remaining_seed_results(report, known)
    else:
        seed, results = seed_results(report)
    path = os.path.join(workdir, f"seed_{seed}", report_lib.RESULTS_FILE)
    if os.path.exists(path):
        raise ValueError(f"{path} exists already: seed {seed} has results in {workdir}")
    results["restored_from"] = report_path
    if known_paths:
        results["derived_with"] = list(known_paths)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    report_lib.write_json(path, results)
    return path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    report, workdir = flags.FLAGS.report, flags.FLAGS.workdir
    if not report or not workdir:
        raise app.UsageError("--report and --workdir are required")
    try:
        path = restore(report, workdir, tuple(p for p in flags.FLAGS.known if p))
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"[restore] wrote {path}")


if __name__ == "__main__":
    # Defined only when run as a command: the library import must not claim --workdir, which
    # goalrank_jax.main defines for every other command.
    flags.DEFINE_string(
        "report",
        None,
        "A one-seed comparison.json, or one of n seeds together with --known for n - 1 of them.",
    )
    flags.DEFINE_list(
        "known",
        [],
        "One-seed comparison.json files of all but one seed of --report: the remaining seed's "
        "values are derived from the report's means.",
    )
    flags.DEFINE_string("workdir", None, "The comparison workdir to write the seed into.")
    app.run(main)

"""A seed's cached results, written back from a one-seed comparison report.

    python -m goalrank_jax.comparison.restore --report=DIR/comparison.json --workdir=WORKDIR

A comparison keeps each seed's evaluation in ``<workdir>/seed_<s>/results.json``; its report
(``comparison.json``) keeps only the mean and std over seeds. When the report has one seed, its
means *are* that seed's values, so the seed's results can be written back into another workdir
of the same comparison (same config, other seeds), whose ``--report_only`` run then covers every
seed. A report of several seeds is refused (its means cannot be split), as is a workdir that
already holds results for that seed. The restored file records where it came from. It holds no
MG-E evaluation on the validation split, so a report over it names its best MG-E as chosen on
the compared split (an optimistic bound) for every seed.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from goalrank_jax.comparison import report as report_lib


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
    return seed, {
        "rows": rows,
        "seconds": report.get("timings", {}).get(f"seed {seed}", {}),
        "stages": report.get("training", {}).get(str(seed), {}),
        "split": report["split"],
    }


def restore(report_path: str, workdir: str) -> str:
    """Writes ``<workdir>/seed_<s>/results.json`` from the report; returns its path."""
    with open(report_path) as f:
        report = json.load(f)
    seed, results = seed_results(report)
    path = os.path.join(workdir, f"seed_{seed}", report_lib.RESULTS_FILE)
    if os.path.exists(path):
        raise ValueError(f"{path} exists already: seed {seed} has results in {workdir}")
    results["restored_from"] = report_path
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
        path = restore(report, workdir)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"[restore] wrote {path}")


if __name__ == "__main__":
    # Defined only when run as a command: the library import must not claim --workdir, which
    # goalrank_jax.main defines for every other command.
    flags.DEFINE_string("report", None, "A one-seed comparison.json.")
    flags.DEFINE_string("workdir", None, "The comparison workdir to write the seed into.")
    app.run(main)

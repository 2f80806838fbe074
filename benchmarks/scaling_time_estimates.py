"""Replays the scaling study's time estimate over the timings a finished study recorded; prints
one JSON line per (study, sizes finished, size predicted).

    python benchmarks/scaling_time_estimates.py docs/scaling_synthetic/scaling.json \
        docs/scaling_ml100k/scaling.json

For each ``scaling.json`` and each variant, the runs are ordered by size as the study trains
them. After the first k sizes have finished (k >= 2: the study gives no estimate before), every
later size is predicted with ``estimate_seconds_left`` (goalrank_jax/scaling/study.py), fed what
the study itself feeds it (``timing_point`` / ``estimate_points`` there): each finished run's
generator-stage seconds (its ``run_seconds`` where a run did not record them; a run that trained
the shared reward model without them counts only while no other run has finished) and, for
budgets in epochs, its epochs trained. The actual seconds of a size with several seeds are their
mean. So any estimator can be checked against every recorded study, not only against the
estimates that a study happened to print while it ran (those are in the study's own
``time_estimates``).
"""

import json
import sys

import numpy as np

from goalrank_jax.scaling.study import estimate_points, estimate_seconds_left, timing_point


def replay(path: str) -> list[dict]:
    with open(path) as f:
        document = json.load(f)
    by_epoch = document["budget"].get("max_epochs", 0) > 0
    timings = [timing_point(run, by_epoch) for run in document["runs"]]
    rows = []
    for variant in sorted({point[0] for point, _ in timings}):
        # The variant's runs that time the estimate (a run that also trained the shared stages
        # does only while no other has finished).
        points = estimate_points([t for t in timings if t[0][0] == variant])
        sizes = sorted({point[1] for point in points})
        for k in range(2, len(sizes)):
            done = [point for point in points if point[1] in sizes[:k]]
            for target in sizes[k:]:
                actual = float(np.mean([point[2] for point in points if point[1] == target]))
                estimate = estimate_seconds_left(done, [(variant, float(target))])
                rows.append(
                    {
                        "study": path,
                        "variant": variant,
                        "sizes_done": k,
                        "params_predicted": int(target),
                        "estimate_s": estimate,
                        "actual_s": actual,
                        "ratio": None if estimate is None else estimate / actual,
                    }
                )
    return rows


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(f"usage: python {argv[0]} SCALING_JSON [SCALING_JSON ...]")
    for path in argv[1:]:
        for row in replay(path):
            print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv)

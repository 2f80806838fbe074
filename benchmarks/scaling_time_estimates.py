"""Replays the scaling study's time estimate over the timings a finished study recorded; prints
one JSON line per (study, sizes finished, size predicted).

    python benchmarks/scaling_time_estimates.py docs/scaling_synthetic/scaling.json \
        docs/scaling_ml100k/scaling.json

For each ``scaling.json`` and each variant, the runs are ordered by size as the study trains
them. After the first k sizes have finished (k >= 2: the study gives no estimate before), every
later size is predicted with ``estimate_seconds_left`` (goalrank_jax/scaling/study.py), fed what
the study itself feeds it: each finished run's generator-stage seconds (its ``run_seconds``
where a run did not record them, unless it trained the shared reward model) and, for budgets in
epochs, its epochs trained. The actual seconds of a size with several seeds are their mean. So
any estimator can be checked against every recorded study, not only against the estimates that
a study happened to print while it ran (those are in the study's own ``time_estimates``).
"""

import json
import sys

import numpy as np

from goalrank_jax.scaling.study import estimate_seconds_left


def _points(document: dict, variant: str) -> list[tuple[float, float, float | None]]:
    """(non-embedding params, seconds, epochs or None) of the variant's comparable runs."""
    points = []
    for run in document["runs"]:
        if run["variant"] != variant:
            continue
        seconds = run.get("generator_seconds")
        if seconds is None:
            if run["reward_model"] == "trained":
                continue  # Its seconds include the shared stages: not comparable.
            seconds = run["run_seconds"]
        epochs = run["results"].get("stages/generator/epochs")
        points.append((float(run["params_non_embedding"]), float(seconds), epochs))
    return sorted(points)


def replay(path: str) -> list[dict]:
    with open(path) as f:
        document = json.load(f)
    rows = []
    for variant in sorted({run["variant"] for run in document["runs"]}):
        points = _points(document, variant)
        sizes = sorted({p for p, _, _ in points})
        for k in range(2, len(sizes)):
            done = [(variant, p, s, e) for p, s, e in points if p in sizes[:k]]
            for target in sizes[k:]:
                actual = float(np.mean([s for p, s, _ in points if p == target]))
                estimate = estimate_seconds_left(done, [(variant, target)])
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

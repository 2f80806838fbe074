"""How much does the construction of the N - L other candidates move the metrics? Runs the
comparison once per ``data.candidates`` source on one dataset and prints one JSON line per
source with H@L / N@L of PRM, the best MG-E and GoalRank (mean and std over the seeds run).

    python benchmarks/candidate_sources.py --workdir=runs/candidate_sources --dataset=ml100k \
        --manual_dir=DIR [--sources=retriever,random,popular] [--seeds=1] \
        [--extra=--config.compare.mge_ks=1,3,5]

Each source is a comparison of its own (``<workdir>/<source>``: its own prepared dataset,
reward model and rankers; finished ones are served from their cache) with the methods PRM,
MG-E (which trains DNN, PRM, NAR and the supervised AR generator for its pool) and GoalRank, no
ablations, and every other setting of experiments/compare.py. ``--table`` prints the markdown
table of ``<workdir>/sources.jsonl`` with the paper's ML-1M H@6 range beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import bench_runs

# The paper's H@6 on ML-1M across its methods (percent; arXiv 2509.22046, its main table): what
# our rows are set beside. Its candidate construction is not stated.
PAPER_H6_ML1M = (62.7, 64.5)
METHODS = "prm,mge,goalrank"


def _best_mge(summary: dict, metric: str) -> str:
    rows = [r for r in summary if r.startswith("mge@") and metric in summary[r]]
    return max(rows, key=lambda r: summary[r][metric]["mean"])


def row_of(source: str, document: dict, list_len: int) -> dict:
    """The JSON line of one source: H@L / N@L (mean, std) of PRM, best MG-E and GoalRank."""
    summary = document["summary"]
    hits, ndcg = f"H@{list_len}", f"N@{list_len}"
    best = _best_mge(summary, ndcg)
    row = {"source": source, "best_mge": best}
    for name, key in (("prm", "prm"), ("mge", best), ("goalrank", "goalrank")):
        for metric in (hits, ndcg):
            stat = summary[key][metric]
            row[f"{name}/{metric}"] = {"mean": stat["mean"], "std": stat["std"], "n": stat["n"]}
    return row


def markdown(rows: list[dict]) -> str:
    latest = {row["source"]: row for row in rows}
    metrics = sorted({k.split("/")[1] for row in latest.values() for k in row if "/" in k})
    head = ["source"] + [f"{m} {metric}" for m in ("prm", "mge", "goalrank") for metric in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for source, row in latest.items():
        cells = [source]
        for m in ("prm", "mge", "goalrank"):
            for metric in metrics:
                stat = row[f"{m}/{metric}"]
                cells.append(f"{stat['mean']:.4f} ± {stat['std']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    low, high = PAPER_H6_ML1M
    lines.append("")
    lines.append(
        f"The paper's H@6 on ML-1M: {low / 100:.3f} to {high / 100:.3f} (construction not stated)."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--dataset", default="ml100k")
    parser.add_argument("--manual_dir", default="", help="Raw files of a real dataset.")
    parser.add_argument("--sources", default="retriever,random,popular")
    parser.add_argument("--seeds", default="1", help="compare.seeds, comma-separated.")
    parser.add_argument("--list_len", type=int, default=6, help="L of the experiment config.")
    parser.add_argument(
        "--extra", action="append", default=[], help="More --config overrides for every run."
    )
    parser.add_argument("--table", action="store_true", help="Only print the markdown table.")
    args = parser.parse_args()
    out_path = os.path.join(args.workdir, "sources.jsonl")
    if args.table:
        with open(out_path) as f:
            print(markdown([json.loads(line) for line in f]))
        return
    os.makedirs(args.workdir, exist_ok=True)
    log_path = os.path.join(args.workdir, "log.txt")
    for source in filter(None, args.sources.split(",")):
        run_dir = os.path.join(args.workdir, source)
        command = [
            sys.executable,
            "-m",
            "goalrank_jax.comparison",
            f"--config=experiments/compare.py:dataset={args.dataset}",
            f"--workdir={run_dir}",
            f"--config.data.candidates={source}",
            f"--config.compare.methods={METHODS}",
            "--config.compare.ablations=",
            f"--config.compare.seeds={args.seeds}",
            *args.extra,
        ]
        if args.manual_dir:
            command.append(f"--config.data.manual_dir={args.manual_dir}")
        bench_runs.run_logged(command, log_path)
        document = bench_runs.read_json(os.path.join(run_dir, "comparison.json"))
        line = json.dumps({**row_of(source, document, args.list_len), "extra": args.extra})
        print(line, flush=True)
        with open(out_path, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()

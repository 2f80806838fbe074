"""Do the synthetic world's logs carry its list-wise terms? Prints JSON.

    python benchmarks/logged_list_effects.py --workdir=runs/goalrank [--split=train] \
        [--max_examples=20000]

Reads the requests of a synthetic run's data (the workdir of any ``goalrank_jax.main`` run on
the synthetic dataset; nothing is trained) and, at every position t of the logged lists, the
logged click rate of the items with no item of the same category and none of the partner
category above them (``none``), with a same-category item above and no partner (``same``), and
with a partner-category item above and no same-category one (``partner``), with the count of
each and the mean true relevance logit of those items. Under the true model a same-category
item above lowers the click logit by ``redundancy_penalty`` and a partner-category item raises
it by ``complement_bonus``; whether these show in the logs says whether a reward model trained
on them can learn the terms (``python -m goalrank_jax.diagnose`` reports what it did learn:
``rm_list_effects``).
"""

import argparse
import contextlib
import json
import sys

import numpy as np

from goalrank_jax import diagnose, policies, run
from goalrank_jax.data import pipeline


def logged_fields(dataset, split: str, max_examples: int) -> dict[str, np.ndarray]:
    """[R, L] labels, categories, partner categories and true logits of the logged lists."""
    names = ("cand_labels", "cand_category", "cand_partner", "cand_true_logit")
    parts: dict[str, list] = {name: [] for name in names}
    for batch in pipeline.eval_batches(dataset.sources[split], 512, max_examples):
        keep = np.asarray(batch["example_mask"])
        logged = np.asarray(policies.logged_list(batch, dataset.list_len))[keep]
        for name in names:
            parts[name].append(np.take_along_axis(np.asarray(batch[name])[keep], logged, 1))
    return {name: np.concatenate(value) for name, value in parts.items()}


def effects(fields: dict[str, np.ndarray]) -> dict:
    labels, category = fields["cand_labels"], fields["cand_category"]
    partner, truth = fields["cand_partner"], fields["cand_true_logit"]
    list_len = labels.shape[1]
    above = np.tril(np.ones((list_len, list_len), bool), -1)
    same = ((category[:, :, None] == category[:, None, :]) & above).any(-1)
    completes = ((partner[:, :, None] == category[:, None, :]) & above).any(-1)
    kinds = {"none": ~same & ~completes, "same": same & ~completes, "partner": completes & ~same}
    positions = []
    for t in range(list_len):
        row = {"position": t + 1}
        for kind, select in kinds.items():
            chosen = select[:, t]
            count = int(chosen.sum())
            row[kind] = {
                "count": count,
                "click_rate": float(labels[chosen, t].mean()) if count else None,
                "true_logit": float(truth[chosen, t].mean()) if count else None,
            }
        positions.append(row)
    return {
        "requests": int(labels.shape[0]),
        "click_rate": float(labels.mean()),
        "positions": positions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--split", default="train", choices=("train", "validation", "test"))
    parser.add_argument("--max_examples", type=int, default=20000)
    args = parser.parse_args()
    config = diagnose.load_config(args.workdir)
    with contextlib.redirect_stdout(sys.stderr):
        dataset = run.prepare_data(config, args.workdir, lambda message: None)
    if not dataset.has_true_model:
        raise SystemExit(f"{args.workdir} is not a synthetic run: no categories to measure.")
    out = {"workdir": args.workdir, "split": args.split}
    out.update(effects(logged_fields(dataset, args.split, args.max_examples)))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Does GRO reach its evaluator's best list? Trains GRO variants against one frozen reward model
and prints one JSON line per variant with the diagnosis command's figures.

    python benchmarks/gro_variants.py --workdir=runs/gro_variants [--dataset=ml100k \
        --manual_dir=DIR] [--only=NAME,NAME] [--converged] [--extra=--config.train.num_steps=3000]

The first run (``base``) prepares the data and trains the reward model of
``experiments/goalrank.py``; every variant copies that finished reward-model stage, so all variants
optimise against the same evaluator (on real data the held-out simulator is copied too), and trains
only its generator with pure GRO (w_G = 0, w_R = 1), on-policy groups and the fast generator unless
the variant says otherwise (the ``sup_*`` variants train the full objective, one per supervised
form, selected on the validation N@L). Each variant is then measured by ``python -m
goalrank_jax.diagnose`` on the validation split (to choose defaults) and on the test split (to
report). Finished variants are skipped on a rerun (their JSON is cached in
``<workdir>/<variant>/diagnose_<split>.json``). The JSON lines go to stdout and to
``<workdir>/variants.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import bench_runs

# Every variant starts from these: pure GRO, fast generator, on-policy groups of K = 8 (the rows
# of docs/gro.md were measured from them; the experiment's default is now mixed, the "mixed"
# variants, and on real data K = 16), the run's default budget.
COMMON = (
    "--config.gro.supervised_weight=0",
    "--config.gro.reward_weight=1",
    "--config.generator.variant=fast",
    "--config.gro.group_construction=on_policy",
    "--config.gro.group_size=8",
)

# The full GoalRank objective (w_G = 1, w_R = 0.01) with a supervised form, selected on the
# validation N@L like the experiment's generator.
SUPERVISED = {
    form: (
        "--config.gro.supervised_weight=1",
        "--config.gro.reward_weight=0.01",
        f"--config.gro.supervised_form={form}",
        "--config.train.select_metric=validation/goalrank/N@6",  # L = 6 in the experiment
    )
    for form in (
        "first_step_bce",
        "every_step_bce",
        "logged_nll",
        "group_step_bce",
        "group_step_softmax",
    )
}

# name -> overrides on top of COMMON (later flags win).
VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "lr1e-2": ("--config.train.optim.learning_rate=1e-2",),
    "k20": ("--config.gro.group_size=20",),
    "tau0.3": ("--config.gro.tau_ref=0.3",),
    "centred": ("--config.gro.centre_weights=true",),
    "temp2": ("--config.gro.sample_temperature=2",),
    "mixed": ("--config.gro.group_construction=mixed",),
    "d64": ("--config.generator.embed_dim=64", "--config.generator.ff_dim=128"),
    "mixed_d64": (
        "--config.gro.group_construction=mixed",
        "--config.generator.embed_dim=64",
        "--config.generator.ff_dim=128",
    ),
    "lr3e-3": ("--config.train.optim.learning_rate=3e-3",),
    "lr1e-4": ("--config.train.optim.learning_rate=1e-4",),
    "entropy0.01": ("--config.gro.entropy_weight=0.01",),
    "entropy0.1": ("--config.gro.entropy_weight=0.1",),
    "centred_temp2": ("--config.gro.centre_weights=true", "--config.gro.sample_temperature=2"),
    "no_dropout": ("--config.generator.dropout=0",),
    "tau3": ("--config.gro.tau_ref=3",),
    "plackett_luce": ("--config.gro.group_construction=plackett_luce",),
    "entropy0.01_k20": ("--config.gro.entropy_weight=0.01", "--config.gro.group_size=20"),
    # Which supervised form validates best, with on-policy and with mixed groups.
    **{f"sup_{form}": flags for form, flags in SUPERVISED.items()},
    **{
        f"sup_{form}_mixed": (*SUPERVISED[form], "--config.gro.group_construction=mixed")
        for form in ("every_step_bce", "logged_nll", "group_step_bce", "group_step_softmax")
    },
    # Mixed groups, group_step_bce along the sampled lists and the label-free auxiliary ones
    # (retriever, reward-model greedy, random: every auxiliary list but the logged one).
    "sup_group_step_bce_mixed_label_free": (
        *SUPERVISED["group_step_bce"],
        "--config.gro.group_construction=mixed",
        "--config.gro.supervise_auxiliary=label_free",
    ),
    # The experiment's default (mixed groups, group_step_bce) with other generator seeds: the
    # same reward model and data, another initialisation, batch order and sampling.
    **{
        f"sup_group_step_bce_mixed_seed{seed}": (
            *SUPERVISED["group_step_bce"],
            "--config.gro.group_construction=mixed",
            f"--config.seed={seed}",
        )
        for seed in (1, 2)
    },
}
# The budget in epochs of the train split, with the generator selected (and stopped early) on
# the validation gro_progress: --extra=... flags of a converged sweep (see docs/gro.md).
CONVERGED = (
    "--config.train.num_epochs=30",
    "--config.train.eval_every_epochs=1",
    "--config.train.select_metric=validation/goalrank/gro_progress",
    "--config.train.patience=5",
)


# The diagnosis fields kept in each row (with rm_reward).
KEPT = (
    "gro_progress",
    "policy_entropy",
    "N@",
    "rm_",
    "uniform",
    "true_reward",
    "greedy_minus",
    "step_auc",
)
TRACKED = ("sample_log_prob", "group_reward_std", "ref_max_weight", "gro_loss")


def _trajectory(path: str, points: int = 5) -> list[dict]:
    """The generator's logged training metrics at ``points`` evenly spaced log steps: mean
    log-probability of its sampled lists (minus the list entropy, estimated), the within-group
    reward spread and the largest reference weight."""
    rows = []
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if "generator/gro_loss" in row:
                rows.append({"step": row["step"], **{k: row[f"generator/{k}"] for k in TRACKED}})
    if not rows:
        return []
    picks = sorted({round(i * (len(rows) - 1) / (points - 1)) for i in range(points)})
    return [rows[i] for i in picks]


def _true_rewards(split: dict) -> str:
    """'greedy / first-step sort' true rewards (synthetic data, diagnosed since they exist)."""
    greedy, first = split.get("true_reward_greedy"), split.get("true_reward_first_step_sort")
    return "-" if greedy is None or first is None else f"{greedy:.4f} / {first:.4f}"


def markdown(rows: list[dict]) -> str:
    """The table of docs/gro.md: one row per variant (the last line of each in variants.jsonl)."""
    latest = {row["variant"]: row for row in rows}
    head = (
        "| variant | overrides | val gro_progress | val sampled | entropy (nats/step) | "
        "val N@L greedy | val N@L first-step sort | test gro_progress | test sampled | "
        "test N@L greedy / first-step sort | test true reward greedy / first-step sort |"
    )
    lines = [head, "|" + "---|" * 11]
    for name, row in latest.items():
        val, test = row["validation"], row["test"]
        ndcg = sorted(k for k in val if k.startswith("N@") and k.endswith("_greedy"))[0]
        first = ndcg.replace("_greedy", "_first_step_sort")
        lines.append(
            f"| {name} | {' '.join(row['overrides']) or '-'} | {val['gro_progress']:.3f} | "
            f"{val['gro_progress_sampled']:.3f} | {val['policy_entropy']:.2f} "
            f"(uniform {val['uniform_entropy']:.2f}) | {val[ndcg]:.4f} | {val[first]:.4f} | "
            f"{test['gro_progress']:.3f} | {test['gro_progress_sampled']:.3f} | "
            f"{test[ndcg]:.4f} / {test[first]:.4f} | {_true_rewards(test)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--manual_dir", default="", help="Raw files of a real dataset.")
    parser.add_argument("--only", default="", help="Comma-separated variant names (default all).")
    parser.add_argument(
        "--extra", action="append", default=[], help="More --config overrides for every run."
    )
    parser.add_argument(
        "--converged",
        action="store_true",
        help="Train every variant to convergence (the CONVERGED flags, before the variant's "
        "own flags and --extra).",
    )
    parser.add_argument(
        "--table", action="store_true", help="Only print the markdown table of variants.jsonl."
    )
    args = parser.parse_args()
    if args.table:
        with open(os.path.join(args.workdir, "variants.jsonl")) as f:
            print(markdown([json.loads(line) for line in f]))
        return
    budget = list(CONVERGED) if args.converged else []
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    config = "experiments/goalrank.py" + (f":dataset={args.dataset}" if args.dataset else "")
    base = [sys.executable, "-m", "goalrank_jax.main", f"--config={config}"]
    if args.manual_dir:
        base.append(f"--config.data.manual_dir={args.manual_dir}")
    os.makedirs(args.workdir, exist_ok=True)
    log_path = os.path.join(args.workdir, "log.txt")
    base_dir = os.path.join(args.workdir, "base")
    data_dir = os.path.join(base_dir, "tfds")
    # The base run: data and reward model (one generator step, its result is not used).
    one_step = ("--config.train.num_epochs=0", "--config.train.num_steps=1")
    bench_runs.run_logged(
        base
        + [f"--workdir={base_dir}", *budget, *args.extra, *one_step, "--config.train.patience=0"],
        log_path,
    )
    for name in names:
        start = time.time()
        run_dir = os.path.join(args.workdir, name)
        for stage in ("reward_model", "simulator"):  # the simulator: real data only
            if os.path.exists(os.path.join(base_dir, stage)):
                bench_runs.copy_stage(base_dir, run_dir, stage)
        overrides = [*COMMON, *budget, *VARIANTS[name], *args.extra]
        command = base + [f"--workdir={run_dir}", f"--config.data.data_dir={data_dir}"]
        bench_runs.run_logged(command + overrides, log_path)
        row = {"variant": name, "overrides": list(VARIANTS[name]), "extra": budget + args.extra}
        for split in ("validation", "test"):
            d = bench_runs.diagnose_cached(run_dir, split, log_path)
            row[split] = {k: d[k] for k in d if k.startswith(KEPT)}
            row[split]["rm_reward"] = d["rm_reward"]
        with open(os.path.join(run_dir, "results.json")) as f:
            results = json.load(f)
        row["training"] = _trajectory(os.path.join(run_dir, "metrics.jsonl"))
        row["generator_epochs"] = results.get("stages/generator/epochs")
        row["seconds"] = time.time() - start
        line = json.dumps(row)
        print(line, flush=True)
        with open(os.path.join(args.workdir, "variants.jsonl"), "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()

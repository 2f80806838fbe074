"""Does a synthetic world teach its reward model? Trains the reward model on named world settings
and prints one JSON line per (setting, reward-model kind, seed) with the figures that calibrate
the world (SPEC section 10): the reward model's within-request Spearman correlation with the
true relevance, the oracle fractions of random lists, the reward-model greedy list, the
true-relevance sort and the logged list, and the logged positive rate.

    python benchmarks/world_calibration.py --workdir=runs/world [--only=NAME,NAME] \
        [--kinds=pointwise,list_aware] [--seeds=1,2,3]
    python benchmarks/world_calibration.py --workdir=runs/world --table

Every run is ``python -m goalrank_jax.main --config=experiments/goalrank.py`` with the setting's
overrides, the reward model at the experiment's default budget (selected on validation AUC),
and a one-step fast generator (its result is not used: the world is calibrated on the reward
model and the reference lists alone, never on a generator's result). The figures come from
the run's ``results.json`` (test split) and from ``python -m goalrank_jax.diagnose``
(``rm_true_spearman`` on the test split, ``rm_validation_auc``). Runs of one setting share its
data; finished runs are skipped on a rerun. Lines go to stdout and ``<workdir>/runs.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import bench_runs

# Every run: a one-step fast generator (unused), the rest from experiments/goalrank.py.
# The generator is not what is measured: one step, no budget in epochs, no early stopping.
COMMON = (
    "--config.generator.variant=fast",
    "--config.train.num_epochs=0",
    "--config.train.num_steps=1",
    "--config.train.patience=0",
)

# The world before calibration: no impressions, the MF retriever's candidates.
BEFORE = (
    "--config.data.candidates=retriever",
    "--config.data.env.impression_size=0",
    "--config.data.env.num_users=1000",
    "--config.data.env.requests_per_user=60",
    "--config.data.env.num_items=2000",
    "--config.data.env.retrieval_temperature=1",
    "--config.data.env.retrieval_affinity=1",
    "--config.data.env.relevance_scale=1.5",
    "--config.data.env.base_logit=-2",
    "--config.data.env.latent_dim=16",
    "--config.data.item_features=false",
)
# The world's stage-1 retrieval (M=50 at temperature 3) supplies the candidates.
IMPRESSION = (
    "--config.data.candidates=impression",
    "--config.data.env.impression_size=50",
    "--config.data.env.retrieval_temperature=3",
)
# 2000 users x 30 requests over 4000 items: a user is shown 4.5 % of the catalogue, not 18 %.
WIDE = (
    "--config.data.env.num_users=2000",
    "--config.data.env.requests_per_user=30",
    "--config.data.env.num_items=4000",
)

# name -> overrides on top of COMMON (later flags win).
SETTINGS: dict[str, tuple[str, ...]] = {
    "before": BEFORE,
    "impression": (*BEFORE, *IMPRESSION),
    "impression_wide": (*BEFORE, *IMPRESSION, *WIDE),
    "impression_wide_d8": (*BEFORE, *IMPRESSION, *WIDE, "--config.data.env.latent_dim=8"),
    "impression_wide_soft": (
        *BEFORE,
        *IMPRESSION,
        *WIDE,
        "--config.data.env.true_model.examination_power=0.5",
        "--config.data.env.true_model.redundancy_penalty=1",
    ),
    "impression_wide_features": (*BEFORE, *IMPRESSION, *WIDE, "--config.data.item_features=true"),
    "features_rm_lr3e-3": (
        *BEFORE,
        *IMPRESSION,
        *WIDE,
        "--config.data.item_features=true",
        "--config.reward_model.train.optim.learning_rate=3e-3",
    ),
    "features_rm_no_user_id": (
        *BEFORE,
        *IMPRESSION,
        *WIDE,
        "--config.data.item_features=true",
        "--config.reward_model.model.use_user_id=false",
    ),
    "features_d8": (
        *BEFORE,
        *IMPRESSION,
        *WIDE,
        "--config.data.item_features=true",
        "--config.data.env.latent_dim=8",
    ),
    "features_t5": (
        *BEFORE,
        *IMPRESSION,
        *WIDE,
        "--config.data.item_features=true",
        "--config.data.env.retrieval_temperature=5",
    ),
    "features_d8_t5": (
        *BEFORE,
        *IMPRESSION,
        *WIDE,
        "--config.data.item_features=true",
        "--config.data.env.latent_dim=8",
        "--config.data.env.retrieval_temperature=5",
    ),
    "features_coarse_retrieval": (
        *BEFORE,
        *IMPRESSION,
        *WIDE,
        "--config.data.item_features=true",
        "--config.data.env.retrieval_affinity=0",
    ),
    "features_scale1": (
        *BEFORE,
        *IMPRESSION,
        *WIDE,
        "--config.data.item_features=true",
        "--config.data.env.relevance_scale=1",
    ),
    "features_50_requests": (
        *BEFORE,
        *IMPRESSION,
        *WIDE,
        "--config.data.item_features=true",
        "--config.data.env.requests_per_user=50",
        "--config.data.env.num_items=6000",
    ),
    "features_scale1_rm_lr3e-3": (
        *BEFORE,
        *IMPRESSION,
        *WIDE,
        "--config.data.item_features=true",
        "--config.data.env.relevance_scale=1",
        "--config.reward_model.train.optim.learning_rate=3e-3",
    ),
    "features_scale0.75_rm_lr3e-3": (
        *BEFORE,
        *IMPRESSION,
        *WIDE,
        "--config.data.item_features=true",
        "--config.data.env.relevance_scale=0.75",
        "--config.reward_model.train.optim.learning_rate=3e-3",
    ),
    "default": (),
    # The list-aware reward model trained on the logged lists' positions alone (before
    # reward_model.candidate_weight): only meaningful with --kinds=list_aware.
    "default_list_only": ("--config.reward_model.candidate_weight=0",),
    # The list-aware reward model with the summed pairwise term over the items above
    # (model.pairwise_above, the experiment's default since it validated better) and without
    # it (attention alone, the form of the "default" list_aware rows measured before that
    # change): only meaningful with --kinds=list_aware.
    "default_pairwise": ("--config.reward_model.model.pairwise_above=true",),
    "default_attention": ("--config.reward_model.model.pairwise_above=false",),
}

POLICIES = ("random", "reward_model_greedy", "true_relevance_sort", "logged")


def run_one(workdir, name, kind, seed, log_path) -> dict:
    setting_dir = os.path.join(workdir, name)
    run_dir = os.path.join(setting_dir, f"{kind}_seed{seed}")
    if not os.path.exists(os.path.join(run_dir, "results.json")):
        command = [
            *bench_runs.MAIN,
            "--config=experiments/goalrank.py",
            f"--workdir={run_dir}",
            f"--config.data.data_dir={os.path.join(setting_dir, 'tfds')}",
            *COMMON,
            *SETTINGS[name],
            f"--config.reward_model.kind={kind}",
            f"--config.seed={seed}",
        ]
        bench_runs.run_logged(command, log_path)
    results = bench_runs.read_json(os.path.join(run_dir, "results.json"))
    diagnosis = bench_runs.diagnose_cached(run_dir, "test", log_path)
    row = {
        "setting": name,
        "kind": kind,
        "seed": seed,
        "overrides": list(SETTINGS[name]),
        "rm_true_spearman": diagnosis["rm_true_spearman"],
        "rm_validation_auc": diagnosis["rm_validation_auc"],
        "positive_rate": results.get("data/positive_rate"),
        "rm_epochs": results.get("stages/reward_model/epochs"),
        "rm_selected_step": results.get("stages/reward_model/selected_step"),
    }
    for policy in POLICIES:
        row[f"{policy}_oracle_fraction"] = results[f"test/{policy}/oracle_fraction"]
        row[f"{policy}_true_reward"] = results[f"test/{policy}/true_reward"]
    # Validation figures, the ones that choose between settings.
    row["validation_reward_model_greedy_oracle_fraction"] = results.get(
        "validation/reward_model_greedy/oracle_fraction"
    )
    row["validation_reward_model_greedy_true_reward"] = results.get(
        "validation/reward_model_greedy/true_reward"
    )
    row["rm_list_effects"] = diagnosis.get("rm_list_effects")
    return row


def markdown(rows: list[dict]) -> str:
    """One table row per (setting, kind, seed), the last line of each in runs.jsonl."""
    latest = {(r["setting"], r["kind"], r["seed"]): r for r in rows}
    head = (
        "| setting | RM | seed | RM Spearman | RM val AUC | random | RM greedy | relevance sort | "
        "logged | positive rate | RM epochs |"
    )
    lines = [head, "|" + "---|" * 11]
    for (name, kind, seed), r in latest.items():
        fractions = " | ".join(f"{r[f'{p}_oracle_fraction']:.1%}" for p in POLICIES)
        lines.append(
            f"| {name} | {kind} | {seed} | {r['rm_true_spearman']:.3f} | "
            f"{r['rm_validation_auc']:.3f} | {fractions} | {r['positive_rate']:.1%} | "
            f"{r['rm_epochs']:.1f} |"
        )
    return "\n".join(lines)


def spread(rows: list[dict]) -> str:
    """Mean and spread (max - min) over seeds of each (setting, reward-model kind): Spearman and
    the true reward of the reward model's greedy list."""
    latest = {(r["setting"], r["kind"], r["seed"]): r for r in rows}
    groups: dict[tuple[str, str], list[dict]] = {}
    for (name, kind, _), r in latest.items():
        groups.setdefault((name, kind), []).append(r)
    lines = [
        "| setting | RM | seeds | RM Spearman mean | RM greedy true reward mean "
        "| spread (max - min) "
        "| RM greedy oracle fraction mean |",
        "|" + "---|" * 7,
    ]
    for (name, kind), group in groups.items():
        rewards = [r["reward_model_greedy_true_reward"] for r in group]
        spearman = sum(r["rm_true_spearman"] for r in group) / len(group)
        fraction = sum(r["reward_model_greedy_oracle_fraction"] for r in group) / len(group)
        lines.append(
            f"| {name} | {kind} | {len(group)} | {spearman:.3f} | "
            f"{sum(rewards) / len(rewards):.4f} | {max(rewards) - min(rewards):.4f} | "
            f"{fraction:.1%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--only", default="", help="Comma-separated settings (default all).")
    parser.add_argument("--kinds", default="pointwise", help="Reward-model kinds, comma-separated.")
    parser.add_argument("--seeds", default="999", help="Comma-separated config seeds.")
    parser.add_argument(
        "--table",
        action="store_true",
        help="Print the table of runs.jsonl (of the --only settings, with their seed spread).",
    )
    args = parser.parse_args()
    jsonl = os.path.join(args.workdir, "runs.jsonl")
    if args.table:
        only = {n for n in args.only.split(",") if n}
        with open(jsonl) as f:
            rows = [json.loads(line) for line in f]
        rows = [r for r in rows if not only or r["setting"] in only]
        print(markdown(rows))
        if args.only:
            print()
            print(spread(rows))
        return
    names = [n for n in args.only.split(",") if n] or list(SETTINGS)
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; known: {sorted(SETTINGS)}")
    os.makedirs(args.workdir, exist_ok=True)
    log_path = os.path.join(args.workdir, "log.txt")
    for name in names:
        for kind in args.kinds.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                start = time.time()
                row = run_one(args.workdir, name, kind, seed, log_path)
                row["seconds"] = round(time.time() - start, 1)
                line = json.dumps(row)
                print(line, flush=True)
                with open(jsonl, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()

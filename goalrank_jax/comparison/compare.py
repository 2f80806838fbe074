"""The paper's comparison in one command: every baseline, GoalRank and its ablations, several seeds.

    python -m goalrank_jax.comparison --config=experiments/compare.py --workdir=runs/compare
    python -m goalrank_jax.comparison --config=experiments/compare.py:dataset=ml100k \
        --config.data.manual_dir=DIR --workdir=runs/compare_ml100k
    python -m goalrank_jax.comparison --config=experiments/compare.py:smoke --workdir=runs/cmp_smoke

Writes ``<workdir>/comparison.md`` (tables of mean ± std over seeds), ``comparison.json`` and
PNG plots (MG-E vs k with GoalRank as a line, GoalRank vs K, loss form, group construction).

Resuming: the dataset is prepared once (``<workdir>/tfds`` or ``data.data_dir``); each seed's
models are stages under ``<workdir>/seed_<s>/`` (finished ones restored and skipped, an
interrupted one continued from its latest checkpoint) and a seed's evaluated results are cached
in ``seed_<s>/results.json``, so rerunning the same command after an interruption redoes
nothing that was finished. ``--report_only`` rewrites the report from the cached seeds.
Exit codes as ``goalrank_jax.main`` (2 invalid input, 3 non-finite training, 143 SIGTERM).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
from absl import app, flags, logging

from goalrank_jax import config_check, run, sharding, stages
from goalrank_jax import main as main_lib
from goalrank_jax.checkpointing import CheckpointError
from goalrank_jax.comparison import config as comparison_config
from goalrank_jax.comparison import evaluation, report, reuse, training
from goalrank_jax.data import pipeline
from goalrank_jax.data.raw_formats import RawDataError
from goalrank_jax.metric_writer import MetricWriter
from goalrank_jax.train import format_duration

# --config (here experiments/compare.py[:args]), --workdir and their parsing are main's.
_CONFIG = main_lib.CONFIG
_WORKDIR = main_lib.WORKDIR
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Only rewrite comparison.md / .json / PNGs from the cached seeds."
)

# results.json's key of the MG-E rows evaluated on the validation split (to choose k).
VALIDATION_MGE = "validation_mge"
# results.json's key of the settings the seed was evaluated under (evaluation_settings).
EVALUATED_WITH = "evaluated_with"
# Budgets that may grow between invocations in one workdir (config_check): those of the rankers
# (GoalRank, the supervised AR generator, DNN, PRM, NAR), not the reward model's or the
# simulator's, which other stages are trained or judged against.
WORKDIR_GROWABLE = (
    "experiment.train.num_steps",
    "experiment.train.num_epochs",
    "compare.baseline_train.num_steps",
    "compare.baseline_train.num_epochs",
    "compare.prefix_num_epochs",
)
# Fields of config.json a later invocation in the same workdir may change: those no trained
# model depends on, and the compare fields that choose what is run and how it is evaluated (a
# seed's cached results are evaluated again when its evaluation settings changed; see
# evaluation_settings). Every other field must equal the saved one (config_check.check_saved).
WORKDIR_IGNORED = config_check.under("experiment", config_check.RUN_IGNORED) + tuple(
    f"compare.{name}"
    for name in (
        "seeds",
        "methods",
        "ablations",
        "group_sizes",
        "mge_ks",
        "num_proposals",
        "split",
        "reuse_baselines_from",
    )
)
# Seconds of the stages shared by all seeds (data, simulator, shared reward model), summed over
# the invocations that ran them, so a resumed or report-only run still reports them.
SHARED_SECONDS_FILE = "shared_seconds.json"
# The shared stages' training records (epochs, early stop, selected step) as the last invocation
# that trained or restored them saw them, for the report's Training table of a report-only run.
SHARED_RECORDS_FILE = "shared_records.json"


def expected_rows(experiment, comparison) -> set[str]:
    """Row names a complete evaluation of one seed has (for the cache check)."""
    rows = {r.name for r in training.goalrank_runs(experiment, comparison)}
    rows |= {"reward_model_greedy", "retriever", "logged", "random"}
    methods = set(comparison.methods)
    rows |= methods & {"dnn", "prm", "pier_ge", "nar4rec_ge"}
    if "mge" in methods:
        rows |= {f"mge@{k}" for k in comparison.mge_ks}
        rows |= {f"mge_no_rm@{k}" for k in comparison.mge_ks}
    return rows


def selects_mge_on_validation(comparison) -> bool:
    """MG-E's k is chosen on the validation split whenever the comparison reports another."""
    return "mge" in comparison.methods and comparison.split != "validation"


def mge_selection_metric(comparison, list_len: int) -> str:
    """The validation metric MG-E's k is chosen on: the rankers' select_metric, else N@L."""
    return comparison.select_metric or f"N@{list_len}"


def evaluation_settings(tree: dict) -> dict:
    """What a seed's evaluated rows depend on besides its trained models, of the fields a later
    invocation in the same workdir may change (``tree``: a config.json tree): the evaluation
    settings (split, G-E proposals, the largest MG-E pool: its size sets each generator's
    samples) and the budgets that may grow (a grown budget trains further). Kept in
    results.json; a cache evaluated under other values is evaluated again."""
    flat = config_check.flatten(tree)
    keys = ("compare.split", "compare.num_proposals", *WORKDIR_GROWABLE)
    settings = {key: flat.get(key) for key in keys}
    ks = flat.get("compare.mge_ks")
    settings["max(compare.mge_ks)"] = max(ks) if ks else None
    return settings


def _load_cached(
    path: str,
    rows: set[str],
    need_validation_mge: bool,
    settings: dict | None = None,
    legacy: dict | None = None,
) -> dict | None:
    """A seed's cached results if they hold every row, were evaluated under ``settings``
    (evaluation_settings) and, with ``need_validation_mge``, hold the MG-E rows on the
    validation split, unless they were restored from a report; else None (the seed is
    evaluated again). A value the cache did not record (a cache older than the record, or
    than one of its fields) is taken from ``legacy`` (those of the workdir's saved config); a
    cache restored from a report is checked on its split only."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        cached = json.load(f)
    if not rows <= set(cached["rows"]):
        return None
    if settings is not None:
        split = {"compare.split": cached.get("split", "test")}
        if "restored_from" in cached:
            recorded = split
        else:
            # A value the cache did not record is taken from the saved config.
            recorded = {**(legacy or {}), **split, **cached.get(EVALUATED_WITH, {})}
        if any(recorded.get(k) != v for k, v in settings.items() if k in recorded):
            return None
    if need_validation_mge and VALIDATION_MGE not in cached and "restored_from" not in cached:
        return None
    return cached


def _stage_seconds_over_invocations(path: str, seconds: dict[str, float]) -> dict[str, float]:
    """{stage: seconds} for the stages of ``seconds`` (this invocation's) that the earlier
    results at ``path`` also timed: the larger of the two. A stage only restored here took its
    seconds in the earlier invocation; one that trained on here under a grown budget has its
    checkpoint's total over every invocation, which is larger than the earlier figure."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        earlier = json.load(f).get("seconds", {})
    return {stage: max(earlier[stage], seconds[stage]) for stage in seconds if stage in earlier}


def _copied_stage_seconds(name: str, info: dict, models) -> dict[str, float]:
    """The wall-time entries of stage ``name``, copied from another workdir (``info``: its
    marker, with the seconds the source's results gave it). A checkpoint that keeps its training
    seconds (summed over every invocation, the source's included) gives one entry: trained in
    the source, or in the source and then here when its budget grew here (more than a second
    above the source's figure). An older checkpoint keeps none: the seconds here are the
    restore's, reported beside the source's."""
    here = models.train_seconds.pop(name)
    source = info.get("seconds")
    if models.train_records[name].get("train_seconds"):
        if source is not None and here > source + 1.0:
            return {f"{name} (copied, trained in the source and here)": here}
        return {f"{name} (copied, trained in the source)": here}
    entries = {f"{name} (copied, restored)": here}
    if source is not None:
        entries[f"{name} (trained in the source)"] = source
    return entries


def choose_mge(per_seed: dict, validation: dict, ks, metric: str) -> dict[int, int]:
    """Adds the row ``mge_selected`` to each seed's results that has MG-E on validation: the
    test metrics of its ``mge@k`` with the best validation ``metric`` (ties: the smaller k).
    Returns {seed: chosen k}."""
    chosen = {}
    for seed, rows in per_seed.items():
        if seed not in validation:
            continue
        scored = [(validation[seed][f"mge@{k}"][metric], -k) for k in sorted(ks)]
        k = -max(scored)[1]
        rows[report.SELECTED_MGE] = dict(rows[f"mge@{k}"])
        chosen[seed] = k
    return chosen


def _add_shared_seconds(workdir: str, seconds: dict[str, float], cumulative=()) -> dict[str, float]:
    """Adds ``seconds`` to the totals kept in ``workdir`` and returns the new totals. A stage
    of ``cumulative`` gives its total over every invocation already (its checkpoint keeps the
    seconds it trained): it replaces the kept value instead of adding to it."""
    path = os.path.join(workdir, SHARED_SECONDS_FILE)
    totals = config_check.read(path) or {}
    for stage, value in seconds.items():
        totals[stage] = value if stage in cumulative else totals.get(stage, 0.0) + value
    if seconds:
        report.write_json(path, totals)
    return totals


@dataclasses.dataclass
class SharedStages:
    """What all seeds of a comparison share: the dataset, the held-out simulator (real data)
    and, with ``compare.shared_reward_model``, one reward model. Built on first use, so a run
    whose seeds are all cached prepares nothing."""

    experiment: Any
    comparison: Any
    workdir: str
    mesh: Any
    log_fn: Callable[[str], None]
    dataset: Any = None
    simulator: Any = None
    simulator_params: Any = None
    reward_model: Any = None
    seconds: dict[str, float] | None = None
    records: dict[str, dict] | None = None  # the shared stages' records, once built

    def build(self) -> None:
        if self.dataset is not None:
            return
        start = time.time()
        self.dataset = run.prepare_data(self.experiment, self.workdir, self.log_fn)
        seconds = {"data": time.time() - start}
        if not self.dataset.has_true_model:
            stage_start = time.time()
            writer = MetricWriter(self.workdir)
            try:
                context = run.stage_context(
                    self.experiment, self.dataset, self.workdir, self.mesh, writer, self.log_fn
                )
                self.simulator, self.simulator_params, _ = run.train_simulator(
                    self.experiment, context
                )
            finally:
                writer.close()
            seconds["simulator"] = time.time() - stage_start
        # The seed trainer's stages (the shared reward model) give the seconds their checkpoints
        # keep, every invocation's: they replace the kept totals instead of adding to them.
        cumulative = ()
        if self.comparison.shared_reward_model:
            shared = training.SeedTrainer(
                self.experiment, self.comparison, self.dataset, self.workdir, self.mesh, self.log_fn
            )
            try:
                self.reward_model = shared.reward_model()
            finally:
                shared.close()
            seconds.update(shared.seconds)
            cumulative = tuple(shared.seconds)
            self.records = shared.records
            report.write_json(os.path.join(self.workdir, SHARED_RECORDS_FILE), self.records)
        self.seconds = _add_shared_seconds(self.workdir, seconds, cumulative)


def run_seed(shared: SharedStages, seed: int, seed_dir: str) -> dict:
    """Trains every model of ``seed`` (cached stages restored) and evaluates them; writes and
    returns ``seed_dir/results.json``: rows, seconds per stage, stage records and (MG-E's k
    chosen on validation) the MG-E rows on the validation split."""
    seed_start = time.time()
    experiment, comparison, dataset = shared.experiment, shared.comparison, shared.dataset
    seed_experiment = dataclasses.replace(experiment, seed=seed)
    copied = {}
    if comparison.reuse_baselines_from:
        names = sorted(training.needed_baselines(comparison))  # dnn / prm / nar: evaluator-free
        copied = reuse.copy_stages(
            comparison.reuse_baselines_from, seed, seed_dir, names, shared.log_fn
        )
    trainer = training.SeedTrainer(
        seed_experiment, comparison, dataset, seed_dir, shared.mesh, shared.log_fn
    )
    try:
        models = trainer.train_all(shared.reward_model)
    finally:
        trainer.close()
    for name, info in copied.items():
        models.train_seconds.update(_copied_stage_seconds(name, info, models))
        models.train_records[name]["copied_from"] = info["from"]
    eval_start = time.time()
    shared.log_fn(f"[compare] seed {seed}: evaluating every method on {comparison.split}")
    seed_eval = evaluation.SeedEvaluation(
        models,
        comparison,
        dataset.list_len,
        dataset.has_true_model,
        experiment.data.env.true_model,
        shared.mesh,
        shared.simulator,
    )
    batches = pipeline.eval_batches(
        dataset.sources[comparison.split],
        experiment.eval.batch_size,
        experiment.eval.max_examples,
    )
    key = jax.random.fold_in(
        jax.random.key(seed, impl=experiment.prng_impl), stages.COMPARISON_EVAL_STREAM
    )
    results = seed_eval(batches, key, shared.simulator_params)
    seconds = dict(models.train_seconds)
    # A seed evaluated again (its cache lacked rows) restored its stages: the seconds they took
    # to train are those of the earlier invocation, kept from its results, unless a stage
    # trained on here (a grown budget): then its checkpoint's total over the invocations.
    earlier_results = os.path.join(seed_dir, report.RESULTS_FILE)
    seconds.update(_stage_seconds_over_invocations(earlier_results, seconds))
    seconds["evaluation"] = time.time() - eval_start
    document = {
        "rows": results,
        "stages": models.train_records,
        "split": comparison.split,
        EVALUATED_WITH: evaluation_settings(config_tree(experiment, comparison)),
    }
    if selects_mge_on_validation(comparison):
        # MG-E's k is a setting like any other: chosen on validation, never on the test split.
        start = time.time()
        shared.log_fn(f"[compare] seed {seed}: MG-E on validation (to choose k)")
        validation_batches = pipeline.eval_batches(
            dataset.sources["validation"],
            experiment.eval.batch_size,
            experiment.eval.max_examples,
        )
        selection_key = jax.random.fold_in(
            jax.random.key(seed, impl=experiment.prng_impl),
            stages.COMPARISON_MGE_SELECTION_STREAM,
        )
        document[VALIDATION_MGE] = seed_eval(
            validation_batches, selection_key, shared.simulator_params, only_mge=True
        )
        seconds["MG-E on validation"] = time.time() - start
    seconds["seed_total"] = time.time() - seed_start
    document["seconds"] = seconds
    report.write_json(os.path.join(seed_dir, report.RESULTS_FILE), document)
    return document


def config_tree(experiment, comparison) -> dict:
    """What ``config.json`` of a comparison workdir holds."""
    return {
        "experiment": config_check.config_json(experiment),
        "compare": config_check.config_json(comparison),
    }


def _start(experiment, comparison, workdir: str, report_only: bool = False):
    """Checks the workdir's saved config (a ValueError names the fields that differ where they
    may not) and, unless ``report_only``, writes the new one; sets the persistent compilation
    cache. Returns the experiment with ``data.data_dir`` set and the evaluation settings of
    the saved config (None without one: see _load_cached)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    tree = config_tree(experiment, comparison)
    saved = config_check.read(path)
    config_check.check_saved(
        path, tree, WORKDIR_IGNORED, WORKDIR_GROWABLE, what=f"comparison workdir {workdir}"
    )
    if not report_only:
        report.write_json(path, tree)
    # Every seed compiles the same programs: the persistent cache makes seeds 2.. skip XLA. A
    # cache the caller chose (JAX_COMPILATION_CACHE_DIR) is kept.
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    legacy = evaluation_settings(saved) if saved is not None else None
    return comparison_config.with_data_dir(experiment, workdir), legacy


def run_comparison(
    experiment,
    comparison,
    workdir: str,
    log_fn: Callable[[str], None] = print,
    command: str = "",
    report_only: bool = False,
) -> dict:
    """Trains and evaluates every method for every seed (cached), then writes the report."""
    start = time.time()
    mesh = sharding.mesh_from_config(experiment.mesh)
    experiment, legacy = _start(experiment, comparison, workdir, report_only)
    if comparison.reuse_baselines_from:
        reuse.check_source(experiment, comparison, comparison.reuse_baselines_from)
    if baselines_budget := unequal_baseline_budget(experiment, comparison):
        log_fn(
            "[compare] note: unequal budgets: the GoalRank runs and the supervised AR generator "
            f"train up to {budget_text(experiment.train)} (train), DNN, PRM and NAR up to "
            f"{baselines_budget} (compare.baseline_train)"
        )
    rows = expected_rows(experiment, comparison)
    # Old caches without MG-E on validation are evaluated again, except for a report-only run,
    # whose report then names its best MG-E as chosen on the test split.
    need_validation = selects_mge_on_validation(comparison) and not report_only
    settings = evaluation_settings(config_tree(experiment, comparison))
    per_seed, timings, records, validation = {}, {}, {}, {}
    shared = SharedStages(experiment, comparison, workdir, mesh, log_fn)
    with jax.set_mesh(mesh):
        for index, seed in enumerate(comparison.seeds):
            seed_dir = os.path.join(workdir, f"seed_{seed}")
            result = _load_cached(
                os.path.join(seed_dir, report.RESULTS_FILE),
                rows,
                need_validation,
                settings,
                legacy,
            )
            if result is not None:
                log_fn(f"[compare] seed {seed}: cached results in {seed_dir}")
            elif report_only:
                log_fn(f"[compare] seed {seed}: no complete cached results; left out")
                continue
            else:
                log_fn(f"[compare] seed {seed} ({index + 1}/{len(comparison.seeds)})")
                shared.build()
                result = run_seed(shared, seed, seed_dir)
                done, elapsed = index + 1, time.time() - start
                log_fn(
                    f"[compare] seed {seed} done in "
                    f"{format_duration(result['seconds']['seed_total'])}; "
                    f"{done}/{len(comparison.seeds)} seeds, elapsed {format_duration(elapsed)}, "
                    f"eta {format_duration(elapsed / done * (len(comparison.seeds) - done))}"
                )
            per_seed[seed], timings[f"seed {seed}"] = result["rows"], result["seconds"]
            records[seed] = result.get("stages", {})
            if VALIDATION_MGE in result:
                validation[seed] = result[VALIDATION_MGE]
    if not per_seed:
        raise ValueError(f"No seed of {comparison.seeds} has results under {workdir}.")
    shared_records = shared.records or config_check.read(os.path.join(workdir, SHARED_RECORDS_FILE))
    if shared_records:
        records = {"shared by all seeds": shared_records, **records}
    shared_totals = shared.seconds or _add_shared_seconds(workdir, {})
    if shared_totals:
        timings = {"shared by all seeds": shared_totals, **timings}
    selection = None
    if validation and validation.keys() >= per_seed.keys():
        metric = mge_selection_metric(comparison, experiment.data.list_len)
        chosen = choose_mge(per_seed, validation, comparison.mge_ks, metric)
        selection = {"metric": f"validation/{metric}", "k": chosen}
    document = _write_report(
        experiment, comparison, workdir, per_seed, command, timings, records, log_fn, selection
    )
    log_fn(
        f"[compare] report: {os.path.join(workdir, 'comparison.md')} "
        f"(total {format_duration(time.time() - start)})"
    )
    return document


def budget_text(stage) -> str:
    """A stage's training budget in words: its cap (epochs or steps) and early-stopping patience."""
    cap = f"{stage.num_epochs:g} epochs" if stage.num_epochs else f"{stage.num_steps} steps"
    return f"{cap}, patience {stage.patience}" if stage.patience else cap


def unequal_baseline_budget(experiment, comparison) -> str:
    """The budget of DNN, PRM and NAR (``compare.baseline_train``) in words when it differs from
    that of the generator stages (``train``), else ""."""
    theirs = budget_text(comparison.baseline_train)
    return "" if theirs == budget_text(experiment.train) else theirs


def _write_report(
    experiment, comparison, workdir, per_seed, command, timings, records, log_fn, selection
) -> dict:
    """comparison.md / .json / PNGs; prints the main table. ``selection``: MG-E's k chosen on
    validation ({"metric", "k": {seed: k}}), or None (the report's best MG-E is then the best k
    on the compared split, an optimistic bound)."""
    gro = experiment.gro
    document = report.write(
        workdir,
        per_seed,
        dataset=experiment.data.dataset,
        split=comparison.split,
        list_len=experiment.data.list_len,
        ks=comparison.mge_ks,
        group_sizes=comparison.group_sizes,
        aliases=training.same_run_aliases(experiment, comparison),
        defaults={
            "generator": f"{experiment.generator.variant} D={experiment.generator.embed_dim}",
            "K": gro.group_size,
            "w_R": gro.reward_weight,
            "w_G": gro.supervised_weight,
            "loss": gro.loss_form,
            "groups": gro.group_construction,
            "budget": budget_text(experiment.train),
            "batch": experiment.train.batch_size,
            "selection": comparison.select_metric or "last state",
            "reward model": experiment.reward_model.kind,
            "G-E proposals": comparison.num_proposals,
            **(
                {"DNN / PRM / NAR budget": baselines_budget}
                if (baselines_budget := unequal_baseline_budget(experiment, comparison))
                else {}
            ),
        },
        command=command,
        timings=timings,
        records=records,
        mge_selection=selection,
        select_metric=comparison.select_metric,
    )
    print_table = [(r, report.LABELS.get(r, r)) for r in ("dnn", "prm", "supervised_ar")]
    print_table += [(r, report.LABELS[r]) for r in report.GE]
    print_table += [(f"mge@{k}", f"MG-E k={k}") for k in comparison.mge_ks]
    print_table += [(report.SELECTED_MGE, "MG-E, k chosen on validation")]
    print_table += [("goalrank", "GoalRank")]
    columns = report.metric_columns(document["summary"], experiment.data.list_len)
    log_fn(report.table(document["summary"], print_table, columns))
    return document


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        experiment, comparison = comparison_config.from_config_dict(
            _CONFIG.value, jax.device_count()
        )
    except ValueError as err:
        print(f"error: invalid config: {err}", file=sys.stderr)
        sys.exit(main_lib.EXIT_INVALID_INPUT)
    command = "python -m goalrank_jax.comparison " + " ".join(
        shlex.quote(a) for a in argv[1:] or sys.argv[1:]
    )
    log_fn = functools.partial(print, flush=True)
    with main_lib.exit_codes((RawDataError, CheckpointError, ValueError)):
        if main_lib.PREPARE_ONLY.value:
            run.prepare_data(
                comparison_config.with_data_dir(experiment, _WORKDIR.value), _WORKDIR.value, log_fn
            )
            return
        run_comparison(experiment, comparison, _WORKDIR.value, log_fn, command, _REPORT_ONLY.value)


if __name__ == "__main__":
    app.run(main, flags_parser=main_lib.parse_flags)

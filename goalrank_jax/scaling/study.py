"""The scaling-law study in one command: GoalRank at every size preset, same data and budget.

    python -m goalrank_jax.scaling --config=experiments/scaling.py --workdir=runs/scaling
    python -m goalrank_jax.scaling --config=experiments/scaling.py --workdir=runs/scaling \
        --sizes=0.1m,0.3m,1m --variants=prefix,fast --mge_results=runs/compare/comparison.json

For every (size, variant), smallest size first, ``run.train_and_evaluate`` trains and evaluates
the whole pipeline in ``<workdir>/<variant>_<size>/`` with the generator of that preset
(goalrank_jax/scaling/presets.py); everything else (data, reward model, GRO settings, steps,
batch) is the experiment config's, the same for every run. The dataset is prepared once
(``<workdir>/tfds`` or ``data.data_dir``). With ``scaling.share_reward_model`` the first run
trains the reward model and its finished ``reward_model/`` checkpoint directory is copied into
every later run, whose reward-model stage is then restored and skipped.

Resuming: a run with ``results.json`` is served from it; an interrupted run resumes from its
checkpoints; a run directory whose ``config.json`` differs from the current config is an error
(use another workdir). Outputs: ``scaling.md`` (table), ``scaling.json`` and ``scaling.png``
(quality versus non-embedding parameters on a log axis, one line per variant; with
``--mge_results`` a second panel with the MG-E curve versus the number of generators k).
The report also covers finished runs of the same study in the workdir that this invocation did
not plan (e.g. ``--sizes=1m,3m --variants=fast`` after the main sweep). ``--report_only``
rewrites the outputs from the finished runs. Multi-host: main's ``--jax_distributed`` flags;
the workdir must be a directory every host sees, and only process 0 copies and writes files.
Exit codes as ``goalrank_jax.main``. The command line (its flags) is goalrank_jax/scaling/
__main__.py; this module defines no flag.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from goalrank_jax import config_check, configs, run, stages
from goalrank_jax.scaling import presets, report
from goalrank_jax.train import format_duration

RESULTS_FILE = "results.json"
RUN_INFO_FILE = "scaling_run.json"  # Seconds of the run and where its reward model came from.
REWARD_SOURCE_FILE = "reward_model_source.json"  # The run a copied reward model came from.
# One line per time estimate the study printed: the runs it was for and the seconds it said.
ESTIMATES_FILE = "time_estimates.jsonl"


def _generator_variants() -> tuple[str, ...]:
    return configs.GENERATOR_VARIANTS


@dataclasses.dataclass(frozen=True)
class ScalingConfig:
    """The ``scaling`` group of experiments/scaling.py (which documents each field)."""

    sizes: tuple[str, ...] = ("0.01m", "0.03m", "0.1m", "0.3m")  # Names of presets.PRESETS.
    # Each size is trained for each (default: every registered generator variant).
    variants: tuple[str, ...] = dataclasses.field(default_factory=_generator_variants)
    mge_results: str = ""  # comparison.json of goalrank_jax.comparison ("" = no MG-E panel).
    metric: str = "test/true_reward"  # The plot's y axis: a results.json key.
    share_reward_model: bool = True  # Train the reward model once, copy it into every run.
    # Generator seeds of every (size, variant) (() = the experiment's seed only). The reward
    # model is the experiment seed's in every run (shared); a seed changes the generator's
    # initialisation, batch order, sampling and the evaluation's random draws.
    seeds: tuple[int, ...] = ()
    # The largest preset trained with every seed; larger ones run the first seed only
    # ("" = every size runs every seed).
    seeds_up_to: str = ""
    # scaling.json files of earlier invocations of this study in other workdirs (e.g. the
    # smaller sizes, run in another session): their runs join the report and time the estimate
    # of the runs still to train. Each is checked to be of the same study (dataset, vocabulary,
    # budget, metric, and the test value of every reference list that does not depend on the
    # seed, i.e. the same data and reward model).
    earlier_reports: tuple[str, ...] = ()

    def validate(self) -> None:
        if not self.sizes or not self.variants:
            raise ValueError("ScalingConfig.sizes and .variants must each name at least one.")
        presets.sorted_names(self.sizes)  # raises on an unknown preset, listing the valid ones
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"ScalingConfig.seeds has a repeated seed: {self.seeds}.")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ValueError(f"ScalingConfig.seeds must be integers >= 0, got {seed!r}.")
        if self.seeds_up_to and self.seeds_up_to not in presets.PRESETS:
            raise ValueError(
                f"ScalingConfig.seeds_up_to {self.seeds_up_to!r} is no preset; use one of "
                f"{tuple(presets.PRESETS)} or ''."
            )
        for variant in self.variants:
            if variant not in configs.GENERATOR_VARIANTS:
                raise ValueError(
                    f"ScalingConfig.variants has {variant!r}; use {configs.GENERATOR_VARIANTS}."
                )
        if not self.metric.startswith("test/"):
            raise ValueError(f"ScalingConfig.metric must be a test/ metric, got {self.metric!r}")


def from_config_dict(config, num_devices: int = 1, **overrides):
    """ConfigDict with a ``scaling`` group -> (ExperimentConfig, ScalingConfig); ``overrides``
    (sizes, variants, mge_results; None = keep) replace fields of the scaling group."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    scaling = dict(values.pop("scaling", {}))
    scaling.update({k: v for k, v in overrides.items() if v is not None})
    for name in ("sizes", "variants", "seeds", "earlier_reports"):
        if name in scaling:
            scaling[name] = tuple(scaling[name])
    if "seeds" in scaling:
        scaling["seeds"] = tuple(_as_seed(s) for s in scaling["seeds"])
    study = ScalingConfig(**scaling)
    study.validate()
    return configs.from_config_dict(values, num_devices), study


def _as_seed(value):
    """A seed from the config or a --seeds flag ("3" -> 3); other values are left for
    ScalingConfig.validate to name."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def run_config(
    experiment: configs.ExperimentConfig, size: str, variant: str, seed: int | None = None
):
    """The experiment with the generator of preset ``size`` for ``variant`` (and ``seed``
    as the run's seed; None = the experiment's)."""
    generator = presets.apply_preset(experiment.generator, size, variant)
    seed = experiment.seed if seed is None else seed
    return dataclasses.replace(experiment, generator=generator, seed=seed)


def run_name(size: str, variant: str, seed: int | None = None, base_seed: int | None = None):
    """``<variant>_<size>``, with ``_seed<S>`` when the run's seed is not the experiment's."""
    suffix = "" if seed is None or seed == base_seed else f"_seed{seed}"
    return f"{variant}_{size}{suffix}"


def run_seeds(study: ScalingConfig, experiment: configs.ExperimentConfig, size: str):
    """The seeds ``size`` is trained with: every seed up to ``seeds_up_to``, else the first."""
    seeds = study.seeds or (experiment.seed,)
    if study.seeds_up_to and presets.sorted_names([size, study.seeds_up_to])[0] != size:
        return seeds[:1]
    return seeds


def _read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _check_run_dir(run_dir: str, config) -> None:
    saved = _read_json(os.path.join(run_dir, "config.json"))
    if saved is None:
        return
    # Every field must match (none ignored).
    differences = config_check.differences(saved, config_check.config_json(config))
    if differences:
        raise ValueError(
            f"{run_dir} holds a run of another config (fields {', '.join(differences)}); use a "
            "new --workdir or remove that directory."
        )


def _reward_model_key(config: dict, seed: int | None = None) -> str:
    """What the reward model's training depends on (everything but the generator and GRO);
    ``seed`` replaces the config's seed."""
    keys = ("seed", "prng_impl", "data", "reward_model", "eval")
    values = {k: config.get(k) for k in keys}
    if seed is not None:
        values["seed"] = seed
    return json.dumps(values, sort_keys=True)


def share_reward_model(
    workdir: str, run_dir: str, config, reward_seed: int | None = None
) -> str | None:
    """Copies a finished reward model of a run in ``workdir`` with the same reward-model config
    into ``run_dir`` (which has none yet), and on real data the run's held-out simulator when
    its config is the same too; returns the source run directory or None. A run
    resumed after the copy returns the source recorded at the copy. ``reward_seed``: the seed
    the reward model must have been trained with (None = ``config``'s own), so that a run of
    another generator seed gets the experiment seed's reward model."""
    target = os.path.join(run_dir, run.REWARD_STAGE)
    marker = os.path.join(run_dir, REWARD_SOURCE_FILE)
    if os.path.exists(target):
        recorded = _read_json(marker)
        return os.path.join(workdir, recorded["source"]) if recorded else None
    key = _reward_model_key(config_check.config_json(config), reward_seed)
    for name in sorted(os.listdir(workdir)):
        source = os.path.join(workdir, name)
        saved = _read_json(os.path.join(source, "config.json"))
        finished = os.path.exists(os.path.join(source, RESULTS_FILE))
        stage = os.path.join(source, run.REWARD_STAGE)
        if source == run_dir or saved is None or not finished or not os.path.isdir(stage):
            continue
        if _reward_model_key(saved) != key:
            continue
        os.makedirs(run_dir, exist_ok=True)
        # Real data: the held-out simulator is the same frozen evaluator in every run; it is
        # copied first, so that a copied reward model always comes with it.
        simulator = os.path.join(source, run.SIMULATOR_STAGE)
        if os.path.isdir(simulator) and _simulator_key(saved) == _simulator_key(
            config_check.config_json(config)
        ):
            stages.copy_stage(simulator, os.path.join(run_dir, run.SIMULATOR_STAGE))
        stages.copy_stage(stage, target)
        report.write_json(marker, {"source": name})
        return source
    return None


def _simulator_key(config: dict) -> str:
    """What the held-out simulator's training depends on (it has a seed of its own)."""
    keys = ("prng_impl", "data", "simulator", "eval")
    return json.dumps({k: config.get(k) for k in keys}, sort_keys=True)


def step_time_s(run_dir: str) -> float:
    """Median seconds per generator step over the logged windows, the first one (which
    includes the compilation) left out when there are others; NaN without windows."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return float("nan")
    rates = []
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if "generator/steps_per_second" in row:
                rates.append(row["generator/steps_per_second"])
    rates = rates[1:] if len(rates) > 1 else rates
    return 1.0 / statistics.median(rates) if rates else float("nan")


def estimate_seconds_left(
    done: Sequence[tuple], remaining: Sequence[tuple[str, float]]
) -> float | None:
    """Rough time left. ``done``: the finished runs as (variant, params, seconds) or (variant,
    params, seconds, epochs trained). Per variant a power law seconds = c * params ** b, a
    least-squares line through log seconds against log params of the finished runs of the two
    largest sizes finished so far; a variant with fewer than two sizes done (or a law that does
    not rise, b <= 0) borrows the law through all runs. When every finished run says how many
    epochs it trained (budgets in epochs, early stopping), the law is of seconds per epoch and
    each remaining run is predicted at the mean number of epochs trained so far. None while no
    rising law can be fitted (e.g. after one run). A power law rather than a straight line: on
    a CPU a step's time grows more slowly than the parameters over the presets (overhead-bound
    small sizes), and a line through two small sizes overstated the synthetic study's 3m run
    2.2 times (docs/scaling.md)."""
    epochs = [float(d[3]) for d in done if len(d) > 3 and d[3]]
    per_run = 1.0
    points = [(d[0], float(d[1]), float(d[2])) for d in done]
    if done and len(epochs) == len(done):
        per_run = float(np.mean(epochs))
        points = [(v, p, s / e) for (v, p, s), e in zip(points, epochs, strict=True)]

    def predictor(pairs):
        params = np.array([p for p, _ in pairs], float)
        seconds = np.array([s for _, s in pairs], float)
        if len(set(params)) < 2 or params.min() <= 0 or seconds.min() <= 0:
            return None
        # Fitted through the two largest sizes finished (every seed of each): the exponent
        # rises with size as a step turns from overhead-bound to compute-bound, so the local
        # one extrapolates best.
        largest = params >= sorted(set(params))[-2]
        exponent, log_scale = np.polyfit(np.log(params[largest]), np.log(seconds[largest]), 1)
        if exponent <= 0:
            return None
        return lambda p: max(float(np.exp(log_scale) * p**exponent), seconds.min())

    pooled = predictor([(p, s) for _, p, s in points])
    total = 0.0
    for variant, params in remaining:
        own = predictor([(p, s) for v, p, s in points if v == variant])
        line = own or pooled
        if line is None:
            return None
        total += line(params) * per_run
    return float(total)


def _vocabulary(experiment, workdir, log_fn):
    """(num_users, num_items, num_item_features) of the models the study trains."""
    if experiment.data.dataset == "synthetic":
        return (*presets.vocabulary(experiment.data), presets.feature_vocabulary(experiment.data))
    dataset = run.prepare_data(experiment, workdir, log_fn)
    return dataset.num_users, dataset.num_items, dataset.num_item_features


def _count(model, vocab, num_candidates):
    users, items, features = vocab
    return presets.count_generator(model, users, items, num_candidates, num_item_features=features)


def _record(size, variant, seed, run_dir, count, results: dict, cached: bool) -> dict:
    """One row of the report: sizes, seed, timings and the run's results."""
    info = _read_json(os.path.join(run_dir, RUN_INFO_FILE)) or {}
    return {
        "variant": variant,
        "size": size,
        "seed": seed,
        "workdir": run_dir,
        "params_total": count.total,
        "params_non_embedding": count.non_embedding,
        "params_embedding": count.embedding,
        "step_time_s": step_time_s(run_dir),
        "wall_time_s": results["wall_time_s"],
        "run_seconds": info.get("run_seconds", results["wall_time_s"]),
        "generator_seconds": info.get("generator_seconds"),
        "reward_model": info.get("reward_model", "unknown"),
        "cached": cached,
        "results": results,
    }


def _other_finished_runs(workdir, experiment, study, planned, vocab, log_fn) -> list[dict]:
    """Finished runs in ``workdir`` outside this invocation's plan but of the same study (same
    config but for the generator preset and seed), e.g. ``--sizes=1m,3m --variants=fast`` run
    after the main sweep: the report covers them too."""
    records = []
    seeds = dict.fromkeys((experiment.seed, *study.seeds))
    for size in presets.PRESETS:
        for variant in configs.GENERATOR_VARIANTS:
            for seed in seeds:
                name = run_name(size, variant, seed, experiment.seed)
                run_dir = os.path.join(workdir, name)
                results = _read_json(os.path.join(run_dir, RESULTS_FILE))
                if (size, variant, seed) in planned or results is None:
                    continue
                config = run_config(experiment, size, variant, seed)
                saved = _read_json(os.path.join(run_dir, "config.json")) or {}
                if config_check.differences(saved, config_check.config_json(config)):
                    log_fn(f"[scaling] {run_dir}: another config; left out of the report")
                    continue
                count = _count(config.generator, vocab, config.data.num_candidates)
                records.append(_record(size, variant, seed, run_dir, count, results, True))
    return records


def _train_run(workdir, name, config, share, primary, label, log_fn, reward_seed) -> dict:
    """Trains the run ``name`` of the plan (``label`` says which) and returns its results; with
    ``share`` its reward model is first copied from a finished run with the same one (trained
    with seed ``reward_seed``)."""
    run_dir = os.path.join(workdir, name)
    source = None
    if share and primary:
        source = share_reward_model(workdir, run_dir, config, reward_seed)
    if jax.process_count() > 1:  # the copy is on the shared workdir before anyone reads
        multihost_utils.sync_global_devices(f"scaling reward model {name}")
    reward_model = "trained" if source is None else f"from {os.path.basename(source)}"
    log_fn(f"[scaling] {label}; reward model {reward_model}")
    run_start = time.time()
    tag = f"[{name}] "
    marks = {}

    def tagged(message: str) -> None:
        # The generator stage's first line: what follows it (generator training and the
        # evaluation) is the part of a run that the copied stages do not shorten.
        if "generator" not in marks and message.startswith(f"[{run.GENERATOR_STAGE}]"):
            marks["generator"] = time.time()
        log_fn(tag + message)

    results = run.train_and_evaluate(config, run_dir, tagged)
    end = time.time()
    info = {
        "run_seconds": end - run_start,
        "generator_seconds": end - marks.get("generator", run_start),
        "reward_model": reward_model,
    }
    if primary:
        report.write_json(os.path.join(run_dir, RUN_INFO_FILE), info)
    return results


def timing_point(record: dict, by_epoch: bool) -> tuple[tuple, bool]:
    """A run's record (a ``scaling.json`` run) as the time estimate's input: ((variant, params,
    seconds, epochs or None), comparable). ``by_epoch``: the budget is in epochs."""
    # Timed from the generator stage's first line to the run's end where the run says
    # (generator_seconds), so that the run which trained the shared stages counts like the
    # others; a run without it that trained the reward model is slower than the others and
    # times the estimate only until another run has finished.
    epochs = record["results"].get("stages/generator/epochs") if by_epoch else None
    seconds = record.get("generator_seconds")
    comparable = seconds is not None or record["reward_model"] != "trained"
    seconds = record["run_seconds"] if seconds is None else seconds
    return (record["variant"], record["params_non_embedding"], seconds, epochs), comparable


def estimate_points(timings: Sequence[tuple[tuple, bool]]) -> list[tuple]:
    """The points of ``timings`` ((point, comparable) pairs) the estimate is fitted to: the
    comparable ones, or all while none is."""
    return [p for p, shared in timings if shared] or [p for p, _ in timings]


def _seconds_left(timings: list, record: dict, remaining, report_only: bool, by_epoch: bool):
    """Adds ``record``'s run to ``timings`` and estimates the time the ``remaining`` runs take
    (``by_epoch``: the budget is in epochs, so the estimate goes by seconds per epoch)."""
    timings.append(timing_point(record, by_epoch))
    return None if report_only else estimate_seconds_left(estimate_points(timings), remaining)


def _log_estimate(workdir: str, after: str, seconds: float, runs: list[str]) -> None:
    """Appends one printed time estimate (made after run ``after``) to ESTIMATES_FILE."""
    line = json.dumps({"after": after, "estimate_s": seconds, "runs": runs})
    with open(os.path.join(workdir, ESTIMATES_FILE), "a") as f:
        f.write(line + "\n")


def estimate_checks(workdir: str) -> list[dict]:
    """Every logged time estimate whose runs have all finished, against the seconds those runs
    took (their ``run_seconds``, which leaves out any time between interrupted invocations):
    {after, estimate_s, actual_s, ratio = estimate / actual, runs}."""
    path = os.path.join(workdir, ESTIMATES_FILE)
    if not os.path.exists(path):
        return []
    checks = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            estimate = json.loads(line)
            seconds = []
            for name in estimate["runs"]:
                info = _read_json(os.path.join(workdir, name, RUN_INFO_FILE))
                if info is None or not os.path.exists(os.path.join(workdir, name, RESULTS_FILE)):
                    break
                seconds.append(info["run_seconds"])
            else:
                actual = float(sum(seconds))
                checks.append(
                    {
                        **estimate,
                        "actual_s": actual,
                        "ratio": estimate["estimate_s"] / actual if actual > 0 else float("nan"),
                    }
                )
    return checks


# Reference lists whose test value is a function of the data and the reward model alone (the
# random list's draws depend on the run's seed): equal values say two reports share both.
SEEDLESS_REFERENCES = ("reward_model_greedy", "logged", "true_relevance_sort", "oracle")


def read_earlier_reports(paths, experiment, study, vocab) -> list[tuple[str, dict]]:
    """(path, document) of every earlier report of this study; ValueError naming the first
    difference (dataset, vocabulary, budget or metric) of one that is not."""
    documents = []
    expected = {
        "dataset": experiment.data.dataset,
        "vocabulary": {"num_users": vocab[0], "num_items": vocab[1]},
        "budget": report.budget_of(experiment),
        "metric": study.metric,
    }
    for path in paths:
        document = _read_json(path)
        if document is None or "runs" not in document:
            raise ValueError(f"earlier report {path}: no such scaling.json (or it has no runs).")
        found = {**{k: document.get(k) for k in expected}, "metric": document["study"]["metric"]}
        for key, value in expected.items():
            if json.loads(json.dumps(found[key])) != json.loads(json.dumps(value)):
                raise ValueError(
                    f"earlier report {path} is of another study: its {key} is {found[key]}, "
                    f"this study's is {value}."
                )
        documents.append((path, document))
    return documents


def check_earlier_references(earlier, records) -> None:
    """ValueError when a newly trained run's seedless reference lists (SEEDLESS_REFERENCES)
    score otherwise on test than in an earlier report: another data set or reward model."""
    for path, document in earlier:
        metric = document["study"]["metric"].split("/", 1)[1]
        for record in records:
            for policy in SEEDLESS_REFERENCES:
                before = document.get("references", {}).get(policy)
                now = record["results"].get(f"test/{policy}/{metric}")
                if before is not None and now is not None and abs(before - now) > 1e-6:
                    raise ValueError(
                        f"earlier report {path} is of another data set or reward model: its "
                        f"{policy} list scores {before:.6f} on test, run {record['workdir']} "
                        f"{now:.6f}."
                    )


def earlier_runs(earlier, keys) -> list[dict]:
    """The earlier reports' runs (each marked with its report) but those of ``keys`` ((size,
    variant, seed) of the runs this workdir has or plans: those replace them); a run in two
    reports is taken from the first."""
    have = {(variant, size, seed) for size, variant, seed in keys}
    runs = []
    for path, document in earlier:
        for run_record in document["runs"]:
            key = (run_record["variant"], run_record["size"], run_record["seed"])
            if key not in have:
                have.add(key)
                runs.append({**run_record, "cached": True, "report": path})
    return runs


def _write_report(
    workdir, records, experiment, study, vocab, command, primary, log_fn, earlier=()
) -> dict:
    """The report of ``records`` (written by process 0 only; the others return the runs);
    ``earlier``: the (path, document) of earlier reports, whose time estimates it repeats."""
    mge = _read_json(study.mge_results) if study.mge_results else None
    if study.mge_results and mge is None:
        raise ValueError(f"--mge_results {study.mge_results} does not exist.")
    if not primary:
        return {"runs": records}
    document = report.write_report(
        workdir,
        records,
        experiment=experiment,
        study=dataclasses.asdict(study),
        vocabulary={"num_users": vocab[0], "num_items": vocab[1]},
        mge=mge,
        command=command,
        estimates=[
            *({**e, "report": path} for path, d in earlier for e in d.get("time_estimates", [])),
            *estimate_checks(workdir),
        ],
    )
    log_fn(f"[scaling] report: {os.path.join(workdir, 'scaling.md')}")
    return document


def run_study(
    experiment: configs.ExperimentConfig,
    study: ScalingConfig,
    workdir: str,
    log_fn: Callable[[str], None] = print,
    command: str = "",
    report_only: bool = False,
) -> dict:
    """Trains (or reads from the cache) every (size, variant) run, then writes the report."""
    start = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = experiment.data.data_dir or os.path.join(workdir, "tfds")
    experiment = dataclasses.replace(
        experiment, data=dataclasses.replace(experiment.data, data_dir=data_dir)
    )
    vocab = _vocabulary(experiment, workdir, log_fn)
    primary = jax.process_index() == 0  # the only process that writes files of its own
    plan = [
        (s, v, seed)
        for s in presets.sorted_names(study.sizes)
        for v in study.variants
        for seed in run_seeds(study, experiment, s)
    ]
    # The first seed's first run trains the reward model that every other run copies.
    reward_seed = (study.seeds or (experiment.seed,))[0]
    counts = {
        (s, v): _count(
            run_config(experiment, s, v).generator, vocab, experiment.data.num_candidates
        )
        for s, v, _ in plan
    }
    names = {entry: run_name(*entry, experiment.seed) for entry in plan}
    by_epoch = experiment.train.num_epochs > 0
    earlier = read_earlier_reports(study.earlier_reports, experiment, study, vocab)
    previous = earlier_runs(earlier, plan)
    # The earlier reports' runs time the estimate from the start, smallest first.
    ordered = sorted(previous, key=lambda r: r["params_non_embedding"])
    timings = [timing_point(r, by_epoch) for r in ordered]

    def unfinished(entries):
        return [
            e for e in entries if not os.path.exists(os.path.join(workdir, names[e], RESULTS_FILE))
        ]

    def params(entries):
        return [(v, float(counts[s, v].non_embedding)) for s, v, _ in entries]

    if previous:
        log_fn(f"[scaling] {len(previous)} runs from {len(earlier)} earlier report(s)")
        to_train = unfinished(plan)
        left = estimate_seconds_left(estimate_points(timings), params(to_train))
        if left is not None and to_train and not report_only:
            if primary:
                _log_estimate(workdir, "earlier reports", left, [names[e] for e in to_train])
            log_fn(f"[scaling] about {format_duration(left)} for the {len(to_train)} runs to train")
    records = []
    for index, (size, variant, seed) in enumerate(plan):
        name = names[size, variant, seed]
        run_dir = os.path.join(workdir, name)
        config = run_config(experiment, size, variant, seed)
        _check_run_dir(run_dir, config)
        results = _read_json(os.path.join(run_dir, RESULTS_FILE))
        cached = results is not None
        if not cached and not report_only:
            label = (
                f"run {index + 1}/{len(plan)}: {variant} {size} seed {seed} "
                f"({counts[size, variant].non_embedding:,} non-embedding parameters)"
            )
            share = study.share_reward_model
            results = _train_run(workdir, name, config, share, primary, label, log_fn, reward_seed)
        if results is None:
            log_fn(f"[scaling] {name}: not finished; left out of the report")
            continue
        record = _record(size, variant, seed, run_dir, counts[size, variant], results, cached)
        # Checked as each run finishes, so another reward model stops the study after its first
        # run instead of after every run has trained.
        check_earlier_references(earlier, [record])
        records.append(record)
        # The runs still to train (finished ones later in the plan are served from the cache).
        later = unfinished(plan[index + 1 :])
        remaining = params(later)
        left = _seconds_left(timings, record, remaining, report_only, by_epoch)
        if left is not None and remaining and primary:
            _log_estimate(workdir, name, left, [names[entry] for entry in later])
        log_fn(
            f"[scaling] {name}: {'cached' if cached else 'done'}; "
            f"{study.metric}={results.get(study.metric, float('nan')):.4f}; "
            f"{index + 1}/{len(plan)} runs, elapsed {format_duration(time.time() - start)}"
            + (f", about {format_duration(left)} left" if left is not None and remaining else "")
        )
    others = _other_finished_runs(workdir, experiment, study, set(plan), vocab, log_fn)
    check_earlier_references(earlier, others)
    records += others
    have = [*plan, *((r["size"], r["variant"], r["seed"]) for r in records)]
    records += earlier_runs(earlier, have)
    if not records:
        raise ValueError(f"No run of {plan} has finished under {workdir}.")
    return _write_report(
        workdir, records, experiment, study, vocab, command, primary, log_fn, earlier
    )

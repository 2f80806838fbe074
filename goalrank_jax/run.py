"""The whole GoalRank pipeline: data -> reward model -> generator -> evaluation -> results.

``train_and_evaluate(config, workdir)`` is what ``python -m goalrank_jax.main`` runs. Every stage
is resumable: a finished stage is restored from its last checkpoint and skipped, an interrupted
one continues from its latest checkpoint with the same batches and PRNG keys.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from goalrank_jax import config_check, configs, policies, sharding, stages
from goalrank_jax import evaluate as evaluate_lib
from goalrank_jax import train_step as ts
from goalrank_jax.data import pipeline
from goalrank_jax.metric_writer import MetricWriter
from goalrank_jax.models import make_generator, make_reward_model
from goalrank_jax.train import format_duration

REWARD_STAGE = "reward_model"
SIMULATOR_STAGE = "simulator"
GENERATOR_STAGE = "generator"


def prepare_data(
    config: configs.ExperimentConfig, workdir: str, log_fn: Callable[[str], None] = print
) -> pipeline.Dataset:
    """Prepares (once) and opens the dataset of ``config``; logs its statistics."""
    data_dir = config.data.data_dir or os.path.join(workdir, "tfds")
    log_fn(f"[data] preparing {config.data.dataset!r} under {data_dir}")
    dataset = pipeline.load_dataset(config.data, data_dir, log_fn)
    log_fn("[data] statistics: " + json.dumps(dataset.stats))
    log_fn(
        f"[data] vocabulary: {dataset.num_users} users, {dataset.num_items} items, "
        f"{dataset.num_item_features} item features"
    )
    return dataset


def stage_context(
    config: configs.ExperimentConfig,
    dataset: pipeline.Dataset,
    workdir: str,
    mesh,
    writer: MetricWriter,
    log_fn: Callable[[str], None] = print,
) -> stages.StageContext:
    """What every stage of a run of ``config`` shares (its mesh, seed, dataset, writer)."""
    return stages.StageContext(
        workdir=workdir,
        dataset=dataset,
        init_batch=stages.init_batch(dataset, 2),
        mesh=mesh,
        fsdp_min_size=config.mesh.fsdp_min_size,
        writer=writer,
        seed=config.seed,
        prng_impl=config.prng_impl,
        log_fn=log_fn,
    )


def split_evaluator(config, context: stages.StageContext, evaluation, simulator_params=None):
    """``(split, generator params, reward params) -> {'<split>/<policy>/<metric>': value}``."""

    def run_eval(split, gen_params, rm_params):
        batches = pipeline.eval_batches(
            context.dataset.sources[split], config.eval.batch_size, config.eval.max_examples
        )
        # The evaluation is compiled for replicated parameters: gather FSDP-split ones.
        gen_params, rm_params, sim_params = sharding.put_replicated(
            (gen_params, rm_params, simulator_params), context.mesh
        )
        results = evaluation(gen_params, rm_params, batches, sim_params)
        return {f"{split}/{k}": v for k, v in results.items()}

    return run_eval


def check_workdir_config(path: str, config: configs.ExperimentConfig, workdir: str) -> None:
    """``config_check.check_saved`` of the run's config against ``path``. Multi-host: the
    chief's verdict is broadcast, so that every process stops when its config differs (also
    where only the chief's disk holds the workdir)."""
    problem = ""
    if sharding.process_is_chief():
        try:
            config_check.check_saved(
                path,
                config_check.config_json(config),
                config_check.RUN_IGNORED,
                config_check.RUN_GROWABLE,
                what=f"workdir {workdir}",
            )
        except ValueError as err:
            problem = str(err)
    if jax.process_count() > 1:
        refused = multihost_utils.broadcast_one_to_all(np.int32(bool(problem)))
        if int(refused) and not problem:
            problem = (
                f"workdir {workdir} was started under another config: process 0 names the "
                "fields that differ."
            )
    if problem:
        raise ValueError(problem)


def train_and_evaluate(
    config: configs.ExperimentConfig, workdir: str, log_fn: Callable[[str], None] = print
) -> dict[str, float]:
    """Runs every stage and returns the final results (also written to results.json)."""
    start = time.time()
    config.validate(jax.device_count())  # before anything is written
    config = configs.resolve_select_metric(config)  # "auto" -> the metric config.json records
    mesh = sharding.mesh_from_config(config.mesh)
    log_fn(f"[mesh] {dict(mesh.shape)} over {jax.process_count()} process(es)")
    os.makedirs(workdir, exist_ok=True)
    # A workdir started under another config would restore stages trained under it: refused
    # before the chief writes the new config.
    config_path = os.path.join(workdir, "config.json")
    check_workdir_config(config_path, config, workdir)
    if sharding.process_is_chief():
        _write_json(config_path, dataclasses.asdict(config), indent=2)
    writer = MetricWriter(workdir)
    dataset = prepare_data(config, workdir, log_fn)
    context = stage_context(config, dataset, workdir, mesh, writer, log_fn)
    with jax.set_mesh(mesh):
        evaluator = reward_model_evaluator(
            config.reward_model.kind, config.reward_model.model, dataset
        )
        simulator = simulator_params = simulator_auc = None
        if not dataset.has_true_model:
            simulator, simulator_params, simulator_auc = train_simulator(config, context)
        policy = generator_policy(config, dataset)
        evaluation = evaluate_lib.Evaluation(
            policy,
            evaluator,
            dataset.list_len,
            dataset.has_true_model,
            config.data.env.true_model,
            mesh,
            simulator,
        )
        run_eval = split_evaluator(config, context, evaluation, simulator_params)
        rm_stage = reward_model_stage(
            config,
            evaluator,
            context,
            eval_fn=lambda s: _select(
                run_eval("validation", None, s.params), "reward_model_greedy"
            ),
        )
        rm_state = stages.train(context, rm_stage)
        gen_stage = generator_stage(
            config,
            policy,
            evaluator,
            context,
            rm_state.params,
            eval_fn=lambda s: _select(
                run_eval("validation", s.params, s.reward_params), "goalrank"
            ),
        )
        gen_state = stages.train(context, gen_stage)
        log_fn("[eval] evaluating every policy on the validation and test splits")
        results = run_eval("validation", gen_state.params, gen_state.reward_params)
        results.update(run_eval("test", gen_state.params, gen_state.reward_params))
        trained = [rm_stage, gen_stage]
        if simulator_auc is not None:
            results["validation/simulator/AUC"] = simulator_auc
            trained.insert(0, simulator_stage(config, simulator, context))
        results.update(stage_records(context, trained))
    results.update(data_records(dataset.stats))
    return _finish(config, workdir, results, start, writer, dataset.list_len, log_fn)


def data_records(stats: dict) -> dict[str, float]:
    """``data/<statistic>`` of the dataset's numeric statistics (positive rate, requests, ...)."""
    return {
        f"data/{name}": float(value)
        for name, value in stats.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _finish(config, workdir, results, start, writer, list_len, log_fn) -> dict[str, float]:
    """GoalRank's test metrics under ``test/<metric>``, results.json, the printed table."""
    for key in [k for k in results if k.startswith("test/goalrank/")]:
        results["test/" + key.split("/", 2)[2]] = results[key]
    results["wall_time_s"] = time.time() - start
    final_step = int(results.get(f"stages/{GENERATOR_STAGE}/steps", config.train.num_steps))
    writer.write(final_step, {k: v for k, v in results.items() if isinstance(v, float)})
    writer.close()
    if jax.process_index() == 0:
        _write_json(os.path.join(workdir, "results.json"), results, indent=2, sort_keys=True)
    log_fn("\n" + evaluate_lib.results_table(results, "test", list_len))
    if "data/positive_rate" in results:
        log_fn(f"[data] logged positive rate of shown items: {results['data/positive_rate']:.1%}")
    log_fn(
        f"[done] results in {os.path.join(workdir, 'results.json')} "
        f"(total {format_duration(results['wall_time_s'])})"
    )
    return results


def _write_json(path: str, value, **kwargs) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, **kwargs)
    os.replace(path + ".tmp", path)


def reward_model_evaluator(kind: str, model_config, dataset) -> policies.Evaluator:
    """A list scorer of ``kind`` (``pointwise`` / ``list_aware``) sized for ``dataset``."""
    module = make_reward_model(
        kind,
        model_config,
        dataset.num_users,
        dataset.num_items,
        dataset.list_len,
        dataset.num_item_features,
    )
    return policies.Evaluator(module, kind)


def generator_policy(config, dataset) -> policies.GeneratorPolicy:
    """The GoalRank generator of ``config`` as a sampling / greedy / log-prob policy."""
    generator = make_generator(
        config.generator, dataset.num_users, dataset.num_items, dataset.num_item_features
    )
    return policies.GeneratorPolicy(
        generator,
        dataset.list_len,
        plackett_luce=config.gro.group_construction == "plackett_luce",
    )


def scorer_stage(
    name,
    streams,
    config_path,
    stage_config,
    evaluator,
    context,
    eval_fn=None,
    seed=None,
    note="",
    candidate_weight=0.0,
) -> stages.Stage:
    """A list scorer trained by BCE on logged feedback (``reward_model_train_step``; a
    list-aware one with ``candidate_weight`` x its candidates' BCE): the reward model, the
    simulator, and the comparison's DNN and PRM."""
    list_len = context.dataset.list_len
    return stages.Stage(
        name=name,
        streams=streams,
        config_path=config_path,
        stage_config=stage_config,
        init=lambda key: evaluator.init(key, context.init_batch, list_len),
        step=functools.partial(
            ts.reward_model_train_step,
            evaluator=evaluator,
            list_len=list_len,
            candidate_weight=candidate_weight,
        ),
        eval_fn=eval_fn,
        seed=seed,
        note=note,
    )


def reward_model_stage(config, evaluator, context, eval_fn=None) -> stages.Stage:
    """The reward model of ``config`` as a stage of ``stages.train`` / ``stages.restore``."""
    return scorer_stage(
        REWARD_STAGE,
        "reward_model",
        "reward_model.train",
        config.reward_model.train,
        evaluator,
        context,
        eval_fn=eval_fn,
        candidate_weight=config.reward_model.candidate_weight,
    )


def generator_stage(
    config, policy, evaluator, context, reward_params, eval_fn=None, name=GENERATOR_STAGE
) -> stages.Stage:
    """The GoalRank generator trained by GRO against the frozen ``reward_params``."""
    return stages.Stage(
        name=name,
        streams="generator",
        config_path="train",
        stage_config=config.train,
        init=lambda key: policy.module.init(key, context.init_batch),
        step=functools.partial(
            ts.goalrank_train_step, policy=policy, evaluator=evaluator, gro=config.gro
        ),
        frozen_params=reward_params,
        eval_fn=eval_fn,
    )


def stage_records(context: stages.StageContext, trained: list[stages.Stage]) -> dict:
    """``stages/<name>/{steps,epochs,stopped_early,selected_step,train_seconds}`` of finished
    stages, each also logged as one line."""
    out = {}
    for stage in trained:
        record = stages.record(context, stage)
        selected = record.get("selected_step")
        context.log_fn(
            f"[{stage.name}] trained {record['steps']} of {record['num_steps']} steps "
            f"({record['epochs']:.2f} epochs)"
            + (", stopped early" if record["stopped_early"] else "")
            + (f", selected step {selected}" if selected is not None else "")
        )
        prefix = f"stages/{stage.name}/"
        out[prefix + "steps"] = float(record["steps"])
        out[prefix + "epochs"] = float(record["epochs"])
        out[prefix + "stopped_early"] = float(record["stopped_early"])
        if selected is not None:
            out[prefix + "selected_step"] = float(selected)
        if record.get("train_seconds") is not None:
            out[prefix + "train_seconds"] = float(record["train_seconds"])
    return out


def simulator_stage(config, simulator, context, eval_fn=None) -> stages.Stage:
    """The held-out list-aware simulator of real data (own seed ``simulator.seed``)."""
    return scorer_stage(
        SIMULATOR_STAGE,
        "simulator",
        "simulator.train",
        config.simulator.train,
        simulator,
        context,
        eval_fn=eval_fn,
        seed=config.simulator.seed,
        note=" (list-aware, held out)",
    )


def train_simulator(config: configs.ExperimentConfig, context: stages.StageContext):
    """Trains (or restores) the held-out list-aware simulator; returns (evaluator, params,
    validation AUC)."""
    sim_config = config.simulator
    simulator = reward_model_evaluator("list_aware", sim_config.model, context.dataset)
    click_auc = evaluate_lib.LoggedClickAUC(simulator, context.dataset.list_len)

    def validation_auc(state):
        batches = pipeline.eval_batches(
            context.dataset.sources["validation"], config.eval.batch_size, config.eval.max_examples
        )
        # Replicated parameters: the AUC's jit has no shardings and fetches its outputs.
        params = sharding.put_replicated(state.params, context.mesh)
        return {"validation/simulator/AUC": click_auc(params, batches)}

    state = stages.train(context, simulator_stage(config, simulator, context, validation_auc))
    auc = validation_auc(state)["validation/simulator/AUC"]
    context.log_fn(f"[{SIMULATOR_STAGE}] validation AUC of logged clicks {auc:.4f}")
    return simulator, state.params, auc


def _select(results: dict[str, float], policy_name: str) -> dict[str, float]:
    return {k: v for k, v in results.items() if f"/{policy_name}/" in k}

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

from goalrank_jax import configs, policies, sharding
from goalrank_jax import evaluate as evaluate_lib
from goalrank_jax import train_step as ts
from goalrank_jax.data import pipeline
from goalrank_jax.metric_writer import MetricWriter
from goalrank_jax.models import make_generator, make_reward_model
from goalrank_jax.train import format_duration, train_stage

REWARD_STAGE = "reward_model"
SIMULATOR_STAGE = "simulator"
GENERATOR_STAGE = "generator"


def _init_batch(dataset: pipeline.Dataset, size: int) -> dict:
    examples = dataset.sources["train"].__getitems__(list(range(size)))
    return pipeline.to_model_batch(
        {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}
    )


def _param_count(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def prepare_data(
    config: configs.ExperimentConfig, workdir: str, log_fn: Callable[[str], None] = print
) -> pipeline.Dataset:
    """Prepares (once) and opens the dataset of ``config``; logs its statistics."""
    data_dir = config.data.data_dir or os.path.join(workdir, "tfds")
    log_fn(f"[data] preparing {config.data.dataset!r} under {data_dir}")
    dataset = pipeline.load_dataset(config.data, data_dir, log_fn)
    log_fn("[data] statistics: " + json.dumps(dataset.stats))
    return dataset


def train_and_evaluate(
    config: configs.ExperimentConfig, workdir: str, log_fn: Callable[[str], None] = print
) -> dict[str, float]:
    """Runs every stage and returns the final results (also written to results.json)."""
    start = time.time()
    config.validate(jax.device_count())  # before anything is written
    mesh = sharding.mesh_from_config(config.mesh)
    min_size = config.mesh.fsdp_min_size
    log_fn(f"[mesh] {dict(mesh.shape)} over {jax.process_count()} process(es)")
    os.makedirs(workdir, exist_ok=True)
    if sharding.process_is_chief():
        config_path = os.path.join(workdir, "config.json")
        with open(config_path + ".tmp", "w") as f:
            json.dump(dataclasses.asdict(config), f, indent=2)
        os.replace(config_path + ".tmp", config_path)
    writer = MetricWriter(workdir)
    dataset = prepare_data(config, workdir, log_fn)
    list_len = dataset.list_len
    base_key = jax.random.key(config.seed, impl=config.prng_impl)
    init_batch = _init_batch(dataset, 2)
    repl = sharding.replicated(mesh)
    batch_shard = sharding.batch_sharding(mesh)

    with jax.set_mesh(mesh):
        evaluator, rm_state, rm_step = _evaluator_stage(
            config.reward_model.kind,
            config.reward_model.model,
            config.reward_model.train.optim,
            dataset,
            init_batch,
            jax.random.fold_in(base_key, 1),
            mesh,
            fsdp_min_size=min_size,
        )
        log_fn(f"[{REWARD_STAGE}] {_param_count(rm_state.params):,} parameters")
        simulator = simulator_params = simulator_auc = None
        if not dataset.has_true_model:
            simulator, simulator_params, simulator_auc = _train_simulator(
                config, dataset, init_batch, workdir, mesh, writer, log_fn
            )
        generator = make_generator(config.generator, dataset.num_users, dataset.num_items)
        policy = policies.GeneratorPolicy(
            generator, list_len, plackett_luce=config.gro.group_construction == "plackett_luce"
        )
        evaluation = evaluate_lib.Evaluation(
            policy,
            evaluator,
            list_len,
            dataset.has_true_model,
            config.data.env.true_model,
            mesh,
            simulator,
        )

        def run_eval(split, gen_params, rm_params):
            batches = pipeline.eval_batches(
                dataset.sources[split], config.eval.batch_size, config.eval.max_examples
            )
            # The evaluation is compiled for replicated parameters: gather FSDP-split ones.
            gen_params, rm_params, sim_params = sharding.put_replicated(
                (gen_params, rm_params, simulator_params), mesh
            )
            results = evaluation(gen_params, rm_params, batches, sim_params)
            return {f"{split}/{k}": v for k, v in results.items()}

        rm_state = train_stage(
            name=REWARD_STAGE,
            config_path="reward_model.train",
            workdir=workdir,
            state=rm_state,
            step_fn=rm_step,
            dataset=pipeline.train_dataset(
                dataset.sources["train"], config.reward_model.train.batch_size, config.seed + 1
            ),
            stage_config=config.reward_model.train,
            base_key=jax.random.fold_in(base_key, 2),
            mesh=mesh,
            writer=writer,
            log_fn=log_fn,
            eval_fn=lambda s: _select(
                run_eval("validation", None, s.params), "reward_model_greedy"
            ),
        )
        frozen_rm = rm_state.params

        gen_params = generator.init(jax.random.fold_in(base_key, 3), init_batch)
        log_fn(f"[{GENERATOR_STAGE}] {_param_count(gen_params):,} parameters")
        optimizer = ts.make_optimizer(config.train.optim)
        gen_state = ts.create_state(gen_params, optimizer, frozen_rm)
        gen_sharding = sharding.state_sharding(gen_state, mesh, min_size)
        gen_state = sharding.put_tree(gen_state, gen_sharding)
        gen_step = ts.compile_step(
            functools.partial(
                ts.goalrank_train_step,
                policy=policy,
                evaluator=evaluator,
                optimizer=optimizer,
                gro=config.gro,
            ),
            gen_sharding,
            batch_shard,
            repl,
        )
        gen_state = train_stage(
            name=GENERATOR_STAGE,
            config_path="train",
            workdir=workdir,
            state=gen_state,
            step_fn=gen_step,
            dataset=pipeline.train_dataset(
                dataset.sources["train"], config.train.batch_size, config.seed + 2
            ),
            stage_config=config.train,
            base_key=jax.random.fold_in(base_key, 4),
            mesh=mesh,
            writer=writer,
            log_fn=log_fn,
            eval_fn=lambda s: _select(
                run_eval("validation", s.params, s.reward_params), "goalrank"
            ),
        )

        log_fn("[eval] evaluating every policy on the validation and test splits")
        results = run_eval("validation", gen_state.params, gen_state.reward_params)
        results.update(run_eval("test", gen_state.params, gen_state.reward_params))
        if simulator_auc is not None:
            results["validation/simulator/AUC"] = simulator_auc
    for key in [k for k in results if k.startswith("test/goalrank/")]:
        results["test/" + key.split("/", 2)[2]] = results[key]
    results["wall_time_s"] = time.time() - start
    writer.write(config.train.num_steps, {k: v for k, v in results.items() if isinstance(v, float)})
    writer.close()
    if jax.process_index() == 0:
        tmp = os.path.join(workdir, "results.json.tmp")
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(workdir, "results.json"))
    log_fn("\n" + evaluate_lib.results_table(results, "test", list_len))
    log_fn(
        f"[done] results in {os.path.join(workdir, 'results.json')} "
        f"(total {format_duration(results['wall_time_s'])})"
    )
    return results


def _evaluator_stage(
    kind,
    model_config,
    optim_config,
    dataset,
    init_batch,
    key,
    mesh,
    fsdp_min_size: int = sharding.FSDP_MIN_SIZE,
):
    """A list scorer trained by BCE on logged feedback (the reward model or the simulator):
    returns (evaluator, freshly initialised state placed by ``sharding.state_sharding``,
    compiled train step)."""
    list_len = dataset.list_len
    module = make_reward_model(kind, model_config, dataset.num_users, dataset.num_items, list_len)
    evaluator = policies.Evaluator(module, kind)
    optimizer = ts.make_optimizer(optim_config)
    params = evaluator.init(key, init_batch, list_len)
    state = ts.create_state(params, optimizer)
    state_sharding = sharding.state_sharding(state, mesh, fsdp_min_size)
    state = sharding.put_tree(state, state_sharding)
    step = ts.compile_step(
        functools.partial(
            ts.reward_model_train_step, evaluator=evaluator, optimizer=optimizer, list_len=list_len
        ),
        state_sharding,
        sharding.batch_sharding(mesh),
        sharding.replicated(mesh),
    )
    return evaluator, state, step


def _train_simulator(config, dataset, init_batch, workdir, mesh, writer, log_fn):
    """Trains (or restores) the held-out list-aware simulator; returns (evaluator, params,
    validation AUC)."""
    sim_config = config.simulator
    sim_key = jax.random.key(sim_config.seed, impl=config.prng_impl)
    simulator, state, step = _evaluator_stage(
        "list_aware",
        sim_config.model,
        sim_config.train.optim,
        dataset,
        init_batch,
        jax.random.fold_in(sim_key, 1),
        mesh,
        fsdp_min_size=config.mesh.fsdp_min_size,
    )
    log_fn(f"[{SIMULATOR_STAGE}] {_param_count(state.params):,} parameters (list-aware, held out)")
    click_auc = evaluate_lib.LoggedClickAUC(simulator, dataset.list_len)

    def validation_auc(state):
        batches = pipeline.eval_batches(
            dataset.sources["validation"], config.eval.batch_size, config.eval.max_examples
        )
        # Replicated parameters: the AUC's jit has no shardings and fetches its outputs.
        params = sharding.put_replicated(state.params, mesh)
        return {"validation/simulator/AUC": click_auc(params, batches)}

    state = train_stage(
        name=SIMULATOR_STAGE,
        config_path="simulator.train",
        workdir=workdir,
        state=state,
        step_fn=step,
        dataset=pipeline.train_dataset(
            dataset.sources["train"], sim_config.train.batch_size, sim_config.seed
        ),
        stage_config=sim_config.train,
        base_key=jax.random.fold_in(sim_key, 2),
        mesh=mesh,
        writer=writer,
        log_fn=log_fn,
        eval_fn=validation_auc,
    )
    auc = validation_auc(state)["validation/simulator/AUC"]
    log_fn(f"[{SIMULATOR_STAGE}] validation AUC of logged clicks {auc:.4f}")
    return simulator, state.params, auc


def _select(results: dict[str, float], policy_name: str) -> dict[str, float]:
    return {k: v for k, v in results.items() if f"/{policy_name}/" in k}

"""One builder for every trained stage: model + step function + stage config in, state out.

Every model of the pipeline and of the comparison (reward model, simulator, generator, DNN, PRM,
NAR, ...) is trained the same way: initialise the parameters from the stage's init stream, wrap
them in a ``TrainState`` (with frozen reward-model parameters where the step needs them), place
the state on the mesh of ``config.mesh`` by the one FSDP rule of ``sharding.state_sharding``,
compile the step with the state donated, and run (or resume, or restore) it with
``train.train_stage``. :func:`train` does all of that from a :class:`Stage` description and a
:class:`StageContext` shared by the stages of one run.

PRNG streams. A run has one base key, ``jax.random.key(seed)``. Each stage draws three streams
from it, named in :data:`STREAMS`: its parameter initialisation (``fold_in(base, init)``), the
shuffle seed of its training data (``seed + data``) and the base key of its steps
(``fold_in(base, steps)``, then ``fold_in(., step)`` per step inside the step function). The
numbers are part of what makes a run reproducible: changing one changes that stage's results.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from goalrank_jax import selection, sharding
from goalrank_jax import train_step as ts
from goalrank_jax.data import pipeline
from goalrank_jax.metric_writer import MetricWriter
from goalrank_jax.train import train_stage


@dataclasses.dataclass(frozen=True)
class Streams:
    """Offsets of one stage's PRNG streams in its run's base key (see the module docstring)."""

    init: int
    data: int
    steps: int


# Every stage's streams, in one table. ``main`` stages first; the simulator draws from its own
# base key (``simulator.seed``). The comparison's GoalRank runs draw the ``generator`` streams
# (the same initial parameters, batches and keys as ``main``'s generator of the same seed); its
# reward model and baselines have streams of their own.
STREAMS: dict[str, Streams] = {
    "reward_model": Streams(init=1, data=1, steps=2),
    "generator": Streams(init=3, data=2, steps=4),
    "simulator": Streams(init=1, data=0, steps=2),
    "compare/reward_model": Streams(init=1, data=1, steps=101),
    "compare/dnn": Streams(init=11, data=11, steps=111),
    "compare/prm": Streams(init=12, data=12, steps=112),
    "compare/nar": Streams(init=13, data=13, steps=113),
}
# The comparison's evaluation of a seed (G-E / MG-E proposals, random lists) draws its keys
# from fold_in(key(seed), COMPARISON_EVAL_STREAM).
COMPARISON_EVAL_STREAM = 77
# MG-E's evaluation on the validation split, which chooses its k, draws from
# fold_in(key(seed), COMPARISON_MGE_SELECTION_STREAM).
COMPARISON_MGE_SELECTION_STREAM = 78


def init_batch(dataset: pipeline.Dataset, size: int = 2) -> dict:
    """The first ``size`` training requests as a model batch, to initialise parameters."""
    examples = dataset.sources["train"].__getitems__(list(range(size)))
    return pipeline.to_model_batch(
        {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}
    )


def param_count(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


@dataclasses.dataclass(frozen=True)
class StageContext:
    """What the stages of one run share.

    Attributes:
      workdir: stages write ``<workdir>/<name>/checkpoints`` (and ``best`` under selection).
      dataset: the opened dataset; stages train on its ``train`` split.
      init_batch: a small model batch for parameter initialisation (:func:`init_batch`).
      mesh: the run's ``('data', 'fsdp')`` mesh (``sharding.mesh_from_config(config.mesh)``).
      fsdp_min_size: arrays with fewer elements stay replicated (``mesh.fsdp_min_size``).
      writer: metric writer of the run.
      seed, prng_impl: the run's base key is ``jax.random.key(seed, impl=prng_impl)``.
      log_fn: progress output.
    """

    workdir: str
    dataset: pipeline.Dataset
    init_batch: dict
    mesh: jax.sharding.Mesh
    fsdp_min_size: int
    writer: MetricWriter
    seed: int
    prng_impl: str
    log_fn: Callable[[str], None] = print

    def base_key(self, seed: int | None = None) -> jax.Array:
        return jax.random.key(self.seed if seed is None else seed, impl=self.prng_impl)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One trained model.

    Attributes:
      name: checkpoint directory and metric prefix.
      streams: key of :data:`STREAMS`.
      config_path: where ``stage_config`` sits in the experiment config (error messages).
      stage_config: ``configs.StageConfig`` (optimizer, batch, steps, selection, ...).
      init: ``key -> params``.
      step: ``(state, batch, key, *, optimizer) -> (state, metrics)``, everything but the
        optimizer bound (``functools.partial``); compiled by :func:`train`.
      frozen_params: parameters carried frozen in the state (``TrainState.reward_params``); a
        copy is taken, since the compiled step donates its state.
      eval_fn: optional ``state -> metrics`` on validation (progress and model selection).
      seed: the seed of the stage's base key and data order; ``None`` = the run's seed.
      note: appended to the stage's parameter-count line.
    """

    name: str
    streams: str
    config_path: str
    stage_config: Any
    init: Callable[[jax.Array], Any]
    step: Callable
    frozen_params: Any = None
    eval_fn: Callable[[Any], dict[str, float]] | None = None
    seed: int | None = None
    note: str = ""


def resolve_budget(stage_config, train_requests: int):
    """``stage_config`` with budgets given in epochs turned into steps: ``num_steps`` =
    ceil(num_epochs x train_requests / batch_size) when ``num_epochs`` > 0, ``eval_every`` =
    round(eval_every_epochs x train_requests / batch_size) (at least 1) when
    ``eval_every_epochs`` > 0; unchanged otherwise."""
    per_epoch = train_requests / stage_config.batch_size
    changes = {}
    if stage_config.num_epochs > 0:
        changes["num_steps"] = max(1, math.ceil(stage_config.num_epochs * per_epoch))
    if stage_config.eval_every_epochs > 0:
        changes["eval_every"] = max(1, round(stage_config.eval_every_epochs * per_epoch))
    return dataclasses.replace(stage_config, **changes) if changes else stage_config


def _budgeted(context: StageContext, stage: Stage) -> Stage:
    train_requests = len(context.dataset.sources["train"])
    return dataclasses.replace(
        stage, stage_config=resolve_budget(stage.stage_config, train_requests)
    )


def build_state(context: StageContext, stage: Stage):
    """Fresh, placed state and compiled step of ``stage``: ``(state, step_fn)``."""
    streams = STREAMS[stage.streams]
    base_key = context.base_key(stage.seed)
    optimizer = ts.make_optimizer(stage.stage_config.optim)
    params = stage.init(jax.random.fold_in(base_key, streams.init))
    frozen = stage.frozen_params
    if frozen is not None:
        frozen = jax.tree_util.tree_map(jax.numpy.copy, frozen)
    state = ts.create_state(params, optimizer, frozen)
    state_sharding = sharding.state_sharding(state, context.mesh, context.fsdp_min_size)
    state = sharding.put_tree(state, state_sharding)
    step_fn = ts.compile_step(
        functools.partial(stage.step, optimizer=optimizer),
        state_sharding,
        sharding.batch_sharding(context.mesh),
        sharding.replicated(context.mesh),
    )
    return state, step_fn


def train(context: StageContext, stage: Stage):
    """Trains (or resumes, or restores when finished) ``stage`` and returns its final state:
    the state selected on validation where ``stage_config.select_metric`` is set."""
    stage = _budgeted(context, stage)
    streams = STREAMS[stage.streams]
    seed = context.seed if stage.seed is None else stage.seed
    state, step_fn = build_state(context, stage)
    context.log_fn(f"[{stage.name}] {param_count(state.params):,} parameters{stage.note}")
    return train_stage(
        name=stage.name,
        config_path=stage.config_path,
        workdir=context.workdir,
        state=state,
        step_fn=step_fn,
        dataset=pipeline.train_dataset(
            context.dataset.sources["train"], stage.stage_config.batch_size, seed + streams.data
        ),
        stage_config=stage.stage_config,
        base_key=jax.random.fold_in(context.base_key(stage.seed), streams.steps),
        mesh=context.mesh,
        writer=context.writer,
        log_fn=context.log_fn,
        eval_fn=stage.eval_fn,
    )


def restore(context: StageContext, stage: Stage):
    """The state :func:`train` returned for a finished ``stage``, without training (for
    analysis of a finished run: ``goalrank_jax.diagnose``)."""
    stage = _budgeted(context, stage)
    state, _ = build_state(context, stage)
    return selection.restore_stage(
        name=stage.name,
        workdir=context.workdir,
        state=state,
        stage_config=stage.stage_config,
        log_fn=context.log_fn,
    )


def record(context: StageContext, stage: Stage) -> dict:
    """How far ``stage`` trained (``selection.stage_record``) with ``epochs`` = steps x
    batch_size / train requests and the step budget ``num_steps``."""
    stage = _budgeted(context, stage)
    out = selection.stage_record(stage.name, context.workdir, stage.stage_config)
    train_requests = len(context.dataset.sources["train"])
    out["epochs"] = out["steps"] * stage.stage_config.batch_size / train_requests
    out["num_steps"] = stage.stage_config.num_steps
    return out


def copy_stage(source: str, target: str, notes: dict[str, Any] | None = None) -> bool:
    """Copies a stage directory (``<workdir>/<name>``) to ``target`` unless it exists, with
    ``notes`` (file name -> JSON value) written into the copy; returns whether it copied. Copy
    then rename: an interrupted copy never looks like a checkpoint."""
    if os.path.exists(target):
        return False
    partial = target + ".copying"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    for name, value in (notes or {}).items():
        with open(os.path.join(partial, name), "w") as f:
            json.dump(value, f)
    os.replace(partial, target)
    return True

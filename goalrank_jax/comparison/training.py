"""Training of every model of one comparison seed, each a resumable stage of ``train_stage``.

Layout under the seed's directory: ``<name>/checkpoints`` per stage (reward_model, dnn, prm,
nar, supervised_ar, goalrank, goalrank_K<k>, ...), ``metrics.jsonl`` and TensorBoard events.
A finished stage is restored and skipped, an interrupted one resumes from its latest checkpoint.
Every GoalRank run of a seed starts from the same initial parameters and sees the same batches,
so the ablations differ only in what they ablate.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax

import goalrank_jax.models as models_lib
from goalrank_jax import configs, policies, sharding
from goalrank_jax import train_step as ts
from goalrank_jax.data import pipeline
from goalrank_jax.metric_writer import MetricWriter
from goalrank_jax.models import baselines, make_generator, make_reward_model
from goalrank_jax.models import reward_model as rm
from goalrank_jax.models.layers import Backbone
from goalrank_jax.train import train_stage

# Stage seeds are folded into the seed's base key with these offsets (distinct streams).
_KEY_OFFSETS = {"reward_model": 1, "dnn": 11, "prm": 12, "nar": 13, "generator": 3}


@dataclasses.dataclass(frozen=True)
class GoalRankRun:
    """One GoalRank training run: its stage name and GRO settings."""

    name: str
    gro: configs.GROConfig


def goalrank_runs(experiment: configs.ExperimentConfig, comparison) -> list[GoalRankRun]:
    """The GoalRank runs a comparison needs, default first; no two with the same settings.

    ``goalrank`` uses the experiment's GRO settings; the ablations change one thing each:
    the group size K, the loss form (``prob``), pure GRO (w_G = 0, w_R = 1), the group
    construction (Plackett-Luce, mixed). ``supervised_ar`` is the same generator with w_R = 0.
    """
    gro = experiment.gro
    runs = []
    if "goalrank" in comparison.methods or comparison.ablations:
        runs.append(GoalRankRun("goalrank", gro))
    if "supervised_ar" in comparison.methods or "mge" in comparison.methods:
        # w_R = 0 makes the sampled group irrelevant to the update; K = 2 keeps it cheap.
        runs.append(
            GoalRankRun("supervised_ar", dataclasses.replace(gro, reward_weight=0.0, group_size=2))
        )
    if "group_size" in comparison.ablations:
        for k in comparison.group_sizes:
            runs.append(GoalRankRun(f"goalrank_K{k}", dataclasses.replace(gro, group_size=k)))
    if "loss_form" in comparison.ablations:
        other = "prob" if gro.loss_form == "log_prob" else "log_prob"
        runs.append(GoalRankRun(f"goalrank_{other}", dataclasses.replace(gro, loss_form=other)))
        runs.append(
            GoalRankRun(
                "goalrank_wG0", dataclasses.replace(gro, supervised_weight=0.0, reward_weight=1.0)
            )
        )
    if "group_construction" in comparison.ablations:
        for construction in configs.GROUP_CONSTRUCTIONS:
            if construction != gro.group_construction:
                gro_c = dataclasses.replace(gro, group_construction=construction)
                runs.append(GoalRankRun(f"goalrank_{construction}", gro_c))
    for run in runs:
        try:
            run.gro.validate()
        except ValueError as err:
            raise ValueError(f"GoalRank run {run.name!r} of the comparison: {err}") from None
    unique, seen = [], {}
    for run in runs:
        if run.gro in seen and run.name != "supervised_ar":
            continue  # e.g. goalrank_K8 when the default K is 8: the same run as goalrank
        seen.setdefault(run.gro, run.name)
        unique.append(run)
    return unique


def same_run_aliases(experiment, comparison) -> dict[str, str]:
    """Ablation names that are the default run itself (e.g. goalrank_K8 -> goalrank)."""
    aliases = {}
    if "group_size" in comparison.ablations:
        for k in comparison.group_sizes:
            if k == experiment.gro.group_size:
                aliases[f"goalrank_K{k}"] = "goalrank"
    aliases[f"goalrank_{experiment.gro.group_construction}"] = "goalrank"
    return aliases


@dataclasses.dataclass
class SeedModels:
    """The trained models of one seed. ``scorers``: name -> (Evaluator, params) for dnn / prm;
    ``generators``: run name -> (GeneratorPolicy, params); ``nar``: (module, params)."""

    evaluator: policies.Evaluator
    reward_params: Any
    scorers: dict[str, tuple[policies.Evaluator, Any]]
    nar: tuple[Any, Any] | None
    generators: dict[str, tuple[policies.GeneratorPolicy, Any]]
    train_seconds: dict[str, float]


def needed_baselines(comparison) -> set[str]:
    """Which of dnn / prm / nar the selected methods need."""
    methods = set(comparison.methods)
    needed = set()
    if methods & {"dnn", "pier_ge", "mge"}:
        needed.add("dnn")
    if methods & {"prm", "mge"}:
        needed.add("prm")
    if methods & {"nar4rec_ge", "mge"}:
        needed.add("nar")
    return needed


def _backbone_kwargs(model_config, num_users, num_items) -> dict:
    return dict(
        num_users=num_users,
        num_items=num_items,
        causal=model_config.causal,
        **models_lib._kwargs(model_config),
    )


def nar_train_step(state, batch, base_key, *, module, optimizer, list_len: int):
    """One update of the NAR generator on the logged lists (likelihood / unlikelihood)."""
    dropout_key = jax.random.fold_in(base_key, state.step)

    def loss_fn(params):
        logits = module.apply(params, batch, False, rngs={"dropout": dropout_key})
        logged = policies.logged_list(batch, list_len)
        labels = rm.gather_candidates(batch["cand_labels"], logged)
        return baselines.nar_logged_list_loss(logits, logged, labels, batch["cand_mask"])

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state, update_metrics = ts.apply_gradients(state, grads, optimizer)
    return state, {"loss": loss, **update_metrics}


class SeedTrainer:
    """Trains (or restores) the models of one seed; each method is one stage."""

    def __init__(self, experiment, comparison, dataset, init_batch, seed_dir, mesh, log_fn):
        self.experiment = experiment
        self.comparison = comparison
        self.dataset = dataset
        self.init_batch = init_batch
        self.seed_dir = seed_dir
        self.mesh = mesh
        self.log_fn = log_fn
        self.writer = MetricWriter(seed_dir)
        self.base_key = jax.random.key(experiment.seed, impl=experiment.prng_impl)
        self.repl = sharding.replicated(mesh)
        self.batch_shard = sharding.batch_sharding(mesh)
        self.seconds: dict[str, float] = {}

    def close(self):
        self.writer.close()

    def _stage(self, name, state, step_fn, stage_config, data_seed, key_offset, config_path):
        start = time.time()
        state = train_stage(
            name=name,
            config_path=config_path,
            workdir=self.seed_dir,
            state=state,
            step_fn=step_fn,
            dataset=pipeline.train_dataset(
                self.dataset.sources["train"], stage_config.batch_size, data_seed
            ),
            stage_config=stage_config,
            base_key=jax.random.fold_in(self.base_key, key_offset),
            mesh=self.mesh,
            writer=self.writer,
            log_fn=self.log_fn,
        )
        self.seconds[name] = time.time() - start
        return state

    def _scorer(self, name, evaluator, stage_config, key_offset: int, config_path: str):
        """A list scorer trained by BCE on logged feedback (see ``reward_model_train_step``)
        -> (evaluator, params). ``key_offset`` separates its init, data and dropout streams."""
        optimizer = ts.make_optimizer(stage_config.optim)
        key = jax.random.fold_in(self.base_key, key_offset)
        params = evaluator.init(key, self.init_batch, self.dataset.list_len)
        state = sharding.put_replicated(ts.create_state(params, optimizer), self.mesh)
        step = ts.compile_step(
            functools.partial(
                ts.reward_model_train_step,
                evaluator=evaluator,
                optimizer=optimizer,
                list_len=self.dataset.list_len,
            ),
            self.repl,
            self.batch_shard,
            self.repl,
        )
        state = self._stage(
            name,
            state,
            step,
            stage_config,
            self.experiment.seed + key_offset,
            key_offset + 100,
            config_path,
        )
        return evaluator, state.params

    def reward_model(self):
        """The frozen evaluator shared by GoalRank and every G-E / MG-E method of the seed."""
        exp = self.experiment
        module = make_reward_model(
            exp.reward_model.kind,
            exp.reward_model.model,
            self.dataset.num_users,
            self.dataset.num_items,
            self.dataset.list_len,
        )
        evaluator = policies.Evaluator(module, exp.reward_model.kind)
        return self._scorer(
            "reward_model", evaluator, exp.reward_model.train, 1, "reward_model.train"
        )

    def baseline_module(self, name: str) -> Backbone:
        kwargs = _backbone_kwargs(
            self.experiment.generator, self.dataset.num_users, self.dataset.num_items
        )
        if name == "dnn":
            return baselines.DNNScorer(**kwargs)
        if name == "prm":
            return make_reward_model("pointwise", self.experiment.generator, **_ids(self.dataset))
        if name == "nar":
            return baselines.NARGenerator(max_list_len=self.dataset.list_len, **kwargs)
        raise ValueError(f"Unknown baseline {name!r}")

    def nar(self):
        stage_config = self.comparison.baseline_train
        module = self.baseline_module("nar")
        optimizer = ts.make_optimizer(stage_config.optim)
        params = module.init(jax.random.fold_in(self.base_key, 13), self.init_batch)
        state = sharding.put_replicated(ts.create_state(params, optimizer), self.mesh)
        step = ts.compile_step(
            functools.partial(
                nar_train_step, module=module, optimizer=optimizer, list_len=self.dataset.list_len
            ),
            self.repl,
            self.batch_shard,
            self.repl,
        )
        state = self._stage(
            "nar",
            state,
            step,
            stage_config,
            self.experiment.seed + 13,
            113,
            "compare.baseline_train",
        )
        return module, state.params

    def generator(self, run: GoalRankRun, evaluator, reward_params):
        exp = self.experiment
        module = make_generator(exp.generator, self.dataset.num_users, self.dataset.num_items)
        policy = policies.GeneratorPolicy(
            module,
            self.dataset.list_len,
            plackett_luce=run.gro.group_construction == "plackett_luce",
        )
        # The same initial parameters, batches and key stream for every GoalRank run of a seed.
        params = module.init(jax.random.fold_in(self.base_key, 3), self.init_batch)
        optimizer = ts.make_optimizer(exp.train.optim)
        # A copy of the frozen evaluator per run: the train step donates its whole state.
        frozen = jax.tree_util.tree_map(jax.numpy.copy, reward_params)
        state = sharding.put_replicated(ts.create_state(params, optimizer, frozen), self.mesh)
        step = ts.compile_step(
            functools.partial(
                ts.goalrank_train_step,
                policy=policy,
                evaluator=evaluator,
                optimizer=optimizer,
                gro=run.gro,
            ),
            self.repl,
            self.batch_shard,
            self.repl,
        )
        state = self._stage(run.name, state, step, exp.train, exp.seed + 2, 4, "train")
        return policy, state.params

    def train_all(self, shared_reward_model=None) -> SeedModels:
        """Every model of the seed; ``shared_reward_model`` = (evaluator, params) trained once
        for all seeds, else the seed trains its own."""
        if shared_reward_model is None:
            evaluator, reward_params = self.reward_model()
        else:
            evaluator, reward_params = shared_reward_model
        needed = needed_baselines(self.comparison)
        scorers = {}
        for name in ("dnn", "prm"):
            if name in needed:
                offset = _KEY_OFFSETS[name]
                scorers[name] = self._scorer(
                    name,
                    policies.Evaluator(self.baseline_module(name), "pointwise"),
                    self.comparison.baseline_train,
                    offset,
                    "compare.baseline_train",
                )
        nar = self.nar() if "nar" in needed else None
        generators = {}
        for run in goalrank_runs(self.experiment, self.comparison):
            generators[run.name] = self.generator(run, evaluator, reward_params)
        return SeedModels(evaluator, reward_params, scorers, nar, generators, dict(self.seconds))


def _ids(dataset) -> dict:
    return dict(num_users=dataset.num_users, num_items=dataset.num_items)

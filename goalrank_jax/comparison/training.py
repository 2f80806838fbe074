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
from goalrank_jax import configs, policies, sampling, sharding, stages
from goalrank_jax import evaluate as evaluate_lib
from goalrank_jax import run as run_lib
from goalrank_jax import train_step as ts
from goalrank_jax.comparison import config as comparison_config
from goalrank_jax.comparison import evaluation
from goalrank_jax.metric_writer import MetricWriter
from goalrank_jax.models import baselines, make_reward_model
from goalrank_jax.models import reward_model as rm
from goalrank_jax.models.layers import Backbone


@dataclasses.dataclass(frozen=True)
class GoalRankRun:
    """One GoalRank training run: its stage name and GRO settings; ``variant`` / ``num_epochs``
    replace the experiment's generator variant / budget in epochs when set."""

    name: str
    gro: configs.GROConfig
    variant: str = ""
    num_epochs: int = 0


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
        # w_R = 0: no reward enters the update. The group's lists matter only to the
        # "group_step_bce" form (its prefixes); two on-policy lists keep that cheap.
        supervised = dataclasses.replace(
            gro, reward_weight=0.0, group_size=2, group_construction="on_policy"
        )
        runs.append(GoalRankRun("supervised_ar", supervised))
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
    if "goalrank_prefix" in comparison.methods:
        epochs = comparison.prefix_num_epochs
        runs.append(GoalRankRun("goalrank_prefix", gro, variant="prefix", num_epochs=epochs))
    for run in runs:
        try:
            run.gro.validate()
        except ValueError as err:
            raise ValueError(f"GoalRank run {run.name!r} of the comparison: {err}") from None
    unique, seen = [], {}
    for run in runs:
        setting = (run.gro, run.variant, run.num_epochs)
        if setting in seen and run.name != "supervised_ar":
            continue  # e.g. goalrank_K8 when the default K is 8: the same run as goalrank
        seen.setdefault(setting, run.name)
        unique.append(run)
    return unique


def run_experiment(experiment: configs.ExperimentConfig, run: GoalRankRun):
    """``experiment`` as GoalRank run ``run`` trains: its GRO settings and, where it sets them,
    its generator variant and budget in epochs."""
    exp = dataclasses.replace(experiment, gro=run.gro)
    if run.variant:
        exp = dataclasses.replace(
            exp, generator=dataclasses.replace(exp.generator, variant=run.variant)
        )
    if run.num_epochs:
        exp = dataclasses.replace(
            exp, train=dataclasses.replace(exp.train, num_epochs=run.num_epochs)
        )
    return exp


def same_run_aliases(experiment, comparison) -> dict[str, str]:
    """Ablation names that are the default run itself (e.g. goalrank_K8 -> goalrank)."""
    aliases = {}
    if "group_size" in comparison.ablations:
        for k in comparison.group_sizes:
            if k == experiment.gro.group_size:
                aliases[f"goalrank_K{k}"] = "goalrank"
    if "group_construction" in comparison.ablations:
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
    # name -> how far the stage trained (stages.record: steps, epochs, stopped_early, ...).
    train_records: dict[str, dict] = dataclasses.field(default_factory=dict)


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
    """Trains (or restores) the models of one seed; each method is one stage of
    ``stages.train`` on the mesh of ``experiment.mesh``."""

    def __init__(self, experiment, comparison, dataset, seed_dir, mesh, log_fn):
        self.experiment = experiment
        self.comparison = comparison
        self.dataset = dataset
        self.mesh = mesh
        self.writer = MetricWriter(seed_dir)
        self.context = run_lib.stage_context(
            experiment, dataset, seed_dir, mesh, self.writer, log_fn
        )
        self.seconds: dict[str, float] = {}
        self.records: dict[str, dict] = {}
        # (evaluator, params) once train_all has it: compare.select_metric = rm_reward reads it.
        self.frozen_evaluator = None

    def close(self):
        self.writer.close()

    def _train(self, stage: stages.Stage):
        """The stage's trained parameters (the state selected on validation under
        ``compare.select_metric``), replicated for the evaluation."""
        start = time.time()
        state = stages.train(self.context, stage)
        self.records[stage.name] = stages.record(self.context, stage)
        # A stage restored (or resumed) here trained, in part or whole, in an earlier
        # invocation: its checkpoint keeps the seconds it trained in all of them.
        trained = self.records[stage.name].get("train_seconds") or 0.0
        self.seconds[stage.name] = max(time.time() - start, trained)
        return sharding.put_replicated(state.params, self.mesh)

    def selected(self, stage: stages.Stage, lists_fn) -> stages.Stage:
        """``stage`` selected on ``compare.select_metric`` of its lists on validation:
        ``lists_fn(params, batch) -> [B, L]``; unchanged without a select metric."""
        metric = self.comparison.select_metric
        if not metric:
            return stage
        key = f"validation/{stage.name}/{metric}"
        reward_model = None
        if metric == comparison_config.EVALUATOR_REWARD:
            if self.frozen_evaluator is None:
                raise RuntimeError(f"{stage.name}: rm_reward selection before the evaluator")
            reward_model = self.frozen_evaluator
        validation = evaluate_lib.ListsValidation(
            lists_fn, self.dataset, self.experiment.eval, self.mesh, reward_model=reward_model
        )
        return dataclasses.replace(
            stage,
            stage_config=dataclasses.replace(stage.stage_config, select_metric=key),
            eval_fn=lambda state: {key: validation(state.params)[metric]},
        )

    def _scorer(self, name: str, evaluator, stage_config, config_path: str, select=False):
        """A list scorer trained by BCE on logged feedback -> (evaluator, params); with
        ``select`` its sort is selected on validation (the reward model keeps its own
        ``reward_model.train.select_metric``)."""
        stage = run_lib.scorer_stage(
            name, f"compare/{name}", config_path, stage_config, evaluator, self.context
        )
        if select:
            list_len = self.dataset.list_len
            stage = self.selected(stage, lambda p, b: evaluator.greedy(p, b, list_len))
        return evaluator, self._train(stage)

    def reward_model(self):
        """The frozen evaluator shared by GoalRank and every G-E / MG-E method of the seed,
        selected on its validation AUC when ``reward_model.train.select_metric`` says so."""
        exp = self.experiment
        evaluator = run_lib.reward_model_evaluator(
            exp.reward_model.kind, exp.reward_model.model, self.dataset
        )
        stage = run_lib.scorer_stage(
            "reward_model",
            "compare/reward_model",
            "reward_model.train",
            exp.reward_model.train,
            evaluator,
            self.context,
            candidate_weight=exp.reward_model.candidate_weight,
        )
        if exp.reward_model.train.select_metric:
            validation = evaluate_lib.ListsValidation(
                lambda p, b: evaluator.greedy(p, b, self.dataset.list_len),
                self.dataset,
                exp.eval,
                self.mesh,
                scores_fn=evaluator.candidate_scores,
            )
            metric = exp.reward_model.train.select_metric.rsplit("/", 1)[-1]
            name = exp.reward_model.train.select_metric
            stage = dataclasses.replace(
                stage, eval_fn=lambda state: {name: validation(state.params)[metric]}
            )
        return evaluator, self._train(stage)

    def baseline_module(self, name: str) -> Backbone:
        model_config = self.experiment.generator
        ids = dict(
            num_users=self.dataset.num_users,
            num_items=self.dataset.num_items,
            num_item_features=self.dataset.num_item_features,
        )
        kwargs = dict(causal=model_config.causal, **ids, **models_lib.model_kwargs(model_config))
        if name == "dnn":
            return baselines.DNNScorer(**kwargs)
        if name == "prm":
            return make_reward_model("pointwise", model_config, **ids)
        if name == "nar":
            return baselines.NARGenerator(max_list_len=self.dataset.list_len, **kwargs)
        raise ValueError(f"Unknown baseline {name!r}")

    def nar(self):
        module = self.baseline_module("nar")
        list_len = self.dataset.list_len
        stage = stages.Stage(
            name="nar",
            streams="compare/nar",
            config_path="compare.baseline_train",
            stage_config=self.comparison.baseline_train,
            init=lambda key: module.init(key, self.context.init_batch),
            step=functools.partial(nar_train_step, module=module, list_len=list_len),
        )

        def greedy(params, batch):
            step = evaluation.nar_decode_step(module.apply(params, batch))
            return sampling.decode(step, None, batch["cand_mask"], list_len)

        return module, self._train(self.selected(stage, greedy))

    def generator(self, run_spec: GoalRankRun, evaluator, reward_params):
        # The same initial parameters, batches and key stream for every GoalRank run of a seed
        # (of one generator variant).
        exp = run_experiment(self.experiment, run_spec)
        policy = run_lib.generator_policy(exp, self.dataset)
        stage = run_lib.generator_stage(
            exp, policy, evaluator, self.context, reward_params, name=run_spec.name
        )
        return policy, self._train(self.selected(stage, policy.greedy))

    def train_all(self, shared_reward_model=None) -> SeedModels:
        """Every model of the seed; ``shared_reward_model`` = (evaluator, params) trained once
        for all seeds, else the seed trains its own."""
        if shared_reward_model is None:
            evaluator, reward_params = self.reward_model()
        else:
            evaluator, reward_params = shared_reward_model
        self.frozen_evaluator = (evaluator, reward_params)
        needed = needed_baselines(self.comparison)
        scorers = {}
        for name in ("dnn", "prm"):
            if name in needed:
                scorers[name] = self._scorer(
                    name,
                    policies.Evaluator(self.baseline_module(name), "pointwise"),
                    self.comparison.baseline_train,
                    "compare.baseline_train",
                    select=True,
                )
        nar = self.nar() if "nar" in needed else None
        generators = {}
        for run_spec in goalrank_runs(self.experiment, self.comparison):
            generators[run_spec.name] = self.generator(run_spec, evaluator, reward_params)
        return SeedModels(
            evaluator,
            reward_params,
            scorers,
            nar,
            generators,
            dict(self.seconds),
            dict(self.records),
        )

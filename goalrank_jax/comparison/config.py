"""What a comparison runs: methods, seeds, sweeps (``--config.compare.*``).

An experiment file for ``python -m goalrank_jax.comparison`` holds every field of
:class:`goalrank_jax.configs.ExperimentConfig` (the data, the shared reward model, the GoalRank
generator and its GRO defaults) plus a ``compare`` group parsed into :class:`ComparisonConfig`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from goalrank_jax import config_fields, configs

# Trained methods. Baselines: dnn, prm (pointwise scorers, sorted), supervised_ar (the GoalRank
# generator with w_R = 0), nar (the NAR4Rec-style generator), pier_ge / nar4rec_ge (G-E: a
# generator proposes lists, the reward model picks), mge (k heterogeneous generators + the
# reward model). GoalRank: goalrank (the experiment's GRO settings) and its ablations.
METHODS = ("dnn", "prm", "supervised_ar", "nar4rec_ge", "pier_ge", "mge", "goalrank")
# Methods a comparison may add to the default ones: goalrank_prefix = GoalRank with the
# paper-faithful prefix-conditioned generator (about 20x slower per step than the fast one), the
# same GRO settings, width and budget unless compare.prefix_num_epochs says otherwise.
OPTIONAL_METHODS = ("goalrank_prefix",)
ABLATIONS = ("group_size", "loss_form", "group_construction")
# Metric families compare.select_metric may name (logged-label metrics of a ranker's lists).
SELECT_METRICS = ("H", "N", "M", "F1", "AUC")
# compare.select_metric = this: every ranker is selected on the frozen evaluator's estimate of
# its lists' reward on validation (no labels; it credits what the evaluator credits, list
# effects included, and is biased towards the rankers that optimise it).
EVALUATOR_REWARD = "rm_reward"


def _check_subset(name: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"ComparisonConfig.{name} has unknown {unknown}; allowed: {allowed}")


@dataclasses.dataclass(frozen=True)
class ComparisonConfig:
    seeds: tuple[int, ...] = (1, 2, 3)  # One full repetition (reward model included) per seed.
    # Which methods of METHODS + OPTIONAL_METHODS to train and evaluate.
    methods: tuple[str, ...] = METHODS
    ablations: tuple[str, ...] = ABLATIONS  # Which GoalRank ablations of ABLATIONS to run.
    group_sizes: tuple[int, ...] = (2, 4, 8, 16, 32, 64)  # K of the group-size sweep.
    mge_ks: tuple[int, ...] = (1, 3, 5, 10, 20, 50, 100)  # Numbers of MG-E generators.
    num_proposals: int = 100  # Lists each G-E generator proposes per request.
    # True: one reward model (the experiment's seed) is the evaluator of every seed, so the
    # seeds vary the rankers' training only; False: each seed trains its own.
    shared_reward_model: bool = True
    split: str = "test"  # Split the methods are compared on (no model selection on it).
    # Model selection of every trained ranker (DNN, PRM, NAR, the supervised AR generator, every
    # GoalRank run) on this metric of its own lists on the validation split (e.g. "N@6"; one of
    # H@L, N@L, M@L, F1@L, AUC, or "rm_reward": the evaluator's estimate of the lists' reward):
    # evaluated every eval interval of the method's stage, the best state kept, stopped after
    # `patience` evaluations without a new best. "" = no selection (the last state of a fixed
    # budget).
    select_metric: str = ""
    # goalrank_prefix only: its budget in epochs (0 = the GoalRank generator's train.num_epochs),
    # for a CPU where the prefix generator cannot train as long as the fast one. A fraction of
    # an epoch is allowed (e.g. 0.25); a budget shorter than the evaluation interval is still
    # evaluated, and selected, at its last step.
    prefix_num_epochs: float = 0.0
    # Another comparison's workdir: each seed copies from it the stages that never read the
    # reward model (dnn, prm, nar) instead of training them again, for a second
    # evaluator track (e.g. reward_model.kind=list_aware) over the same baselines. Its config
    # must equal this one's outside reward_model (checked; comparison/reuse.py). "" = train all.
    reuse_baselines_from: str = ""
    # Training of the DNN, PRM and NAR baselines (BCE / likelihood on logged feedback); their
    # sizes are those of the experiment's `generator` group, so every method has the same width.
    baseline_train: configs.StageConfig = dataclasses.field(default_factory=configs.StageConfig)

    def validate(self) -> None:
        if not self.seeds:
            raise ValueError("ComparisonConfig.seeds is empty: give at least one seed.")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"ComparisonConfig.seeds repeats a seed: {self.seeds}")
        _check_subset("methods", self.methods, METHODS + OPTIONAL_METHODS)
        if self.prefix_num_epochs < 0:
            raise ValueError(
                f"ComparisonConfig.prefix_num_epochs must be >= 0, got {self.prefix_num_epochs}"
            )
        _check_subset("ablations", self.ablations, ABLATIONS)
        for k in self.group_sizes:
            if k < 2:
                raise ValueError(
                    f"ComparisonConfig.group_sizes has K={k}: a group needs at least 2 lists."
                )
        if not self.mge_ks or min(self.mge_ks) < 1:
            raise ValueError(f"ComparisonConfig.mge_ks must be >= 1, got {self.mge_ks}")
        if self.num_proposals < 1:
            raise ValueError(
                f"ComparisonConfig.num_proposals must be >= 1, got {self.num_proposals}"
            )
        if self.split not in ("validation", "test"):
            raise ValueError(
                f"ComparisonConfig.split must be validation or test, got {self.split!r}"
            )
        # The baselines' select metric is set per stage from select_metric.
        placeholder = f"validation/baseline/{self.select_metric}" if self.select_metric else ""
        dataclasses.replace(self.baseline_train, select_metric=placeholder).validate()
        if self.reuse_baselines_from and self.select_metric == EVALUATOR_REWARD:
            raise ValueError(
                "ComparisonConfig.reuse_baselines_from cannot be used with select_metric="
                f"{EVALUATOR_REWARD!r}: DNN, PRM and NAR are then selected on the evaluator's "
                "reward, so they depend on the evaluator and train here."
            )
        family = self.select_metric.split("@")[0]
        if self.select_metric not in ("", EVALUATOR_REWARD) and family not in SELECT_METRICS:
            raise ValueError(
                f"ComparisonConfig.select_metric must be '', {EVALUATOR_REWARD!r} or one of "
                f"{SELECT_METRICS} (with @L where ranked), got {self.select_metric!r}"
            )


def with_data_dir(experiment, workdir: str):
    """``experiment`` with ``data.data_dir`` set: where a comparison in ``workdir`` keeps its
    dataset (``<workdir>/tfds`` unless the config names a directory)."""
    data_dir = experiment.data.data_dir or os.path.join(workdir, "tfds")
    return dataclasses.replace(
        experiment, data=dataclasses.replace(experiment.data, data_dir=data_dir)
    )


def from_config_dict(config: Any, num_devices: int = 1):
    """ConfigDict with a ``compare`` group -> (ExperimentConfig, ComparisonConfig), validated."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    values = dict(values)
    if "compare" not in values:
        raise ValueError(
            "The comparison config needs a 'compare' group (see experiments/compare.py)."
        )
    compare_values = values.pop("compare")
    experiment = configs.from_config_dict(values, num_devices)
    comparison = config_fields.build_dataclass(ComparisonConfig, compare_values, "compare.")
    comparison.validate()
    from goalrank_jax.comparison import training

    training.goalrank_runs(experiment, comparison)  # every derived GRO setting is valid
    metric, _, cutoff = comparison.select_metric.partition("@")
    if cutoff and cutoff != str(experiment.data.list_len):
        raise ValueError(
            f"compare.select_metric {comparison.select_metric!r} must rank at L="
            f"{experiment.data.list_len} (e.g. {metric}@{experiment.data.list_len})."
        )
    if comparison.baseline_train.batch_size % num_devices:
        raise ValueError(
            f"compare.baseline_train.batch_size ({comparison.baseline_train.batch_size}) must be "
            f"divisible by the number of devices ({num_devices})."
        )
    return experiment, comparison

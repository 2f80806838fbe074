"""Frozen, validated experiment configuration.

Experiment files (``experiments/*.py``) build an ``ml_collections.ConfigDict``; ``main`` turns it
into the dataclasses below with :func:`from_config_dict`, which rejects unknown keys and calls
:meth:`ExperimentConfig.validate`. Library code only ever sees these dataclasses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from goalrank_jax import reference_policies, sharding
from goalrank_jax.config_fields import build_dataclass, non_negative, one_of, positive
from goalrank_jax.data.requests import CANDIDATE_SOURCES
from goalrank_jax.data.retriever import RetrieverConfig
from goalrank_jax.env.synthetic import EnvConfig, TrueModelParams

DATASETS = ("synthetic", "ml100k", "ml1m", "amazon_book", "kuairand")
GROUP_CONSTRUCTIONS = ("on_policy", "plackett_luce", "mixed")
LOSS_FORMS = ("log_prob", "prob")
SUPERVISED_FORMS = (
    "first_step_bce",
    "every_step_bce",
    "logged_nll",
    "group_step_bce",
    "group_step_softmax",
)
REWARD_MODEL_KINDS = ("pointwise", "list_aware")
PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
# gro.auxiliary: the reference policies of goalrank_jax/reference_policies.py that need no
# true-model field (logged, retriever, reward_model_greedy, random).
AUXILIARY_POLICIES = reference_policies.AUXILIARY_NAMES
# GENERATOR_VARIANTS (read through the module __getattr__ below) = the registered generator
# variants of goalrank_jax/models/registry.py, e.g. ("prefix", "fast").
COMPUTE_DTYPES = ("float32", "bfloat16")


def _generator_variants() -> tuple[str, ...]:
    # Imported here, not at the top: the models are heavier than this module, and the registry
    # is filled by importing them.
    from goalrank_jax.models import registry

    return registry.generator_variants()


def __getattr__(name: str) -> Any:
    if name == "GENERATOR_VARIANTS":  # The registered variants, read when asked for.
        return _generator_variants()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which requests to train and evaluate on, and how they are built."""

    dataset: str = "synthetic"
    data_dir: str = ""  # TFDS data directory; "" means <workdir>/tfds.
    num_candidates: int = 50  # N: candidates per request (logged L + N - L retrieved).
    # Source of the N - L non-logged candidates: "retriever" (the stage-1 MF retriever's top
    # unseen items, SPEC section 5), "impression" (synthetic only: the items the world's
    # logging system retrieved for the request but did not show; needs env.impression_size >= N),
    # "random" (drawn uniformly from the items the user never interacted with) or "popular"
    # (drawn from those in proportion to 1 + their positive interactions in the train split).
    candidates: str = "retriever"
    # Give the models the item side features the dataset has (synthetic: the item's category;
    # ML-100K / ML-1M: the genres of the item file beside the ratings); False = item ids only.
    item_features: bool = True
    list_len: int = 6  # L: length of the logged list and of every ranked list.
    history_len: int = 50  # H: most recent interactions kept as the user history.
    valid_fraction: float = 0.1  # Last fraction of each user's requests (before test) -> valid.
    test_fraction: float = 0.1  # Last fraction of each user's requests -> test.
    seed: int = 0  # Candidate shuffling seed.
    oracle_beam_width: int = 50  # Beam width of the true-model oracle stored with each request.
    # Real data (every dataset but "synthetic"): raw files are read from manual_dir.
    manual_dir: str = ""  # Directory holding the raw files (searched recursively).
    k_core: int = 20  # Keep users and items with >= k interactions (iterated to a fixed point).
    label_threshold: float = 4.0  # Label = 1 when the rating / feedback value is >= this.
    feedback_column: str = "is_click"  # KuaiRand: the log column used as feedback.
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    retriever: RetrieverConfig = dataclasses.field(default_factory=RetrieverConfig)

    def validate(self) -> None:
        one_of(self, "dataset", DATASETS)
        positive(self, "num_candidates", "list_len", "history_len", "oracle_beam_width")
        if self.list_len > self.num_candidates:
            raise ValueError(
                f"DataConfig.list_len (L={self.list_len}) must be <= num_candidates "
                f"(N={self.num_candidates}): a list holds L distinct candidates."
            )
        positive(self, "k_core")
        one_of(self, "candidates", CANDIDATE_SOURCES)
        if self.candidates == "impression" and (
            self.dataset != "synthetic" or self.env.impression_size < self.num_candidates
        ):
            raise ValueError(
                "DataConfig.candidates='impression' needs the synthetic world with "
                f"env.impression_size >= num_candidates (N={self.num_candidates}); got dataset "
                f"{self.dataset!r}, impression_size {self.env.impression_size}."
            )
        if self.dataset == "synthetic" and self.env.list_len != self.list_len:
            raise ValueError(
                f"DataConfig.env.list_len ({self.env.list_len}) must equal DataConfig.list_len "
                f"({self.list_len})."
            )
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise ValueError(f"DataConfig.{name} must be in (0, 0.5), got {value!r}")
        self.env.validate()
        self.retriever.validate()
        if self.dataset == "synthetic" and self.num_candidates - self.list_len > self.env.num_items:
            raise ValueError(
                f"DataConfig.num_candidates (N={self.num_candidates}) needs N-L retrieved items "
                f"but the catalogue has only {self.env.num_items} items."
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the generator / reward-model backbone (the same fields serve both)."""

    embed_dim: int = 64  # D: item, user and hidden width.
    num_layers: int = 2  # Transformer layers over the N candidates.
    num_heads: int = 2  # Attention heads; must divide embed_dim.
    ff_dim: int = 128  # Feed-forward width of each transformer layer.
    dropout: float = 0.1  # Dropout rate in training (sampling and evaluation use none).
    causal: bool = False  # Causal attention over the (shuffled) candidate order instead of a set.
    use_user_id: bool = True  # Add a learned user-id embedding to the history encoding.
    bilinear_head: bool = True  # Add the user-item affinity <W_a U, x_i>/sqrt(D) to each logit.
    item_bias: bool = True  # Add a learned per-item scalar b_i to each logit.
    # Generator only, one of GENERATOR_VARIANTS (goalrank_jax/models/registry.py): "prefix" =
    # paper-faithful (re-encodes the N candidates at every step), "fast" = candidates encoded
    # once, then a pointer decoder with a key/value cache.
    variant: str = "prefix"
    decoder_layers: int = 1  # Depth of the fast variant's decoder.
    # List-aware reward model / simulator only: add to each position's click logit the sum over
    # the items above it of a bilinear interaction <A x_s, B x_t> / sqrt(D) of item vectors
    # (softmax attention averages the items above; this counts them).
    pairwise_above: bool = False
    # Computation dtype: "float32" or "bfloat16" (parameters, optimizer state and the loss stay
    # float32; logits are cast to float32 before sampling and the softmax).
    dtype: str = "float32"

    def validate(self) -> None:
        positive(self, "embed_dim", "num_layers", "num_heads", "ff_dim", "decoder_layers")
        one_of(self, "variant", _generator_variants())
        one_of(self, "dtype", COMPUTE_DTYPES)
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"ModelConfig.embed_dim ({self.embed_dim}) must be divisible by num_heads "
                f"({self.num_heads})."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam(W) with global-norm clipping and step decay (SPEC section 8 defaults)."""

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 1e-3
    clip_norm: float = 5.0  # Global-norm gradient clipping.
    decay_every: int = (
        0  # Multiply the learning rate by decay_factor every this many steps; 0 = off.
    )
    decay_factor: float = 0.1

    def validate(self) -> None:
        positive(self, "learning_rate", "eps", "clip_norm", "decay_factor")
        non_negative(self, "weight_decay", "decay_every")
        for name in ("b1", "b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"OptimConfig.{name} must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class GROConfig:
    """Group-relative optimisation (SPEC sections 2 and 3)."""

    group_size: int = 20  # K: lists sampled per request.
    reward_weight: float = 0.01  # w_R: weight of the group-relative loss L_GRO.
    supervised_weight: float = 1.0  # w_G: weight of the supervised term L_sup.
    # L_sup, one of SUPERVISED_FORMS (maths in goalrank_jax/losses.py):
    # "first_step_bce" = BCE of the first-step logits vs the candidate labels (steps 2..L get no
    # supervision; the current default, kept for ablation); "every_step_bce" = teacher-forced on
    # the logged list, BCE at every step over the candidates still available; "logged_nll" =
    # NLL of the logged positives in shown order (teacher-forced positives first);
    # "group_step_bce" = every_step_bce along each of the group's sampled lists instead of the
    # logged one (prefixes chosen without the labels; a mixed group's auxiliary lists are
    # left out); "group_step_softmax" = along the same lists, softmax cross-entropy of each
    # step's choice towards the positives still available (trains the argmax the greedy list
    # takes, where BCE trains each candidate's label).
    supervised_form: str = "first_step_bce"
    tau_ref: float = 1.0  # Temperature of the reference policy softmax(A / tau_ref).
    # Weights of the group's log-likelihoods: False = pi_ref (the paper's cross-entropy; the
    # weights sum to one, so a group of equal rewards still raises the likelihood of its own
    # samples), True = pi_ref - 1/K (a group of equal rewards gives no gradient).
    centre_weights: bool = False
    # w_H: weight of an entropy bonus, minus w_H x the mean per-step entropy of the policy
    # along the group's lists (0 = the paper's loss; > 0 keeps the sampled lists diverse).
    entropy_weight: float = 0.0
    loss_form: str = "log_prob"  # "log_prob" (default) or "prob" (ablation).
    group_construction: str = "on_policy"  # "on_policy", "plackett_luce" or "mixed".
    sample_temperature: float = 1.0  # Temperature of on-policy group sampling.
    # "mixed": these reference policies fill the first len(auxiliary) of the K slots, in order.
    auxiliary: tuple[str, ...] = ("logged", "retriever", "reward_model_greedy", "random")
    # Which auxiliary lists of a mixed group the group forms of L_sup (group_step_*) supervise
    # besides the sampled ones: "none" (the sampled lists only) or "label_free" (also every
    # auxiliary list whose choice did not see the labels: all but "logged").
    supervise_auxiliary: str = "none"

    def validate(self) -> None:
        if self.group_size < 2:
            raise ValueError(
                f"GROConfig.group_size (K={self.group_size}) must be >= 2: a group-relative "
                "advantage needs at least two lists per request."
            )
        positive(self, "tau_ref", "sample_temperature")
        non_negative(self, "reward_weight", "supervised_weight", "entropy_weight")
        if self.reward_weight == 0 and self.supervised_weight == 0:
            raise ValueError("GROConfig.reward_weight and supervised_weight cannot both be 0.")
        one_of(self, "loss_form", LOSS_FORMS)
        one_of(self, "supervised_form", SUPERVISED_FORMS)
        one_of(self, "group_construction", GROUP_CONSTRUCTIONS)
        one_of(self, "supervise_auxiliary", ("none", "label_free"))
        for name in self.auxiliary:
            if name not in AUXILIARY_POLICIES:
                raise ValueError(
                    f"GROConfig.auxiliary has unknown policy {name!r}; allowed: "
                    f"{AUXILIARY_POLICIES}{reference_policies.auxiliary_hint(name)}"
                )
        if self.group_construction == "mixed" and len(self.auxiliary) >= self.group_size:
            raise ValueError(
                f"GROConfig.auxiliary fills {len(self.auxiliary)} slots; group_size "
                f"(K={self.group_size}) must leave at least one sampled list."
            )


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One training stage (reward model or generator)."""

    num_steps: int = 1000  # The budget in steps (unless num_epochs > 0).
    # > 0: the budget in epochs of the train split instead, num_steps = ceil(num_epochs x train
    # requests / batch_size) (resolved by goalrank_jax/stages.py when the stage starts).
    num_epochs: float = 0.0
    batch_size: int = 128  # Global batch; must be divisible by the number of devices.
    log_every: int = 50
    eval_every: int = 500  # Validation evaluation interval (0 = only at the end).
    eval_every_epochs: float = 0.0  # > 0: evaluate every this many epochs instead.
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    # Model selection: a validation metric logged by the stage's evaluation (e.g.
    # "validation/goalrank/N@6"); the stage returns the state of its best evaluation (highest
    # value) instead of the last one. "" = the last state. The generator's `train` may say
    # "auto" (SELECT_AUTO): resolved when the config is read, see generator_select_metric.
    select_metric: str = ""
    # Early stopping (needs select_metric): stop after this many evaluations in a row without a
    # new best select_metric; the stage then returns its best state. 0 = train the whole budget.
    patience: int = 0
    # Stop the stage (exit code 3, latest checkpoint = last good state) after this many
    # consecutive steps with a non-finite loss or skipped (non-finite-gradient) update; 0 = never.
    # Checked whenever metrics are fetched (every log_every steps and at checkpoints), so the stop
    # can come up to log_every - 1 steps after the limit is reached.
    max_nonfinite_steps: int = 100
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)

    def validate(self) -> None:
        positive(self, "num_steps", "batch_size", "log_every", "checkpoint_every")
        positive(self, "keep_checkpoints")
        non_negative(self, "eval_every", "max_nonfinite_steps", "patience")
        non_negative(self, "num_epochs", "eval_every_epochs")
        if self.patience and not self.select_metric:
            raise ValueError(
                f"StageConfig.patience ({self.patience}) needs select_metric: early stopping "
                "watches the validation metric that model selection maximises."
            )
        self.optim.validate()


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
    kind: str = "pointwise"  # "pointwise" (PRM-style, DCG list reward) or "list_aware".
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: StageConfig = dataclasses.field(default_factory=StageConfig)
    # list_aware only: weight of a second BCE term, every candidate's first-position logit (the
    # candidate shown alone) against its label, so that the non-logged candidates teach it as
    # they teach the pointwise model. 0 = trained on the logged lists' positions alone.
    candidate_weight: float = 1.0

    def validate(self) -> None:
        one_of(self, "kind", REWARD_MODEL_KINDS)
        non_negative(self, "candidate_weight")
        self.model.validate()
        self.train.validate()


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """The held-out user-response simulator of the real-data track (SPEC section 6).

    A list-aware transformer (per-position click logits over the shown list, with position
    embeddings) trained on the train split's logged lists with its own seed; it only scores
    lists at evaluation (``<policy>/sim_reward``) and never trains a policy. Unused on synthetic
    data, where the true user model scores lists exactly.
    """

    seed: int = 31337  # PRNG seed of its initialisation, data order and dropout.
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: StageConfig = dataclasses.field(default_factory=StageConfig)

    def validate(self) -> None:
        self.model.validate()
        self.train.validate()


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 512  # Evaluation batch; the last batch is padded and masked.
    max_examples: int = 0  # Evaluate only the first this many examples of a split; 0 = all.

    def validate(self) -> None:
        positive(self, "batch_size")
        non_negative(self, "max_examples")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The ('data', 'fsdp') device mesh of every stage (goalrank_jax/sharding.py).

    The batch of every stage is split over data x fsdp devices; parameters and optimizer state
    are split over the fsdp devices (large arrays only) and replicated over data. data x fsdp
    must equal the number of devices of all processes together.
    """

    # Data-parallel groups; -1 or 0 = every device the fsdp axis leaves (the default: pure data
    # parallelism over all devices).
    data: int = -1
    # Devices that split each large parameter / optimizer-state array (FSDP); 1 = replicated,
    # -1 or 0 = every device the data axis leaves.
    fsdp: int = 1
    # Arrays with fewer elements stay replicated even when fsdp > 1 (their all-gather costs more
    # than the memory it saves).
    fsdp_min_size: int = 2**14

    def validate(self, num_devices: int = 1) -> None:
        """Raises ValueError naming mesh.data / mesh.fsdp when they cannot tile
        ``num_devices``."""
        positive(self, "fsdp_min_size")
        sharding.resolve_mesh_shape(self.data, self.fsdp, num_devices, ("mesh.data", "mesh.fsdp"))


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    seed: int = 999  # Base PRNG seed of model init, sampling and dropout.
    # PRNG implementation of every key derived from `seed`. threefry2x32 gives the same random
    # bits on any mesh (a multi-device run equals a one-device run); rbg is several times faster
    # for dropout masks on CPU but its bits depend on the device layout.
    prng_impl: str = "threefry2x32"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    reward_model: RewardModelConfig = dataclasses.field(default_factory=RewardModelConfig)
    simulator: SimulatorConfig = dataclasses.field(default_factory=SimulatorConfig)
    generator: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    gro: GROConfig = dataclasses.field(default_factory=GROConfig)
    train: StageConfig = dataclasses.field(default_factory=StageConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)

    def validate(self, num_devices: int = 1) -> None:
        """Raises ValueError naming the field of the first impossible value; ``num_devices`` is
        the number of devices of all processes together."""
        one_of(self, "prng_impl", PRNG_IMPLS)
        self.data.validate()
        self.reward_model.validate()
        self.simulator.validate()
        self.generator.validate()
        self.gro.validate()
        self.train.validate()
        self.eval.validate()
        stages = (
            ("train", self.train),
            ("reward_model.train", self.reward_model.train),
            ("simulator.train", self.simulator.train),
        )
        for name, stage in stages:
            if stage.batch_size % num_devices:
                raise ValueError(
                    f"{name}.batch_size ({stage.batch_size}) must be divisible by the number of "
                    f"devices ({num_devices})."
                )
            if name != "train" and stage.select_metric == SELECT_AUTO:
                raise ValueError(
                    f"{name}.select_metric {SELECT_AUTO!r} is for the generator's train only; "
                    "name the scorer's validation metric (e.g. 'validation/reward_model_greedy/"
                    "AUC') or leave it empty."
                )
        if self.eval.batch_size % num_devices:
            raise ValueError(
                f"eval.batch_size ({self.eval.batch_size}) must be divisible by the number of "
                f"devices ({num_devices})."
            )
        self.mesh.validate(num_devices)


# train.select_metric = "auto": the generator's selection metric follows from its objective.
SELECT_AUTO = "auto"


def generator_select_metric(config: ExperimentConfig) -> str:
    """The validation metric ``train.select_metric = "auto"`` stands for: N@L of the
    generator's greedy list on logged labels when its objective has a label term
    (``gro.supervised_weight > 0``); without one (pure GRO, w_G = 0) the frozen reward model's
    reward of that list, ``validation/goalrank/rm_reward``, the quantity GRO maximises. A
    label-free run selected on a label metric is stopped by that metric's noise once it
    plateaus while its own objective is still rising (docs/gro.md)."""
    if config.gro.supervised_weight > 0:
        return f"validation/goalrank/N@{config.data.list_len}"
    return "validation/goalrank/rm_reward"


def resolve_select_metric(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with ``train.select_metric = "auto"`` replaced by the metric it stands for
    (unchanged otherwise), so that config.json records the metric the run was selected on."""
    if config.train.select_metric != SELECT_AUTO:
        return config
    train = dataclasses.replace(config.train, select_metric=generator_select_metric(config))
    return dataclasses.replace(config, train=train)


def from_config_dict(config: Any, num_devices: int = 1) -> ExperimentConfig:
    """ConfigDict (or nested mapping) -> validated, frozen :class:`ExperimentConfig`."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    experiment = build_dataclass(ExperimentConfig, values, "")
    experiment.validate(num_devices)
    experiment = resolve_select_metric(experiment)
    return experiment


def to_dict(config: Any) -> dict[str, Any]:
    """Dataclass config -> plain nested dict (for JSON and ConfigDict)."""
    return dataclasses.asdict(config)


__all__ = [
    "DataConfig",
    "EnvConfig",
    "EvalConfig",
    "ExperimentConfig",
    "GROConfig",
    "MeshConfig",
    "ModelConfig",
    "OptimConfig",
    "RetrieverConfig",
    "RewardModelConfig",
    "StageConfig",
    "TrueModelParams",
    "from_config_dict",
    "generator_select_metric",
    "resolve_select_metric",
    "to_dict",
]

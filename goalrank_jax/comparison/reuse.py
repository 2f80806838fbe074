"""A second evaluator track over the same baselines: copy the stages that never see the evaluator.

DNN, PRM and the NAR generator learn from logged feedback only, so a comparison that changes
nothing but the reward model (``reward_model.kind = list_aware`` beside a ``pointwise`` run, say)
or GoalRank's own settings (its budget, patience or GRO loss) would train them again to the same
parameters. (The supervised AR generator, w_R = 0, learns nothing from the evaluator either, but
its train state carries the frozen reward model's parameters, so its checkpoints fit one
evaluator only: it trains again.) With ``compare.reuse_baselines_from = OTHER_WORKDIR`` each
seed copies those finished stages from ``OTHER_WORKDIR/seed_<s>/`` instead, after checking that
the other comparison's config equals this one in everything but the reward model and the
generator stages' ``train`` and ``gro`` (the baselines' budget may grow). A copied stage is
restored like any finished stage (an unfinished one resumes here, as does one that ended at the
source's smaller cap); the report marks it as copied and gives the seconds it took where
it was trained.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

from goalrank_jax import config_check, stages

# Stages whose training and checkpoints involve no reward model (comparison.training: scorer
# and NAR stages on logged feedback).
EVALUATOR_FREE = ("dnn", "prm", "nar")
# Config fields that may differ between the two comparisons: the evaluator, those no trained
# model depends on (config_check.RUN_IGNORED: paths, mesh, logging), and the settings only the
# generator stages read (their budget, patience and optimiser in ``train``, the GRO loss in
# ``gro``): the copied stages train under ``compare.baseline_train``, so a second comparison
# may change GoalRank's budget or loss and still reuse them. ``generator`` is compared: DNN and
# NAR take their width from it.
IGNORED = (
    "experiment.reward_model",
    "experiment.train",
    "experiment.gro",
) + config_check.under("experiment", config_check.RUN_IGNORED)
# The copied stages' budget may be larger here than in the source: a copied stage that stopped
# early stays stopped, one that ended at the source's cap continues here (config_check).
GROWABLE = ("compare.baseline_train.num_steps", "compare.baseline_train.num_epochs")
# Fields of the ``compare`` group the copied stages depend on.
COMPARE_FIELDS = ("baseline_train", "select_metric")
# Written into a copied stage's directory: where it came from and its training seconds there.
COPIED_MARKER = "copied_from.json"


def _comparable(experiment: dict, compare: dict) -> dict:
    """The config tree compared between the two comparisons: the experiment and the fields of
    ``compare`` in COMPARE_FIELDS, as JSON values (tuples read back as lists)."""
    tree = json.loads(json.dumps({"experiment": experiment, "compare": compare}))
    tree["compare"] = {k: tree["compare"][k] for k in COMPARE_FIELDS}
    return tree


def check_source(experiment, comparison, source: str) -> None:
    """Raises ValueError unless ``source`` is a comparison workdir whose config equals this
    one's outside the reward model (the fields that differ are named)."""
    path = os.path.join(source, "config.json")
    if not os.path.isfile(path):
        raise ValueError(
            f"compare.reuse_baselines_from={source!r} is not a comparison workdir: no {path}."
        )
    try:
        with open(path) as f:
            saved = json.load(f)
        theirs = _comparable(saved["experiment"], saved["compare"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"compare.reuse_baselines_from: cannot read {path}: {err}") from None
    ours = _comparable(dataclasses.asdict(experiment), dataclasses.asdict(comparison))
    differ = config_check.differences(theirs, ours, IGNORED, growable=GROWABLE)
    if differ:
        raise ValueError(
            f"compare.reuse_baselines_from={source!r}: its baselines were trained under another "
            "config, so they cannot be reused. Differences outside reward_model: "
            f"{config_check.describe(theirs, ours, differ)}."
        )


def copy_stages(
    source: str, seed: int, seed_dir: str, names, log_fn: Callable[[str], None]
) -> dict[str, dict]:
    """Copies each stage of ``names`` (evaluator-free ones only) that ``seed_dir`` lacks from the
    source's ``seed_<seed>/``; returns name -> {"from": dir, "seconds": training seconds there
    or None} for every stage of ``names`` that came from the source (now or in an earlier
    invocation, which left a marker)."""
    source_seed = os.path.join(source, f"seed_{seed}")
    seconds_there = {}
    results = os.path.join(source_seed, "results.json")
    if os.path.isfile(results):
        with open(results) as f:
            seconds_there = json.load(f).get("seconds", {})
    copied = {}
    for name in names:
        if name not in EVALUATOR_FREE:
            continue
        src, dst = os.path.join(source_seed, name), os.path.join(seed_dir, name)
        marker = os.path.join(dst, COPIED_MARKER)
        if not os.path.isdir(dst):
            if not os.path.isdir(os.path.join(src, "checkpoints")):
                log_fn(f"[compare] seed {seed}: {name} not in {source_seed}; it trains here")
                continue
            os.makedirs(seed_dir, exist_ok=True)
            note = {"from": src, "seconds": seconds_there.get(name)}
            stages.copy_stage(src, dst, {COPIED_MARKER: note})
            log_fn(f"[compare] seed {seed}: {name} copied from {src}")
        if os.path.isfile(marker):
            with open(marker) as f:
                copied[name] = json.load(f)
    return copied

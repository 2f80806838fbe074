"""The scaling-law study: GoalRank generators of every size preset on one dataset and budget.

    python -m goalrank_jax.scaling --config=experiments/scaling.py --workdir=runs/scaling
    python -m goalrank_jax.scaling --config=experiments/scaling.py --workdir=runs/scaling \
        --sizes=0.1m,0.3m,1m --variants=prefix,fast --mge_results=runs/compare/comparison.json
    python -m goalrank_jax.scaling --config=experiments/scaling.py:smoke --workdir=runs/sc_smoke

Args (after the colon, comma-separated) as experiments/goalrank.py: ``smoke`` (tiny data, two
tiny sizes, a few steps; about a minute per run on 2 CPU cores, mostly XLA compilation) and
``dataset=NAME``. ``size=`` / ``variant=`` are not accepted here: the study sets them per run
from ``scaling.sizes`` and ``scaling.variants``.

Every field of experiments/goalrank.py is here (data, reward model, GRO settings, training);
the ``scaling`` group below says which sizes and variants to train. The budget is the same for
every size and variant: ``train.num_steps`` steps of ``train.batch_size`` requests, groups of
``gro.group_size`` lists, learning rate ``train.optim.learning_rate``, no model selection (the
last state is evaluated). Only the generator's width and depth change between runs
(goalrank_jax/scaling/presets.py). One reward model, trained in the first run, is shared by every
run.

Sizing (docs/scaling.md): the default sweep (0.01m .. 0.3m, both variants, 400 steps of 32
requests) plus ``--sizes=1m,3m --variants=fast`` in the same workdir are estimated at about
1h45 on the idle 2-core CPU. On a GPU or TPU host run the same command with
``--sizes=0.1m,0.3m,1m,3m,10m,30m,100m``; every preset runs unchanged there.
"""

import importlib.util
import os

import ml_collections

# ml_collections loads experiment files by path, so the sibling file is loaded the same way.
_spec = importlib.util.spec_from_file_location(
    "experiments_goalrank", os.path.join(os.path.dirname(os.path.abspath(__file__)), "goalrank.py")
)
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = base.parse_all_args(arg)
    if args["size"] or args["variant"]:
        raise ValueError(
            "experiments/scaling.py takes no size= / variant= arg: use --sizes / --variants "
            "(or --config.scaling.sizes / --config.scaling.variants)."
        )
    cfg = base.get_config(arg)
    # A fixed budget, the same for every size: no selection on validation, last state evaluated.
    cfg.train.select_metric = ""
    cfg.train.eval_every = 0
    cfg.train.num_epochs = 0  # A budget in steps, not epochs, and no early stopping.
    cfg.train.eval_every_epochs = 0
    cfg.train.patience = 0
    cfg.train.num_steps = 400  # Generator steps of every run (the study's budget).
    cfg.train.batch_size = 32  # Requests per generator step (the study's budget).
    cfg.train.checkpoint_every = 100  # Interrupted runs resume from here.
    cfg.train.log_every = 25  # Progress line and the step-time windows of the table.

    cfg.scaling = ml_collections.ConfigDict()
    sc = cfg.scaling
    # Size presets to train (names of goalrank_jax/scaling/presets.PRESETS), smallest first.
    sc.sizes = ("0.01m", "0.03m", "0.1m", "0.3m")
    sc.variants = ("prefix", "fast")  # Generator variants; each size is trained for each.
    # Optional comparison.json of `python -m goalrank_jax.comparison` ("" = none): its MG-E
    # curve (quality versus the number of generators k) becomes the plot's second panel.
    sc.mge_results = ""
    sc.metric = "test/true_reward"  # Quality on the plot's y axis (a results.json key).
    # Train the reward model once (first run) and copy its finished checkpoint into every other
    # run, where the stage is restored and skipped; False = each run trains its own (identical,
    # same seed and data) reward model.
    sc.share_reward_model = True

    if args["smoke"]:
        sc.sizes = ("0.01m", "0.03m")
        cfg.train.num_steps = 6
        cfg.train.batch_size = 16
        cfg.train.log_every = 2
        cfg.train.checkpoint_every = 3
    return cfg

"""The scaling-law study: GoalRank generators of every size preset on one dataset and budget.

    python -m goalrank_jax.scaling --config=experiments/scaling.py --workdir=runs/scaling
    python -m goalrank_jax.scaling --config=experiments/scaling.py --workdir=runs/scaling \
        --sizes=0.1m,0.3m,1m --variants=prefix,fast --mge_results=runs/compare/comparison.json
    python -m goalrank_jax.scaling --config=experiments/scaling.py:smoke --workdir=runs/sc_smoke

Args (after the colon, comma-separated) as experiments/goalrank.py: ``smoke`` (tiny data, two
tiny sizes, a few steps; about a minute per run on 2 CPU cores, mostly XLA compilation) and
``dataset=NAME``; ``fixed_budget`` = the study's first form (400 steps of 32 requests for
every size, the last state evaluated) instead of training each size to convergence.
``size=`` / ``variant=`` are not accepted here: the study sets them per run from
``scaling.sizes`` and ``scaling.variants``.

Every field of experiments/goalrank.py is here (data, reward model, GRO settings, training);
the ``scaling`` group below says which sizes and variants to train. The budget is the same for
every size and variant: the experiment's, up to ``train.num_epochs`` epochs of the train split
(20; 60 on real data) with the state of the best validation N@L kept and early stopping after
``train.patience`` (3; 6 on real data) evaluations without a new best, groups of
``gro.group_size`` lists, learning rate ``train.optim.learning_rate``. Only the generator's
width and depth change between runs (goalrank_jax/scaling/presets.py). One reward model, trained
in the first run, is shared by every run.

Sizing (docs/scaling.md): at ``fixed_budget`` the sweep 0.01m .. 0.3m of both variants plus
``--sizes=1m,3m --variants=fast`` took about 1h45 on the idle 2-core CPU; at convergence every
size trains up to 20 epochs (the experiment's fast D=64 generator: about 3 minutes per epoch of
the synthetic world on that CPU). On a GPU or TPU
host run the same command with ``--sizes=0.1m,0.3m,1m,3m,10m,30m,100m``; every preset runs
unchanged there.
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
    parts = [p.strip() for p in arg.split(",") if p.strip()]
    fixed_budget = "fixed_budget" in parts
    arg = ",".join(p for p in parts if p != "fixed_budget")
    args = base.parse_all_args(arg)
    if args["size"] or args["variant"]:
        raise ValueError(
            "experiments/scaling.py takes no size= / variant= arg: use --sizes / --variants "
            "(or --config.scaling.sizes / --config.scaling.variants)."
        )
    cfg = base.get_config(arg)
    # Every size trains to convergence under the experiment's budget: up to train.num_epochs
    # epochs, evaluated on validation every epoch, the best validation N@L kept, stopped after
    # train.patience evaluations without a new best (experiments/goalrank.py: 20, 1, 3).
    cfg.train.checkpoint_every = 100  # Interrupted runs resume from here.
    cfg.train.log_every = 25  # Progress line and the step-time windows of the table.
    if fixed_budget:
        # The study's first form: a fixed budget, the same for every size, no selection on
        # validation, the last state evaluated (the figures of docs/scaling.md).
        cfg.train.select_metric = ""
        cfg.train.eval_every = 0
        cfg.train.num_epochs = 0  # A budget in steps, not epochs, and no early stopping.
        cfg.train.eval_every_epochs = 0
        cfg.train.patience = 0
        cfg.train.num_steps = 400  # Generator steps of every run (the study's budget).
        cfg.train.batch_size = 32  # Requests per generator step (the study's budget).

    cfg.scaling = ml_collections.ConfigDict()
    sc = cfg.scaling
    # Size presets to train (names of goalrank_jax/scaling/presets.PRESETS), smallest first.
    sc.sizes = ("0.01m", "0.03m", "0.1m", "0.3m")
    sc.variants = ("prefix", "fast")  # Generator variants; each size is trained for each.
    # Optional comparison.json of `python -m goalrank_jax.comparison` ("" = none): its MG-E
    # curve (quality versus the number of generators k) becomes the plot's second panel.
    sc.mge_results = ""
    # Quality on the plot's y axis (a results.json key): the true reward on synthetic data; real
    # data has no true model, so there it is N@L of the logged labels.
    sc.metric = (
        "test/true_reward" if cfg.data.dataset == "synthetic" else f"test/N@{cfg.data.list_len}"
    )
    # Train the reward model once (first run) and copy its finished checkpoint into every other
    # run, where the stage is restored and skipped; False = each run trains its own (identical,
    # same seed and data) reward model.
    sc.share_reward_model = True
    # Generator seeds (() = the experiment's seed only): each size up to seeds_up_to is trained
    # once per seed, larger ones with the first seed only; the table and plot give mean ± std
    # over the seeds. Every run shares the first seed's reward model. Also --seeds=1,2,3.
    sc.seeds = ()
    sc.seeds_up_to = ""  # The largest preset trained with every seed ("" = all of them).
    # scaling.json files of earlier invocations of this study in other workdirs (also
    # --earlier_reports=a.json,b.json): their runs join the report and time the estimate of the
    # runs still to train, so a larger size can run later, elsewhere, without the smaller ones
    # again. Each must be of the same study (dataset, vocabulary, budget, metric, and the same
    # test scores of the reference lists that depend on the data and reward model alone).
    sc.earlier_reports = ()

    if args["smoke"]:
        sc.sizes = ("0.01m", "0.03m")
        cfg.train.num_steps = 6
        cfg.train.batch_size = 16
        cfg.train.log_every = 2
        cfg.train.checkpoint_every = 3
    return cfg

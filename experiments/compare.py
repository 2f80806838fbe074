"""The paper's comparison (baselines, G-E, MG-E, GoalRank and its ablations), CPU-sized.

    python -m goalrank_jax.comparison --config=experiments/compare.py --workdir=runs/compare
    python -m goalrank_jax.comparison --config=experiments/compare.py:dataset=ml100k \
        --config.data.manual_dir=DIR --workdir=runs/compare_ml100k
    python -m goalrank_jax.comparison --config=experiments/compare.py:smoke --workdir=runs/cmp_smoke

Args (after the colon, comma-separated) as experiments/goalrank.py: ``smoke`` (tiny sizes, a few
steps, 2 seeds; seconds per method) and ``dataset=NAME``. Every field of experiments/goalrank.py
is here too (data, the shared reward model, the GoalRank generator and its GRO defaults), plus
the ``compare`` group documented in goalrank_jax/comparison/config.py. Override any of them
with --config.<field>=<value>, e.g. --config.compare.seeds=1,2,3,4,5.

CPU sizing: every generator-like model (GoalRank, the supervised AR generator, DNN, PRM, NAR)
has the width of the `generator` group (D=64, the reward model's); GoalRank uses the fast
generator variant. Every ranker trains up to the same number of epochs, is evaluated on the
validation split every epoch and keeps its best validation N@L (`compare.select_metric`), with
early stopping; the reward model trains as in experiments/goalrank.py.
"""

import importlib.util
import os

import ml_collections

from goalrank_jax import configs
from goalrank_jax.comparison import config as comparison_config

# ml_collections loads experiment files by path, so the sibling file is loaded the same way.
_spec = importlib.util.spec_from_file_location(
    "experiments_goalrank", os.path.join(os.path.dirname(os.path.abspath(__file__)), "goalrank.py")
)
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    dataset, smoke = base.parse_args(arg)
    cfg = base.get_config(arg)
    cfg.generator.variant = "fast"  # Fast generator: candidates encoded once per request.
    cfg.compare = ml_collections.ConfigDict(configs.to_dict(comparison_config.ComparisonConfig()))
    cmp = cfg.compare
    cmp.seeds = (1, 2, 3)  # One repetition of every ranker's training per seed.
    cmp.shared_reward_model = True  # One evaluator (seed `seed`) for every seed and method.
    cmp.methods = comparison_config.METHODS  # dnn prm supervised_ar nar4rec_ge pier_ge mge goalrank
    cmp.ablations = comparison_config.ABLATIONS  # group_size loss_form group_construction
    # K of the group-size sweep (the default K is gro's: 8 on synthetic, 16 on real data). The
    # default groups are mixed: each holds the 4 auxiliary lists, so the sweep starts at K = 5
    # (one sampled list).
    cmp.group_sizes = (5, 8, 16, 32, 64)
    cmp.mge_ks = (1, 3, 5, 10, 20, 50, 100)  # Numbers of MG-E generators.
    cmp.num_proposals = 100  # Lists each G-E generator proposes per request.
    cmp.split = "test"
    # DNN, PRM and NAR baselines: BCE / likelihood on the logged feedback.
    # Every ranker (DNN, PRM, NAR, the supervised AR generator, every GoalRank run) is selected
    # on its own validation N@L, evaluated every epoch, under the same budget in epochs as the
    # GoalRank generator (experiments/goalrank.py: up to 20 epochs with patience 3 on the
    # synthetic world, up to 60 with patience 6 on real logs). The pure-GRO ablation
    # (goalrank_wG0) too: train.select_metric's "auto" rule (the evaluator's reward for a run
    # without a label term) applies to goalrank_jax.main, not to the comparison's rankers.
    cmp.select_metric = f"N@{cfg.data.list_len}"
    cmp.baseline_train.num_epochs = cfg.train.num_epochs
    cmp.baseline_train.eval_every_epochs = cfg.train.eval_every_epochs
    cmp.baseline_train.patience = cfg.train.patience
    cmp.baseline_train.batch_size = 128
    cmp.baseline_train.log_every = 100
    cmp.baseline_train.checkpoint_every = 500
    cmp.baseline_train.optim.learning_rate = 3e-3
    if smoke:
        cmp.seeds = (1, 2)
        cfg.gro.auxiliary = ("logged", "reward_model_greedy")  # K=4: two sampled lists when mixed
        cmp.group_sizes = (3, 4)
        cmp.mge_ks = (1, 3, 8)
        cmp.num_proposals = 4
        cmp.baseline_train.num_steps = 4
        cmp.baseline_train.num_epochs = 0
        cmp.baseline_train.eval_every_epochs = 0
        cmp.baseline_train.patience = 0
        cmp.baseline_train.eval_every = 0
        cmp.baseline_train.batch_size = 16
        cmp.baseline_train.log_every = 2
        cmp.baseline_train.checkpoint_every = 2
    del dataset
    return cfg

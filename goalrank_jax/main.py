"""Command-line entry point.

    python -m goalrank_jax.main --config=experiments/goalrank.py --workdir=runs/goalrank
    python -m goalrank_jax.main --config=experiments/goalrank.py:smoke --workdir=runs/smoke \
        --config.train.num_steps=20

Any config field can be overridden with ``--config.<path>=<value>``. Running the same command
again on the same workdir resumes: finished stages are skipped, an interrupted stage continues
from its latest checkpoint.
"""

from __future__ import annotations

import functools
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from goalrank_jax import configs, run
from goalrank_jax.data.raw_formats import RawDataError

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file, e.g. experiments/goalrank.py[:smoke].",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics, TensorBoard events and results.json."
)
_PREPARE_ONLY = flags.DEFINE_bool(
    "prepare_only",
    False,
    "Only prepare the dataset (TFDS files under <workdir>/tfds or data.data_dir), print its "
    "statistics and exit.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        config = configs.from_config_dict(_CONFIG.value, jax.device_count())
    except ValueError as err:
        print(f"error: invalid config: {err}", file=sys.stderr)
        sys.exit(2)
    log_fn = functools.partial(print, flush=True)
    try:
        if _PREPARE_ONLY.value:
            run.prepare_data(config, _WORKDIR.value, log_fn)
        else:
            run.train_and_evaluate(config, _WORKDIR.value, log_fn=log_fn)
    except RawDataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)

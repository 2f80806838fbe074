"""The scaling study's command line (:mod:`goalrank_jax.scaling.study` does the work).

    python -m goalrank_jax.scaling --config=experiments/scaling.py --workdir=runs/scaling
    python -m goalrank_jax.scaling --config=experiments/scaling.py --workdir=runs/scaling \
        --sizes=0.1m,0.3m,1m --variants=prefix,fast --mge_results=runs/compare/comparison.json
    python -m goalrank_jax.scaling --config=experiments/scaling.py --workdir=runs/scaling_10m \
        --sizes=10m --earlier_reports=runs/scaling/scaling.json

``--config``, ``--workdir`` and the multi-host flags are goalrank_jax.main's (imported, not
redefined); the flags below are the study's own. Exit codes as ``goalrank_jax.main``.
"""

from __future__ import annotations

import shlex
import sys

import jax
from absl import app, flags, logging

from goalrank_jax import main as main_lib
from goalrank_jax.checkpointing import CheckpointError
from goalrank_jax.data.raw_formats import RawDataError
from goalrank_jax.scaling import study as study_lib

_CONFIG = main_lib.CONFIG
_WORKDIR = main_lib.WORKDIR
_SIZES = flags.DEFINE_list("sizes", None, "Size presets to train (default: scaling.sizes).")
_VARIANTS = flags.DEFINE_list("variants", None, "Generator variants (default: scaling.variants).")
_SEEDS = flags.DEFINE_list(
    "seeds",
    None,
    "Generator seeds of every size up to scaling.seeds_up_to (default: scaling.seeds).",
)
_MGE = flags.DEFINE_string("mge_results", None, "comparison.json with an MG-E curve to plot.")
_EARLIER = flags.DEFINE_list(
    "earlier_reports",
    None,
    "scaling.json files of earlier invocations of the same study in other workdirs: their runs "
    "join the report and time the estimate (default: scaling.earlier_reports).",
)
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rewrite the report from runs done.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:  # main's multi-host flags (docs/launch.md): the study runs on every host alike
        main_lib.initialize_distributed(
            main_lib.JAX_DISTRIBUTED.value,
            main_lib.COORDINATOR_ADDRESS.value,
            main_lib.NUM_PROCESSES.value,
            main_lib.PROCESS_ID.value,
        )
    except ValueError as err:
        print(f"error: invalid flags: {err}", file=sys.stderr)
        sys.exit(main_lib.EXIT_INVALID_INPUT)
    try:
        experiment, study = study_lib.from_config_dict(
            _CONFIG.value,
            jax.device_count(),
            sizes=_SIZES.value,
            variants=_VARIANTS.value,
            seeds=_SEEDS.value,
            mge_results=_MGE.value,
            earlier_reports=_EARLIER.value,
        )
    except ValueError as err:
        print(f"error: invalid config: {err}", file=sys.stderr)
        sys.exit(main_lib.EXIT_INVALID_INPUT)
    command = "python -m goalrank_jax.scaling " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    log_fn = main_lib.chief_log_fn
    with main_lib.exit_codes((RawDataError, CheckpointError, ValueError)):
        study_lib.run_study(experiment, study, _WORKDIR.value, log_fn, command, _REPORT_ONLY.value)


if __name__ == "__main__":
    app.run(main, flags_parser=main_lib.parse_flags)

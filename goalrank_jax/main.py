"""Command-line entry point.

    python -m goalrank_jax.main --config=experiments/goalrank.py --workdir=runs/goalrank
    python -m goalrank_jax.main --config=experiments/goalrank.py:smoke --workdir=runs/smoke \
        --config.train.num_steps=20

Any config field can be overridden with ``--config.<path>=<value>``. Running the same command
again on the same workdir resumes: finished stages are skipped, an interrupted stage continues
from its latest checkpoint.

Multi-host (docs/launch.md): start the same command on every host with ``--jax_distributed``.
On Cloud TPU (and SLURM / Open MPI clusters) ``jax.distributed.initialize()`` finds the other
processes by itself; elsewhere give ``--coordinator_address=HOST:PORT`` (process 0's host, a
free port), ``--num_processes`` and a different ``--process_id`` on each host. The workdir must
be a directory every host sees (checkpoints are written by all processes together); only
process 0 prints progress and writes metrics, config.json and results.json.

Exit codes: 0 done; 1 a bug (traceback); 2 invalid input, named in the message (config field,
raw data file and line, built requests, a checkpoint that does not fit or is damaged); 3 the
loss stayed non-finite for ``max_nonfinite_steps`` steps (the latest checkpoint is the last good
state); 143 stopped by SIGTERM after saving a checkpoint (rerun to resume).
"""

from __future__ import annotations

import contextlib
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from goalrank_jax import configs, run
from goalrank_jax.checkpointing import CheckpointError
from goalrank_jax.data.raw_formats import RawDataError
from goalrank_jax.train import NonFiniteTrainingError, TrainingInterrupted

EXIT_INVALID_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_SIGTERM = 128 + 15

CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file, e.g. experiments/goalrank.py[:smoke].",
    lock_config=True,
)
WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics, TensorBoard events and results.json."
)
PREPARE_ONLY = flags.DEFINE_bool(
    "prepare_only",
    False,
    "Only prepare the dataset (TFDS files under <workdir>/tfds or data.data_dir), print its "
    "statistics and exit.",
)
JAX_DISTRIBUTED = flags.DEFINE_bool(
    "jax_distributed",
    False,
    "Multi-process run: call jax.distributed.initialize() before anything else. Start the same "
    "command once per host (one process per host, using all its accelerators).",
)
COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address",
    None,
    "With --jax_distributed: HOST:PORT of process 0 (any free port), the same on every process. "
    "Omit on Cloud TPU, SLURM and Open MPI, where JAX detects it.",
)
NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes",
    None,
    "With --jax_distributed: the number of processes (hosts). Omit where JAX detects it.",
)
PROCESS_ID = flags.DEFINE_integer(
    "process_id",
    None,
    "With --jax_distributed: this process's index in [0, num_processes); 0 is the coordinator. "
    "Omit where JAX detects it.",
)
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing where a bad flag (a config override naming no config field, an
    experiment file or arg that fails) is reported as invalid input, exit code 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        problem = f"invalid flags: {err}"
    except (AttributeError, KeyError) as err:
        # ml_collections reports an override of a missing field as KeyError('name\nDid you
        # mean ...') wrapped in an AttributeError.
        while err.__context__ is not None and not (err.args and isinstance(err.args[0], str)):
            err = err.__context__
        detail = " ".join((str(err.args[0]) if err.args else str(err)).splitlines())
        key = detail.split(" ", 1)[0].strip("'\"")
        named = [a.split("=", 1)[0] for a in argv if a.startswith("--config.") and key in a]
        flag = named[0] if named else "a --config.* override"
        problem = f"invalid flag {flag}: no such config field; {detail}"
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(EXIT_INVALID_INPUT)


def initialize_distributed(
    enabled: bool,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """``jax.distributed.initialize`` when ``enabled``; must run before any other JAX call.

    Raises:
      ValueError: process flags given without ``enabled``, or only some of them.
    """
    given = {
        "--coordinator_address": coordinator_address,
        "--num_processes": num_processes,
        "--process_id": process_id,
    }
    named = [name for name, value in given.items() if value is not None]
    if not enabled:
        if named:
            raise ValueError(f"{', '.join(named)} need(s) --jax_distributed.")
        return
    if named and len(named) != len(given):
        missing = [name for name in given if name not in named]
        raise ValueError(
            f"{', '.join(named)} given without {', '.join(missing)}: give all three, or none "
            "where JAX detects them (Cloud TPU, SLURM, Open MPI)."
        )
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id ({process_id}) must be in [0, {num_processes}).")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )


def chief_log_fn(message: str) -> None:
    """Prints (flushed) on process 0 only: every process runs the same steps."""
    if jax.process_index() == 0:
        print(message, flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        initialize_distributed(
            JAX_DISTRIBUTED.value,
            COORDINATOR_ADDRESS.value,
            NUM_PROCESSES.value,
            PROCESS_ID.value,
        )
    except ValueError as err:
        print(f"error: invalid flags: {err}", file=sys.stderr)
        sys.exit(EXIT_INVALID_INPUT)
    try:
        config = configs.from_config_dict(CONFIG.value, jax.device_count())
    except ValueError as err:
        print(f"error: invalid config: {err}", file=sys.stderr)
        sys.exit(EXIT_INVALID_INPUT)
    log_fn = chief_log_fn
    with exit_codes():
        if PREPARE_ONLY.value:
            run.prepare_data(config, WORKDIR.value, log_fn)
        else:
            run.train_and_evaluate(config, WORKDIR.value, log_fn=log_fn)


@contextlib.contextmanager
def exit_codes(invalid_input: tuple[type[Exception], ...] = (RawDataError, CheckpointError)):
    """Turns the pipeline's known failures into one message and the exit codes of this module's
    docstring (``invalid_input`` -> 2, non-finite training -> 3, SIGTERM -> 143)."""
    try:
        yield
    except invalid_input as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_INVALID_INPUT)
    except NonFiniteTrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_NON_FINITE)
    except TrainingInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        sys.exit(EXIT_SIGTERM)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

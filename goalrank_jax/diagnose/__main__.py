"""``python -m goalrank_jax.diagnose``: the measures of ``goalrank_jax.diagnose`` as JSON."""

from __future__ import annotations

import contextlib
import json
import sys

from absl import app, flags, logging

from goalrank_jax.checkpointing import CheckpointError
from goalrank_jax.diagnose import diagnose

WORKDIR = flags.DEFINE_string(
    "workdir", None, "Workdir of a finished goalrank_jax.main run or goalrank_jax.comparison."
)
RUN = flags.DEFINE_string(
    "run",
    "",
    "Comparison workdirs only: which GoalRank run (goalrank, an ablation such as goalrank_K16, "
    "supervised_ar, goalrank_prefix).",
)
COMPARISON_SEED = flags.DEFINE_integer(
    "comparison_seed", 0, "Comparison workdirs only: the seed of --run (0 = the first seed)."
)
SPLIT = flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Split measured.")
MAX_EXAMPLES = flags.DEFINE_integer(
    "max_examples", 0, "Requests of the split used (0 = the run's eval.max_examples)."
)
NUM_SAMPLES = flags.DEFINE_integer(
    "num_samples", 0, "Sampled lists per request (0 = the run's gro.group_size)."
)
SEED = flags.DEFINE_integer("seed", 0, "Seed of the random and sampled lists.")
LIST_EFFECT_REQUESTS = flags.DEFINE_integer(
    "list_effect_requests",
    500,
    "Requests of the split behind rm_list_effects (N^2 lists each; 0 = as many as the rest).",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        # Standard output carries the JSON alone: whatever the libraries print (TFDS announces
        # a dataset it prepares on stdout) goes to standard error.
        with contextlib.redirect_stdout(sys.stderr):
            out = diagnose(
                WORKDIR.value,
                SPLIT.value,
                MAX_EXAMPLES.value,
                NUM_SAMPLES.value,
                SEED.value,
                list_effect_requests=LIST_EFFECT_REQUESTS.value,
                run_name=RUN.value,
                comparison_seed=COMPARISON_SEED.value,
            )
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main)

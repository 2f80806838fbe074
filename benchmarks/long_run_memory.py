"""Long-run stability: resident memory and speed over a 5,000-step generator stage.

    python benchmarks/long_run_memory.py                       # smoke config, 5,000 steps
    python benchmarks/long_run_memory.py --steps=20000 --bound_mib=64

Runs the whole smoke pipeline (``experiments/goalrank.py:smoke``) with the generator stage
lengthened to ``steps`` steps, checkpoints every ``checkpoint_every`` steps and metrics every
``log_every`` steps, exactly as ``goalrank_jax.main`` would, and samples the resident set size
(RSS) of the process at every progress line. Prints one JSON object: RSS at process start, at the
start of the generator stage, after the first logged window (compilation done) and at the end;
the growth from the end of warm-up (``warmup_steps``) to the end, against ``bound_mib``; and the
steps per second of every window; exits with status 1 when the growth exceeds the bound. A leak
of 10 KB per step would add about 40 MiB over 4,000 steps, so the default bound of 32 MiB would
catch it.
"""

import contextlib
import json
import os
import re
import resource
import sys
import tempfile
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from goalrank_jax import configs, run

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/goalrank.py:smoke", "Experiment config."
)
_STEPS = flags.DEFINE_integer("steps", 5000, "Generator steps.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 250, "Steps per logged window.")
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
_WARMUP = flags.DEFINE_integer("warmup_steps", 500, "Steps after which RSS must stay flat.")
_BOUND = flags.DEFINE_float("bound_mib", 32.0, "Allowed RSS growth after warm-up, MiB.")
_WORKDIR = flags.DEFINE_string("workdir", "", "Run directory ('' = a temporary one).")

PROGRESS = re.compile(r"^\[generator\] step (\d+)/")


def rss_mib() -> float:
    """Current resident set size (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def main(_):
    cfg = _CONFIG.value
    cfg.train.num_steps = _STEPS.value
    cfg.train.log_every = _LOG_EVERY.value
    cfg.train.checkpoint_every = _CHECKPOINT_EVERY.value
    config = configs.from_config_dict(cfg, jax.device_count())
    samples = {"process_start": rss_mib()}
    windows = []
    last = {"step": 0, "time": None}

    def log_fn(line):
        print(line, file=sys.stderr, flush=True)
        now = time.time()
        if line.startswith("[generator] training steps"):
            samples["generator_start"] = rss_mib()
            last["time"] = now
        match = PROGRESS.match(line)
        if match:
            step, memory = int(match.group(1)), rss_mib()
            rate = (step - last["step"]) / max(now - last["time"], 1e-9)
            windows.append({"step": step, "steps_per_second": round(rate, 2), "rss_mib": memory})
            last.update(step=step, time=now)

    start = time.time()
    # TFDS prints its progress to stdout: keep stdout for the JSON result.
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(sys.stderr):
        run.train_and_evaluate(config, _WORKDIR.value or scratch, log_fn=log_fn)
    warm = next(w for w in windows if w["step"] >= _WARMUP.value)
    growth = windows[-1]["rss_mib"] - warm["rss_mib"]
    rates = [w["steps_per_second"] for w in windows[1:]]
    result = {
        "benchmark": "long_run_memory",
        "config": "experiments/goalrank.py:smoke",
        "generator_steps": _STEPS.value,
        "batch_size": config.train.batch_size,
        "checkpoint_every": _CHECKPOINT_EVERY.value,
        "devices": [str(d) for d in jax.devices()],
        "rss_mib": {
            "process_start": round(samples["process_start"], 1),
            "generator_start": round(samples["generator_start"], 1),
            "after_first_window": round(windows[0]["rss_mib"], 1),
            f"at_step_{warm['step']}": round(warm["rss_mib"], 1),
            "end": round(windows[-1]["rss_mib"], 1),
            "peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, 1),
        },
        "rss_growth_after_warmup_mib": round(growth, 1),
        "bound_mib": _BOUND.value,
        "within_bound": growth <= _BOUND.value,
        "steps_per_second": {
            "first_window_with_compile": windows[0]["steps_per_second"],
            "median_after": sorted(rates)[len(rates) // 2] if rates else None,
            "first_half_mean": round(sum(rates[: len(rates) // 2]) / max(len(rates) // 2, 1), 2),
            "second_half_mean": round(
                sum(rates[len(rates) // 2 :]) / max(len(rates) - len(rates) // 2, 1), 2
            ),
        },
        "windows": [{**w, "rss_mib": round(w["rss_mib"], 1)} for w in windows],
        "wall_time_s": round(time.time() - start, 1),
    }
    print(json.dumps(result, indent=1))
    if not result["within_bound"]:
        sys.exit(f"RSS grew by {growth:.1f} MiB after warm-up, more than {_BOUND.value} MiB")


if __name__ == "__main__":
    app.run(main)

"""Shared pieces of the benchmarks that drive whole runs: a logged subprocess and the diagnosis
command's JSON, cached beside the run.

Benchmark scripts run as ``python benchmarks/<name>.py``, which puts this directory on
``sys.path``; they import this module as ``bench_runs``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

MAIN = [sys.executable, "-m", "goalrank_jax.main"]


def run_logged(command: list[str], log_path: str) -> None:
    """Runs ``command`` with its output appended to ``log_path``; exits on failure."""
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}; see {log_path}")


def diagnose_cached(workdir: str, split: str, log_path: str) -> dict:
    """``python -m goalrank_jax.diagnose`` of a finished run on ``split``, cached in
    ``<workdir>/diagnose_<split>.json``."""
    path = os.path.join(workdir, f"diagnose_{split}.json")
    if not os.path.exists(path):
        command = [sys.executable, "-m", "goalrank_jax.diagnose", f"--workdir={workdir}"]
        with open(path + ".tmp", "w") as out, open(log_path, "a") as log:
            done = subprocess.run(command + [f"--split={split}"], stdout=out, stderr=log)
        if done.returncode:
            raise SystemExit(f"diagnose failed on {workdir}; see {log_path}")
        os.replace(path + ".tmp", path)
    with open(path) as f:
        return json.load(f)


def copy_stage(source_dir: str, run_dir: str, stage: str) -> None:
    """Copies a finished stage's directory into ``run_dir`` (once); copy then rename, so an
    interrupted copy never looks like a finished stage."""
    target = os.path.join(run_dir, stage)
    if not os.path.exists(target):
        os.makedirs(run_dir, exist_ok=True)
        shutil.copytree(os.path.join(source_dir, stage), target + ".copying")
        os.replace(target + ".copying", target)


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)

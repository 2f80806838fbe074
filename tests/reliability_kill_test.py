"""Kill test: the smoke pipeline runs as ``python -m goalrank_jax.main`` in a subprocess and is
interrupted four times, restarted after each: SIGKILL while a reward-model checkpoint is being
written, SIGKILL while a generator checkpoint is being written, SIGTERM (graceful: the run stops
at a step boundary after writing a checkpoint of that step, exit code 143), and SIGKILL between
two generator checkpoints. Every restart resumes from the latest complete checkpoint, no
checkpoint directory is ever damaged, and the final parameters and results equal those of an
uninterrupted run bit for bit.

All processes share one persistent JAX compilation cache, so only the first one compiles.
"""

import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("reward_model", "generator")
TMP_MARK = ".orbax-checkpoint-tmp"
NUM_STEPS = 6  # of both stages in the smoke config
TIMEOUT = 300


def _is_wall_time(key: str) -> bool:
    """Results that are wall-clock seconds, which no two runs share."""
    return key == "wall_time_s" or key.endswith("/train_seconds")


class Run:
    """One ``goalrank_jax.main`` smoke process; a thread collects its output lines."""

    def __init__(self, root, workdir):
        env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            JAX_COMPILATION_CACHE_DIR=os.path.join(root, "jax_cache"),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
        )
        command = [
            sys.executable,
            "-m",
            "goalrank_jax.main",
            "--config=experiments/goalrank.py:smoke",
            f"--workdir={workdir}",
            f"--config.data.data_dir={os.path.join(root, 'tfds')}",
        ]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate, timeout=TIMEOUT) -> bool:
        """Polls ``predicate`` every millisecond until it holds or the process ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if self.proc.poll() is not None:
                return predicate()
            time.sleep(0.001)
        return False

    def finish(self, timeout=TIMEOUT) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def saw(self, prefix) -> bool:
        return any(line.startswith(prefix) for line in self.lines)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


def _ckpt_dir(workdir, stage):
    return os.path.join(workdir, stage, "checkpoints")


def _entries(workdir, stage):
    try:
        return os.listdir(_ckpt_dir(workdir, stage))
    except FileNotFoundError:
        return []


def _writing(workdir, stage):
    return any(TMP_MARK in name for name in _entries(workdir, stage))


def _finalized(workdir, stage):
    return sorted(int(name) for name in _entries(workdir, stage) if name.isdigit())


def _complete(workdir):
    return {stage: _finalized(workdir, stage) for stage in STAGES}


def _leftovers(workdir):
    return {stage: [n for n in _entries(workdir, stage) if not n.isdigit()] for stage in STAGES}


def _assert_checkpoints_intact(workdir):
    """Every complete step directory restores: arrays and the JSON data item."""
    for stage in STAGES:
        for step in _finalized(workdir, stage):
            path = os.path.join(_ckpt_dir(workdir, stage), str(step))
            state = ocp.StandardCheckpointer().restore(os.path.join(path, "state"))
            assert int(state["step"]) == step, (stage, step)
            with open(os.path.join(path, "data", "metadata")) as f:
                assert "iterator" in json.load(f), (stage, step)


def _assert_resumed_from_latest(run, expected, every_stage=True):
    """``expected``: stage -> its latest complete step before the restart (or None). A killed
    run (``every_stage=False``) is only checked on the stages it reached."""
    for stage, step in expected.items():
        if not every_stage and not run.saw(f"[{stage}] "):
            continue
        if step is None:
            assert run.saw(f"[{stage}] training steps 1..{NUM_STEPS}"), (stage, run.log)
        elif step >= NUM_STEPS:
            assert run.saw(f"[{stage}] finished earlier at step {step}"), (stage, run.log)
        else:
            assert run.saw(f"[{stage}] resuming from checkpoint at step {step}"), (stage, run.log)


def _params(workdir, stage):
    path = os.path.join(_ckpt_dir(workdir, stage), str(NUM_STEPS), "state")
    return jax.tree_util.tree_leaves(ocp.StandardCheckpointer().restore(path)["params"])


def _assert_same_final_state(workdir, reference):
    for stage in STAGES:
        got, want = _params(workdir, stage), _params(reference, stage)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    results = [json.load(open(os.path.join(w, "results.json"))) for w in (workdir, reference)]
    for key in results[1]:
        if not _is_wall_time(key):
            assert results[0][key] == results[1][key], key
    assert not any(_leftovers(workdir).values()), _leftovers(workdir)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("kill"))


@pytest.fixture(scope="module")
def reference(root):
    """An uninterrupted run (it also prepares the shared dataset and fills the compile cache)."""
    workdir = os.path.join(root, "reference")
    run = Run(root, workdir)
    assert run.finish() == 0, run.log
    return workdir


def test_killed_and_terminated_runs_resume_to_the_uninterrupted_result(root, reference):
    workdir = os.path.join(root, "interrupted")
    reward_model, generator = STAGES

    def new_generator_checkpoint(run, start):
        return max(_finalized(workdir, generator), default=0) > (start[generator] or 0)

    # (what, signal, moment(run, latest complete step per stage at launch)), one run each.
    interruptions = [
        (
            "SIGKILL while a reward-model checkpoint is written",
            signal.SIGKILL,
            lambda run, start: _writing(workdir, reward_model),
        ),
        (
            "SIGKILL while a generator checkpoint is written",
            signal.SIGKILL,
            lambda run, start: _writing(workdir, generator),
        ),
        (
            "SIGTERM as the generator starts training",
            signal.SIGTERM,
            lambda run, start: run.saw(f"[{generator}] training steps"),
        ),
        ("SIGKILL between generator checkpoints", signal.SIGKILL, new_generator_checkpoint),
    ]
    killed_while_writing = []
    expected = dict.fromkeys(STAGES)
    for what, signum, moment in interruptions:
        run = Run(root, workdir)
        reached = functools.partial(moment, run, dict(expected))
        assert run.wait_for(reached), f"never reached the moment {what!r}:\n{run.log}"
        run.proc.send_signal(signum)
        code = run.finish()
        _assert_resumed_from_latest(run, expected, every_stage=False)
        if signum == signal.SIGKILL:
            assert code == -signal.SIGKILL, run.log
            if "written" in what:
                killed_while_writing.append(any(_writing(workdir, stage) for stage in STAGES))
        else:
            assert code == 128 + signal.SIGTERM, run.log
            stop = re.search(
                rf"\[{generator}\] SIGTERM received: stopped after step (\d+)/", run.log
            )
            assert stop and "Rerun the same command to resume" in run.log, run.log
            # The stop wrote a checkpoint of the step it reached, completely.
            assert _finalized(workdir, generator)[-1] == int(stop.group(1))
            assert not _writing(workdir, generator)
        print(f"{what}: complete steps {_complete(workdir)}, left {_leftovers(workdir)}")
        _assert_checkpoints_intact(workdir)
        expected = {stage: max(steps, default=None) for stage, steps in _complete(workdir).items()}
    assert any(killed_while_writing), "no SIGKILL landed inside a checkpoint write"
    run = Run(root, workdir)
    assert run.finish() == 0, run.log
    _assert_resumed_from_latest(run, expected)
    _assert_checkpoints_intact(workdir)
    _assert_same_final_state(workdir, reference)

"""End to end: the smoke experiment trains every stage, writes its outputs, skips finished
stages on a rerun, and a run interrupted mid-stage and resumed equals an uninterrupted one."""

import importlib.util
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from goalrank_jax import configs, run

EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "experiments", "goalrank.py")


def _is_wall_time(key: str) -> bool:
    """Results that are wall-clock seconds, which no two runs share."""
    return key == "wall_time_s" or key.endswith("/train_seconds")


def _config(data_dir, **train):
    spec = importlib.util.spec_from_file_location("goalrank_experiment", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config("smoke")
    cfg.data.data_dir = data_dir
    # An interruption is simulated by a shorter budget, whose end would be one more validation
    # evaluation under model selection: the uninterrupted run is compared without selection
    # (selection across a resume: tests/model_selection_test.py).
    cfg.train.select_metric = ""
    for key, value in train.items():
        cfg.train[key] = value
    return configs.from_config_dict(cfg)


def _final_params(workdir, step):
    path = os.path.join(workdir, "generator", "checkpoints", str(step), "state")
    return ocp.StandardCheckpointer().restore(path)["params"]


def _losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["generator/loss"] for r in rows if "generator/loss" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data_dir = str(root / "tfds")
    logs = []
    full = str(root / "full")
    results_full = run.train_and_evaluate(_config(data_dir), full, logs.append)
    resumed = str(root / "resumed")
    run.train_and_evaluate(_config(data_dir, num_steps=4), resumed, logs.append)
    resume_logs = []
    results_resumed = run.train_and_evaluate(_config(data_dir), resumed, resume_logs.append)
    rerun_logs = []
    results_rerun = run.train_and_evaluate(_config(data_dir), full, rerun_logs.append)
    return dict(
        full=full,
        resumed=resumed,
        results_full=results_full,
        results_resumed=results_resumed,
        results_rerun=results_rerun,
        resume_logs=resume_logs,
        rerun_logs=rerun_logs,
    )


def test_outputs_are_written(runs):
    full = runs["full"]
    for name in ("results.json", "metrics.jsonl", "config.json"):
        assert os.path.exists(os.path.join(full, name)), name
    assert os.listdir(os.path.join(full, "tensorboard"))
    results = json.load(open(os.path.join(full, "results.json")))
    for key in (
        "test/H@3",
        "test/N@3",
        "test/M@3",
        "test/F1@3",
        "test/AUC",
        "test/true_reward",
        "test/oracle_fraction",
    ):
        assert np.isfinite(results[key]), key
    names = ("goalrank", "logged", "random", "reward_model_greedy", "true_relevance_sort", "oracle")
    for policy in names:
        assert f"test/{policy}/true_reward" in results
    assert results["test/oracle/oracle_fraction"] == pytest.approx(1.0, abs=1e-6)
    # No policy beats the beam oracle by more than the beam's own search slack.
    for key, value in results.items():
        if key.endswith("/oracle_fraction"):
            assert 0.0 < value <= 1.05, key


def test_rerun_skips_finished_stages(runs):
    logs = "\n".join(runs["rerun_logs"])
    assert "[reward_model] finished earlier at step 6" in logs
    assert "[generator] finished earlier at step 6" in logs
    for key, value in runs["results_full"].items():
        if not _is_wall_time(key):
            assert runs["results_rerun"][key] == value, key


def test_resumed_run_equals_uninterrupted(runs):
    logs = "\n".join(runs["resume_logs"])
    assert "[generator] resuming from checkpoint at step 4" in logs
    full = jax.tree_util.tree_leaves(_final_params(runs["full"], 6))
    resumed = jax.tree_util.tree_leaves(_final_params(runs["resumed"], 6))
    assert len(full) == len(resumed)
    for a, b in zip(full, resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    assert _losses(runs["full"])[6] == _losses(runs["resumed"])[6]
    for key, value in runs["results_full"].items():
        if not _is_wall_time(key):
            assert runs["results_resumed"][key] == value, key


def test_diagnose_agrees_with_the_run_evaluation(runs):
    # The diagnosis command restores the run's states and recomputes the greedy list's metrics
    # with its own code; the run's evaluation of the same split is the independent reference.
    from goalrank_jax import diagnose

    out = diagnose.diagnose(runs["full"], split="test", log_fn=lambda _: None)
    results = runs["results_full"]
    assert out["requests"] > 0
    assert out["true_reward_greedy"] == pytest.approx(results["test/true_reward"], rel=1e-4)
    assert out["N@3_greedy"] == pytest.approx(results["test/N@3"], rel=1e-4)
    assert out["rm_reward"]["generator_greedy"] == pytest.approx(
        results["test/rm_reward"], rel=1e-4
    )
    assert np.isfinite(out["true_reward_first_step_sort"])
    diff = out["greedy_minus_first_step_sort"]
    assert diff["N@3"]["mean"] == pytest.approx(out["N@3_greedy"] - out["N@3_first_step_sort"])
    assert diff["true_reward"]["mean"] == pytest.approx(
        out["true_reward_greedy"] - out["true_reward_first_step_sort"], abs=1e-6
    )
    assert 0.0 <= out["policy_entropy"] <= out["uniform_entropy"] + 1e-5
    # Step 1 of the greedy list is the first step itself: its AUC is the first-step scores'.
    steps = out["step_auc_along_greedy"]
    assert len(steps["step"]) == len(steps["first_step_scores"]) == 3
    assert steps["step"][0] == pytest.approx(steps["first_step_scores"][0], abs=1e-6)
    assert all(0.0 <= v <= 1.0 for v in steps["step"] + steps["first_step_scores"])
    assert out["stage_steps"]["generator"] == 6

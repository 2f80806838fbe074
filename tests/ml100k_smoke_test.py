"""Smoke run of the whole pipeline on MovieLens-100K (real data, simulator track).

Needs ml-100k.inter in the directory named by $GOALRANK_ML100K_DIR (``.ci/run`` fetches it with
``scripts/fetch_ml100k.sh``). Skipped when the variable is unset, except under CI (``$CI`` set),
where a missing file is a failure.
"""

import importlib.util
import json
import os

import numpy as np
import pytest

from goalrank_jax import configs, run
from goalrank_jax.data import real_data

EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "experiments", "goalrank.py")
ML100K_DIR = os.environ.get("GOALRANK_ML100K_DIR", "")

if not ML100K_DIR and not os.environ.get("CI"):
    pytest.skip(
        "set GOALRANK_ML100K_DIR (bash scripts/fetch_ml100k.sh prints it) to run the ML-100K smoke",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    assert ML100K_DIR, "CI must export GOALRANK_ML100K_DIR (see .ci/run)"
    spec = importlib.util.spec_from_file_location("goalrank_experiment", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config("dataset=ml100k,smoke")
    cfg.data.manual_dir = ML100K_DIR
    config = configs.from_config_dict(cfg)
    workdir = str(tmp_path_factory.mktemp("ml100k"))
    logs = []
    results = run.train_and_evaluate(config, workdir, log_fn=logs.append)
    return config, workdir, results, logs


def test_ml100k_statistics(smoke):
    config, workdir, _, _ = smoke
    builder = real_data.prepare(config.data, os.path.join(workdir, "tfds"), log_fn=lambda _: None)
    stats = builder.info.metadata["stats"]
    # ML-100K: 100 000 ratings of 943 users; every user has >= 20 ratings.
    assert stats["raw_interactions"] == 100_000
    assert 900 <= stats["users"] <= 943
    assert stats["requests"] == sum(stats[f"requests_{s}"] for s in ("train", "validation", "test"))
    assert 0.0 < stats["positive_rate"] < 1.0


def test_ml100k_results_have_both_tracks(smoke):
    config, workdir, results, logs = smoke
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f) == pytest.approx(results, nan_ok=True)
    list_len = config.data.list_len
    for policy in ("goalrank", "reward_model_greedy", "logged", "random"):
        for metric in (f"H@{list_len}", f"N@{list_len}", "AUC", "sim_reward"):
            assert np.isfinite(results[f"test/{policy}/{metric}"]), (policy, metric)
    assert "test/goalrank/true_reward" not in results  # no true model on real data
    assert results["test/logged/H@3"] == pytest.approx(1.0)
    assert 0.0 <= results["validation/simulator/AUC"] <= 1.0
    assert any("[simulator] validation AUC" in line for line in logs)

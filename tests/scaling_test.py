"""The scaling study: the smoke study (2 tiny sizes x 1 variant) writes a consistent table, JSON
and plot, shares one reward model, serves a rerun from its cache and refuses a changed config;
plus the pure helpers (time estimate, config diff, step time)."""

import dataclasses
import importlib.util
import json
import math
import os
import re
import shutil

import pytest

from goalrank_jax import config_check
from goalrank_jax.scaling import presets, report
from goalrank_jax.scaling import study as scaling

EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "experiments", "scaling.py")
SIZES = ("0.01m", "0.03m")


def _config_dict(arg="smoke"):
    spec = importlib.util.spec_from_file_location("scaling_experiment", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _configs(data_dir, **train):
    cfg = _config_dict()
    cfg.data.data_dir = data_dir
    for key, value in train.items():
        cfg.train[key] = value
    return scaling.from_config_dict(cfg, sizes=list(SIZES), variants=["fast"])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaling")
    workdir = str(root / "study")
    experiment, config = _configs(str(root / "tfds"))
    logs, rerun_logs = [], []
    document = scaling.run_study(experiment, config, workdir, logs.append, command="test")
    rerun = scaling.run_study(experiment, config, workdir, rerun_logs.append, command="test")
    return dict(
        workdir=workdir,
        root=root,
        document=document,
        rerun=rerun,
        logs="\n".join(logs),
        rerun_logs="\n".join(rerun_logs),
    )


def test_outputs_exist_and_are_consistent(study):
    workdir, runs = study["workdir"], study["document"]["runs"]
    for name in ("scaling.md", "scaling.json", "scaling.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    assert [(r["variant"], r["size"]) for r in runs] == [("fast", s) for s in SIZES]
    params = [r["params_non_embedding"] for r in runs]
    assert params == sorted(params) and params[0] < params[1]
    assert [r["params_total"] for r in runs] == sorted(r["params_total"] for r in runs)
    for run in runs:
        assert 0.0 < run["results"]["test/true_reward"]
        assert 0.0 < run["results"]["test/oracle_fraction"] <= 1.05
        assert run["step_time_s"] > 0 and run["wall_time_s"] > 0
    table = open(os.path.join(workdir, "scaling.md")).read()
    rows = [line for line in table.splitlines() if line.startswith("| fast |")]
    assert len(rows) == len(runs)
    assert "batch size 16, generator steps 6" in table
    # The epochs column: 6 steps of 16 requests over the smoke world's 320 train requests.
    assert "| epochs |" in table
    for run, row in zip(runs, rows, strict=True):
        assert run["results"]["stages/generator/epochs"] == pytest.approx(6 * 16 / 320)
        assert "| 0.3 |" in row
    saved = json.load(open(os.path.join(workdir, "scaling.json")))
    assert [r["size"] for r in saved["runs"]] == list(SIZES)


def test_counts_match_the_trained_generators(study):
    logged = [
        int(n.replace(",", ""))
        for n in re.findall(r"\[generator\] ([\d,]+) parameters", study["logs"])
    ]
    assert logged == [r["params_total"] for r in study["document"]["runs"]]


def test_one_reward_model_is_shared(study):
    logs = study["logs"]
    assert logs.count("[reward_model] training steps") == 1
    assert "[fast_0.03m] [reward_model] finished earlier at step 6; restored, skipping" in logs
    runs = study["document"]["runs"]
    assert [r["reward_model"] for r in runs] == ["trained", "from fast_0.01m"]
    first, second = (r["results"]["test/reward_model_greedy/true_reward"] for r in runs)
    assert first == second
    # The time estimate's timing: from the generator stage's first line to the run's end,
    # which leaves out the reward model that only the first run trained.
    for run in runs:
        assert 0.0 < run["generator_seconds"] < run["run_seconds"]
    # One finished run is no basis for a time estimate (tested with more runs in
    # test_estimate_seconds_left), so the first run's line gives none.
    done = next(line for line in logs.splitlines() if line.startswith("[scaling] fast_0.01m: done"))
    assert "left" not in done


def test_rerun_is_served_from_the_cache(study):
    logs = study["rerun_logs"]
    assert "training steps" not in logs
    assert logs.count(": cached;") == len(SIZES)
    for before, after in zip(study["document"]["runs"], study["rerun"]["runs"], strict=True):
        assert after["cached"] and after["results"] == before["results"]


def test_report_only_with_mge_panel_and_changed_config(study):
    workdir = study["workdir"]
    mge_path = os.path.join(str(study["root"]), "comparison.json")
    curve = [
        {"k": k, "metrics": {"test/true_reward": {"mean": 0.2 + 0.01 * i, "std": 0.01}}}
        for i, k in enumerate((1, 3, 20))
    ]
    with open(mge_path, "w") as f:
        json.dump({"mge_curve": curve}, f)
    experiment, config = _configs(str(study["root"] / "tfds"))
    # Only the first size is planned: the other finished run of the workdir is reported too.
    config = dataclasses.replace(config, mge_results=mge_path, sizes=SIZES[:1])
    document = scaling.run_study(experiment, config, workdir, lambda m: None, report_only=True)
    assert [r["size"] for r in document["runs"]] == list(SIZES)
    assert [p["k"] for p in document["mge_curve"]] == [1, 3, 20]
    assert "| 20 | 0.2200 | 0.0100 |" in open(os.path.join(workdir, "scaling.md")).read()
    # No k chosen on validation in that comparison: the line is the curve's best, said so.
    assert document["mge_reference"] == {
        "label": "best MG-E on this split (k=20, optimistic)",
        "value": pytest.approx(0.22),
    }
    selected = {"mge_selected": {"true_reward": {"mean": 0.205, "std": 0.0, "n": 2}}}
    with open(mge_path, "w") as f:
        json.dump(
            {"mge_curve": curve, "summary": selected, "mge_selection": {"k": {"1": 3, "2": 1}}},
            f,
        )
    document = scaling.run_study(experiment, config, workdir, lambda m: None, report_only=True)
    assert document["mge_reference"] == {
        "label": "MG-E, k chosen on validation (k=3,1)",
        "value": pytest.approx(0.205),
    }
    changed, _ = _configs(str(study["root"] / "tfds"), num_steps=7)
    with pytest.raises(ValueError, match="another config \\(fields train.num_steps\\)"):
        scaling.run_study(changed, config, workdir, lambda m: None)


def test_estimate_seconds_left():
    assert scaling.estimate_seconds_left([], [("fast", 1.0)]) is None
    # One run (or one size per variant with a falling pooled law): no law, no estimate.
    assert scaling.estimate_seconds_left([("fast", 10.0, 5.0)], [("fast", 30.0)]) is None
    falling = [("prefix", 10.0, 50.0), ("fast", 12.0, 5.0)]
    assert scaling.estimate_seconds_left(falling, [("fast", 30.0)]) is None
    # Two runs: the power law through them. 4 times the parameters, 2 times the seconds:
    # seconds = 5 * (params / 10) ** 0.5, so 160 params take 5 * 16 ** 0.5 = 20 s and 90 take
    # 5 * 9 ** 0.5 = 15 s; the other variant borrows the law.
    done = [("fast", 10.0, 5.0), ("fast", 40.0, 10.0)]
    assert scaling.estimate_seconds_left(done, [("fast", 160.0)]) == pytest.approx(20.0)
    assert scaling.estimate_seconds_left(done, [("prefix", 160.0), ("fast", 90.0)]) == (
        pytest.approx(20.0 + 15.0)
    )
    # Never below the fastest finished run.
    assert scaling.estimate_seconds_left(done, [("fast", 0.0)]) == pytest.approx(5.0)
    # A straight line through 10 -> 5 s and 40 -> 10 s would say 160 params take 30 s; the law
    # says 20: slower than linear growth, as step times are over the presets on a CPU.
    assert scaling.estimate_seconds_left(done, [("fast", 160.0)]) < 30.0
    # With three sizes the law is the one through the two largest: 40 -> 10 s and 160 -> 20 s
    # give exponent 0.5 again, so 640 params take 10 * 16 ** 0.5 = 40 s (the smallest run,
    # overhead-bound at 10 params -> 1 s, does not bend it).
    three = [("fast", 10.0, 1.0), ("fast", 40.0, 10.0), ("fast", 160.0, 20.0)]
    assert scaling.estimate_seconds_left(three, [("fast", 640.0)]) == pytest.approx(40.0)


def test_config_differences():
    saved = {"train": {"num_steps": 6, "batch_size": 16}, "seed": 1}
    current = {"train": {"num_steps": 7, "batch_size": 16}, "seed": 1, "extra": 0}
    assert config_check.differences(saved, current) == ["extra", "train.num_steps"]


def test_step_time_leaves_out_the_first_window(tmp_path):
    rows = [
        {"step": 2, "generator/steps_per_second": 0.1},
        {"step": 2, "reward_model/steps_per_second": 9.0},
        {"step": 4, "generator/steps_per_second": 2.0},
        {"step": 6, "generator/steps_per_second": 4.0},
        {"step": 8, "generator/steps_per_second": 5.0},
    ]
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    assert scaling.step_time_s(str(tmp_path)) == pytest.approx(0.25)


def test_bad_study_configs_are_rejected():
    with pytest.raises(ValueError, match="valid presets: 0.01m"):
        scaling.from_config_dict(_config_dict(), sizes=["0.01m", "2m"])
    with pytest.raises(ValueError, match="variants has 'slow'"):
        scaling.from_config_dict(_config_dict(), variants=["slow"])
    with pytest.raises(ValueError, match="takes no size= / variant= arg"):
        _config_dict("smoke,size=1m")
    assert presets.sorted_names(["1m", "0.01m", "1m"]) == ["0.01m", "1m"]


def test_copied_reward_model_keeps_its_source_on_resume(tmp_path):
    experiment, _ = _configs(str(tmp_path / "tfds"))
    workdir = tmp_path / "study"
    source = workdir / "fast_0.01m"
    (source / "reward_model" / "checkpoints" / "7").mkdir(parents=True)
    (source / "config.json").write_text(json.dumps(config_check.config_json(experiment)))
    (source / "results.json").write_text("{}")
    target = workdir / "fast_0.03m"
    config = scaling.run_config(experiment, "0.03m", "fast")
    first = scaling.share_reward_model(str(workdir), str(target), config)
    assert first == str(source)
    assert (target / "reward_model" / "checkpoints" / "7").is_dir()
    # A resumed run finds the copy in place and still names where it came from.
    assert scaling.share_reward_model(str(workdir), str(target), config) == str(source)
    # A run that trained its reward model in place has no source.
    own = workdir / "fast_0.1m"
    (own / "reward_model").mkdir(parents=True)
    assert scaling.share_reward_model(str(workdir), str(own), config) is None


def test_estimate_seconds_left_by_epoch():
    # Budgets in epochs: a law of seconds per epoch (10 s/epoch at 10 params, 20 at 20:
    # seconds per epoch = 1 * params), times the mean epochs trained so far ((4 + 6) / 2 = 5).
    done = [("fast", 10.0, 40.0, 4.0), ("fast", 20.0, 120.0, 6.0)]
    assert scaling.estimate_seconds_left(done, [("fast", 30.0)]) == pytest.approx(30.0 * 5)
    # A run without its epochs: the law through whole runs (40 s at 10, 120 s at 20: exponent
    # log 3 / log 2), so 30 params take 40 * 3 ** (log 3 / log 2) s.
    mixed = [("fast", 10.0, 40.0, 4.0), ("fast", 20.0, 120.0, None)]
    expected = 40.0 * 3.0 ** (math.log(3.0) / math.log(2.0))
    assert scaling.estimate_seconds_left(mixed, [("fast", 30.0)]) == pytest.approx(expected)


def test_seeds_share_the_reward_model_and_report_mean_and_std(study):
    # The finished study again with a second generator seed at the smallest size only: the two
    # base-seed runs come from the cache, one new run trains with seed 5 and copies the reward
    # model of the base seed's first run.
    workdir, root = study["workdir"], study["root"]
    experiment, config = _configs(str(root / "tfds"))
    config = dataclasses.replace(config, seeds=(experiment.seed, 5), seeds_up_to=SIZES[0])
    logs = []
    document = scaling.run_study(experiment, config, workdir, logs.append, command="test")
    runs = {(r["size"], r["seed"]): r for r in document["runs"]}
    assert sorted(runs) == sorted(
        [(SIZES[0], experiment.seed), (SIZES[0], 5), (SIZES[1], experiment.seed)]
    )
    new = runs[SIZES[0], 5]
    assert not new["cached"] and new["workdir"].endswith(f"fast_{SIZES[0]}_seed5")
    assert new["reward_model"] == f"from fast_{SIZES[0]}"
    assert "\n".join(logs).count("[reward_model] training steps") == 0
    base = runs[SIZES[0], experiment.seed]
    key = "test/reward_model_greedy/true_reward"
    assert new["results"][key] == base["results"][key]  # the same evaluator
    assert new["results"]["test/true_reward"] != base["results"]["test/true_reward"]
    # The table's row of the smallest size: mean ± sample std of the two seeds' results.json.
    values = [
        json.load(open(os.path.join(r["workdir"], "results.json")))["test/true_reward"]
        for r in (base, new)
    ]
    mean, std = sum(values) / 2, abs(values[0] - values[1]) / 2**0.5
    table = open(os.path.join(workdir, "scaling.md")).read()
    row = next(line for line in table.splitlines() if line.startswith(f"| fast | {SIZES[0]} |"))
    assert f"| {experiment.seed}, 5 | {mean:.4f} ± {std:.4f} |" in row
    other = next(line for line in table.splitlines() if line.startswith(f"| fast | {SIZES[1]} |"))
    assert f"| {experiment.seed} | " in other and "±" not in other


def test_seed_plan_and_bad_seeds():
    experiment, _ = _configs("unused")
    _, config = scaling.from_config_dict(_config_dict(), seeds=["3", "4"], seeds_up_to="0.03m")
    assert config.seeds == (3, 4)
    assert scaling.run_seeds(config, experiment, "0.01m") == (3, 4)
    assert scaling.run_seeds(config, experiment, "0.03m") == (3, 4)
    assert scaling.run_seeds(config, experiment, "0.1m") == (3,)
    assert scaling.run_seeds(dataclasses.replace(config, seeds=()), experiment, "1m") == (
        experiment.seed,
    )
    assert scaling.run_name("0.1m", "fast", 3, base_seed=999) == "fast_0.1m_seed3"
    assert scaling.run_name("0.1m", "fast", 999, base_seed=999) == "fast_0.1m"
    with pytest.raises(ValueError, match="repeated seed"):
        scaling.from_config_dict(_config_dict(), seeds=["1", "1"])
    with pytest.raises(ValueError, match="integers >= 0, got 'x'"):
        scaling.from_config_dict(_config_dict(), seeds=["x"])
    with pytest.raises(ValueError, match="seeds_up_to '2m' is no preset"):
        scaling.from_config_dict(_config_dict(), seeds_up_to="2m")


def test_time_estimates_are_checked_against_the_runs(tmp_path):
    workdir = tmp_path / "study"
    for name, seconds in (("fast_0.1m", 30.0), ("fast_0.3m", 90.0), ("fast_1m", None)):
        (workdir / name).mkdir(parents=True)
        if seconds is not None:
            (workdir / name / scaling.RESULTS_FILE).write_text("{}")
            (workdir / name / scaling.RUN_INFO_FILE).write_text(
                json.dumps({"run_seconds": seconds})
            )
    lines = [
        {"after": "fast_0.03m", "estimate_s": 240.0, "runs": ["fast_0.1m", "fast_0.3m"]},
        {"after": "fast_0.1m", "estimate_s": 45.0, "runs": ["fast_0.3m"]},
        # fast_1m has not finished: this estimate cannot be checked yet.
        {"after": "fast_0.3m", "estimate_s": 500.0, "runs": ["fast_1m"]},
    ]
    (workdir / scaling.ESTIMATES_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    checks = scaling.estimate_checks(str(workdir))
    assert [c["after"] for c in checks] == ["fast_0.03m", "fast_0.1m"]
    assert [c["actual_s"] for c in checks] == [120.0, 90.0]
    assert [c["ratio"] for c in checks] == pytest.approx([2.0, 0.5])
    assert scaling.estimate_checks(str(tmp_path / "none")) == []
    table = "\n".join(report.estimate_lines(checks))
    assert "| fast_0.03m | 2 | 4m00s | 2m00s | 2.00 |" in table
    assert "| fast_0.1m | 1 | 0m45s | 1m30s | 0.50 |" in table


def test_the_simulator_is_copied_with_the_reward_model_when_its_config_matches(tmp_path):
    experiment, _ = _configs(str(tmp_path / "tfds"))
    workdir = tmp_path / "study"
    source = workdir / "fast_0.01m"
    (source / "reward_model" / "checkpoints" / "7").mkdir(parents=True)
    (source / "simulator" / "checkpoints" / "5").mkdir(parents=True)
    (source / "config.json").write_text(json.dumps(config_check.config_json(experiment)))
    (source / "results.json").write_text("{}")
    same = workdir / "fast_0.03m"
    assert scaling.share_reward_model(
        str(workdir), str(same), scaling.run_config(experiment, "0.03m", "fast")
    ) == str(source)
    assert (same / "simulator" / "checkpoints" / "5").is_dir()
    # Another simulator seed: the reward model is still shared, the simulator is not.
    simulator = dataclasses.replace(experiment.simulator, seed=experiment.simulator.seed + 1)
    other_config = scaling.run_config(
        dataclasses.replace(experiment, simulator=simulator), "0.1m", "fast"
    )
    other = workdir / "fast_0.1m"
    assert scaling.share_reward_model(str(workdir), str(other), other_config) == str(source)
    assert (other / "reward_model" / "checkpoints" / "7").is_dir()
    assert not (other / "simulator").exists()


def test_the_plotted_metric_follows_the_dataset():
    # Real data has no true model: the study plots N@L of the logged labels there.
    assert _config_dict("").scaling.metric == "test/true_reward"
    assert _config_dict("dataset=ml100k").scaling.metric == "test/N@6"


def test_time_estimate_replay_over_a_recorded_study(tmp_path):
    # benchmarks/scaling_time_estimates.py feeds the study's estimator what the study would
    # have: generator seconds and epochs of the sizes finished, seeds of one size averaged.
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "scaling_time_estimates.py")
    spec = importlib.util.spec_from_file_location("scaling_time_estimates", path)
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)

    def run(params, seconds, epochs, reward_model="from fast_0.1m", generator_seconds=True):
        return {
            "variant": "fast",
            "params_non_embedding": params,
            "generator_seconds": seconds if generator_seconds else None,
            "run_seconds": seconds + 100.0,
            "reward_model": reward_model,
            "results": {"stages/generator/epochs": epochs},
        }

    runs = [
        # Trained the shared reward model and recorded no generator seconds: left out.
        run(5, 999.0, 2.0, reward_model="trained", generator_seconds=False),
        run(10, 20.0, 2.0),  # 10 s per epoch
        run(40, 60.0, 3.0),  # 20 s per epoch: seconds per epoch = 10 * (params / 10) ** 0.5
        run(160, 100.0, 2.0),  # seed 1 of 160 params
        run(160, 140.0, 2.0),  # seed 2: actual = mean 120 s
    ]
    document = {"budget": {"max_epochs": 20.0}, "runs": runs}
    (tmp_path / "scaling.json").write_text(json.dumps(document))
    rows = replay.replay(str(tmp_path / "scaling.json"))
    assert len(rows) == 1
    row = rows[0]
    assert (row["sizes_done"], row["params_predicted"], row["actual_s"]) == (2, 160, 120.0)
    # 160 params: 10 * 16 ** 0.5 = 40 s per epoch, at the mean 2.5 epochs of the runs done.
    assert row["estimate_s"] == pytest.approx(100.0)
    assert row["ratio"] == pytest.approx(100.0 / 120.0)


def test_earlier_reports_join_the_report_and_time_the_estimate(study, tmp_path, monkeypatch):
    # A later invocation in another workdir: seed 7 of 0.03m is planned; the first study's
    # report (both sizes, the experiment's seed) comes in through --earlier_reports.
    # Its runs of the experiment's seed (other tests may have added seeds to that workdir),
    # with timings set to rise with size (smoke runs are too short to be sure they do).
    experiment, config = _configs(str(study["root"] / "tfds"))
    document = json.load(open(os.path.join(study["workdir"], "scaling.json")))
    document["runs"] = sorted(
        (r for r in document["runs"] if r["seed"] == experiment.seed),
        key=lambda r: r["params_non_embedding"],
    )
    for run, seconds in zip(document["runs"], (10.0, 40.0), strict=True):
        run["generator_seconds"] = seconds
    earlier = str(tmp_path / "earlier.json")
    with open(earlier, "w") as f:
        json.dump(document, f)
    config = dataclasses.replace(config, sizes=SIZES[1:], seeds=(7,), earlier_reports=(earlier,))
    workdir = str(tmp_path / "later")
    trained = []

    def train_run(workdir_, name, run_config, *args):
        # Stands in for training: the earlier 0.03m run's directory (same data, reward model
        # and timings) becomes this run's; the estimate is what is under test here.
        run_dir = os.path.join(workdir_, name)
        shutil.copytree(os.path.join(study["workdir"], "fast_0.03m"), run_dir)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump(config_check.config_json(run_config), f)
        trained.append(name)
        return json.load(open(os.path.join(workdir_, name, scaling.RESULTS_FILE)))

    monkeypatch.setattr(scaling, "_train_run", train_run)
    logs = []
    document = scaling.run_study(experiment, config, workdir, logs.append)
    assert trained == ["fast_0.03m_seed7"]
    runs = [(r["size"], r["seed"], r.get("report")) for r in document["runs"]]
    assert runs == [
        ("0.03m", 7, None),
        ("0.01m", experiment.seed, earlier),
        ("0.03m", experiment.seed, earlier),
    ]
    # The two earlier sizes fit the law that estimated the run to train, before it trained.
    logged = [json.loads(x) for x in open(os.path.join(workdir, scaling.ESTIMATES_FILE))]
    assert [(e["after"], e["runs"]) for e in logged] == [("earlier reports", ["fast_0.03m_seed7"])]
    earlier_runs = json.load(open(earlier))["runs"]
    by_epoch = experiment.train.num_epochs > 0
    points = [scaling.timing_point(r, by_epoch)[0] for r in earlier_runs]
    expected = scaling.estimate_seconds_left(points, [("fast", float(points[1][1]))])
    assert logged[0]["estimate_s"] == pytest.approx(expected)
    assert any("for the 1 runs to train" in line for line in logs)
    checks = [e for e in document["time_estimates"] if e["after"] == "earlier reports"]
    assert checks[0]["actual_s"] == earlier_runs[1]["run_seconds"]
    table = open(os.path.join(workdir, "scaling.md")).read()
    assert f"- {earlier}: fast 0.01m {experiment.seed}, fast 0.03m {experiment.seed}" in table

    # Another budget, another data set or reward model, a missing file: refused, named.
    changed, _ = _configs(str(study["root"] / "tfds"), num_steps=7)
    with pytest.raises(ValueError, match="another study: its budget is"):
        scaling.run_study(changed, config, str(tmp_path / "other"), logs.append)
    tampered = json.load(open(earlier))
    tampered["references"]["reward_model_greedy"] += 0.01
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    config = dataclasses.replace(config, earlier_reports=(str(tmp_path / "tampered.json"),))
    with pytest.raises(ValueError, match="another data set or reward model: its reward_model_gr"):
        scaling.run_study(experiment, config, workdir, logs.append, report_only=True)
    # Found as soon as the first new run has finished, before the next one trains.
    trained.clear()
    two_seeds = dataclasses.replace(config, seeds=(8, 9))
    with pytest.raises(ValueError, match="another data set or reward model"):
        scaling.run_study(experiment, two_seeds, str(tmp_path / "stops"), logs.append)
    assert trained == ["fast_0.03m_seed8"]
    config = dataclasses.replace(config, earlier_reports=(str(tmp_path / "none.json"),))
    with pytest.raises(ValueError, match="no such scaling.json"):
        scaling.run_study(experiment, config, workdir, logs.append, report_only=True)

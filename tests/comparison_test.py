"""The comparison's baselines, MG-E pool, selection, aggregation and config checks; one smoke
comparison end to end (every baseline trained, evaluated and reported; the rerun cached)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goalrank_jax import configs, sampling, stages
from goalrank_jax.comparison import compare, evaluation, report, training
from goalrank_jax.comparison import config as comparison_config
from goalrank_jax.models import baselines
from tests import step_fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(command, returncode=0, timeout=300):
    """Runs a command from the repository root and checks its exit status (stderr on failure)."""
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == returncode, done.stderr[-3000:]
    return done


def _json(path):
    with open(path) as f:
        return json.load(f)


def _backbone(**overrides):
    kwargs = dict(
        num_users=step_fixtures.NUM_USERS,
        num_items=step_fixtures.NUM_ITEMS,
        embed_dim=8,
        num_layers=1,
        num_heads=2,
        ff_dim=8,
        dropout=0.0,
    )
    kwargs.update(overrides)
    return kwargs


def test_dnn_scores_each_candidate_on_its_own():
    """A pointwise scorer: changing the other candidates leaves a candidate's score unchanged
    (the PRM, a transformer over the set, does not have this property)."""
    batch = step_fixtures.random_batch(batch_size=4, num_candidates=10)
    dnn = baselines.DNNScorer(**_backbone())
    params = dnn.init(jax.random.key(0), batch)
    other = dict(batch)
    items = batch["cand_items"].copy()
    items[1:, 5:8] = (items[1:, 5:8] + 7) % step_fixtures.NUM_ITEMS
    other["cand_items"] = items
    a, b = dnn.apply(params, batch), dnn.apply(params, other)
    np.testing.assert_allclose(np.asarray(a)[1:, :5], np.asarray(b)[1:, :5], rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(a)[1:, 5:8], np.asarray(b)[1:, 5:8])


def test_nar_loss_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 2, 5)).astype(np.float32)
    mask = np.ones((3, 5), bool)
    mask[0, 4] = False
    logged = np.array([[1, 2], [0, 4], [3, 1]], np.int32)
    labels = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    expected = []
    for b in range(3):
        for t in range(2):
            z = np.where(mask[b], logits[b, t], -np.inf)
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            q = p[logged[b, t]]
            expected.append(-(labels[b, t] * np.log(q) + (1 - labels[b, t]) * np.log(1 - q)))
    got = baselines.nar_logged_list_loss(logits, logged, labels, mask)
    np.testing.assert_allclose(float(got), np.mean(expected), rtol=1e-5)


def test_nar_greedy_decoding_is_positionwise_argmax_without_repeats():
    batch = step_fixtures.random_batch(batch_size=5, num_candidates=10, list_len=3)
    nar = baselines.NARGenerator(max_list_len=3, **_backbone())
    params = nar.init(jax.random.key(1), batch)
    logits = np.asarray(nar.apply(params, batch))
    assert logits.shape == (5, 3, 10)
    lists = np.asarray(
        sampling.decode(
            evaluation.nar_decode_step(jnp.asarray(logits)), None, batch["cand_mask"], 3
        )
    )
    for b in range(5):
        taken = set()
        for t in range(3):
            allowed = [n for n in range(10) if batch["cand_mask"][b, n] and n not in taken]
            assert lists[b, t] == max(allowed, key=lambda n: logits[b, t, n])
            taken.add(int(lists[b, t]))


def test_mge_pool_is_heterogeneous_and_nested():
    pool = evaluation.mge_pool(30)
    names = [e.name for e in pool]
    assert len(set(names)) == 30
    assert names[: len(evaluation.DETERMINISTIC_GENERATORS)] == list(
        evaluation.DETERMINISTIC_GENERATORS
    )
    sampled = pool[len(evaluation.DETERMINISTIC_GENERATORS) :]
    assert {(e.source, e.temperature) for e in sampled[:12]} == set(evaluation.SAMPLED_GENERATORS)
    assert [e.name for e in evaluation.mge_pool(10)] == names[:10]  # k generators nest in k + 1


def test_select_takes_the_highest_estimated_reward():
    proposals = jnp.arange(2 * 4 * 3).reshape(2, 4, 3)
    rewards = jnp.array([[0.1, 0.5, 0.2, 0.5], [-1.0, -2.0, -0.5, -3.0]])
    picked = np.asarray(evaluation.select_best(proposals, rewards))
    np.testing.assert_array_equal(picked, np.asarray(proposals)[[0, 1], [1, 2]])


def test_summary_mean_and_sample_std():
    per_seed = [{"a": {"m": 1.0}}, {"a": {"m": 2.0}}, {"a": {"m": 4.0}, "b": {"m": 3.0}}]
    summary = report.summarize(per_seed)
    assert summary["a"]["m"]["mean"] == pytest.approx(7 / 3)
    assert summary["a"]["m"]["std"] == pytest.approx(
        np.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    )
    assert summary["b"]["m"] == {"mean": 3.0, "std": 0.0, "n": 1}


def test_ablation_tables_lead_with_the_validation_value_each_run_was_selected_at(tmp_path):
    def results(scale):
        rows = {"goalrank": {"N@6": 0.3 * scale}, "goalrank_K5": {"N@6": 0.2 * scale}}
        return {**rows, "mge@1": {"N@6": 0.25 * scale}, "dnn": {"N@6": 0.1 * scale}}

    def record(value):
        return dict(
            epochs=2.0,
            steps=4,
            num_steps=4,
            stopped_early=False,
            selected_step=3,
            selected_value=value,
        )

    records = {
        1: {
            "goalrank": record(0.31),
            "goalrank_K5": record(0.21),
            "dnn": {**record(0.11), "selected_step": 4},  # its budget's last step
        },
        2: {"goalrank": record(0.35), "goalrank_K5": record(float("nan"))},
    }
    one_seed_only = {**results(1.0), "goalrank_prob": {"N@6": 0.15}}
    document = report.write(
        str(tmp_path),
        {1: one_seed_only, 2: results(1.1)},
        dataset="synthetic",
        split="test",
        list_len=6,
        ks=(1,),
        group_sizes=(5,),
        aliases={"goalrank_K8": "goalrank"},
        defaults={},
        command="cmd",
        timings={},
        records=records,
        select_metric="N@6",
    )
    rows = document["validation_selected"]["rows"]
    assert document["validation_selected"]["metric"] == "N@6"
    assert rows["goalrank"]["mean"] == pytest.approx(0.33)
    assert rows["goalrank"]["std"] == pytest.approx(np.std([0.31, 0.35], ddof=1))
    assert rows["goalrank_K8"] == rows["goalrank"]  # the default run under the sweep's name
    assert rows["goalrank_K5"] == {"mean": pytest.approx(0.21), "std": 0.0, "n": 1}  # NaN left out
    text = (tmp_path / "comparison.md").read_text()
    sweep = text.split("## GoalRank vs group size K")[1].split("##")[0]
    assert "| method | validation N@6 (selected) | N@6 |" in sweep
    assert (
        f"| K = 5 | 0.2100 ± 0.0000 | {0.2 * 1.05:.4f} ± {np.std([0.2, 0.22], ddof=1):.4f} |"
        in sweep
    )
    loss_form = text.split("## Loss form and loss weights")[1].split("##")[0]
    assert "| prob CE (ablation) (seeds: 1 of 2) | n/a | 0.1500 ± 0.0000 |" in loss_form
    assert "(default) |" in loss_form  # measured in both seeds: no count in its label
    assert "| 1 | dnn | 2.00 | 4 / 4 | no | 4 | yes |" in text
    assert "| 1 | goalrank | 2.00 | 4 / 4 | no | 3 | no |" in text
    assert "1 of 5 stages were selected at the last step of their budget" in text
    mge = text.split("## MG-E as the number of generators k grows")[1].split("##")[0]
    assert "validation" not in mge  # MG-E's pool members are selected each on their own
    rule = text.split("## Ablations against the default on validation")[1].split("##")[0]
    assert "| K = 5 | 0.2100 (seed 1) | 0.3100 | -0.1000 ± n/a | 0 of 1 | no |" in rule
    assert [v["run"] for v in document["default_rule"]["runs"]] == ["goalrank_K5"]


def test_default_rule_needs_every_seed_above_and_two_standard_errors():
    def stages(default, **runs):
        return {"goalrank": {"selected_value": default}} | {
            name: {"selected_value": value} for name, value in runs.items()
        }

    records = {
        "2": stages(0.30, goalrank_K16=0.303, goalrank_wG0=0.31, goalrank_prob=0.29),
        "10": stages(0.40, goalrank_K16=0.401, goalrank_wG0=0.39, goalrank_prob=float("nan")),
        "1": stages(0.20, goalrank_K16=0.202, goalrank_wG0=0.21),
        "shared by all seeds": {"reward_model": {"selected_value": 0.8}},
    }
    runs = [
        ("goalrank_K8", "K = 8"),
        ("goalrank_K16", "K = 16"),
        ("goalrank_wG0", "pure GRO"),
        ("goalrank_prob", "prob CE"),
        ("goalrank_plackett_luce", "Plackett-Luce"),  # no record: left out
    ]
    verdicts = report.default_rule(records, runs, {"goalrank_K8": "goalrank"})
    by_run = {v["run"]: v for v in verdicts}
    assert list(by_run) == ["goalrank_K16", "goalrank_wG0", "goalrank_prob"]
    k16 = by_run["goalrank_K16"]
    assert k16["seeds"] == ["1", "2", "10"]  # numeric order, the shared stages left out
    # Differences 0.002, 0.003, 0.001: mean 0.002, sample std 0.001, se 0.001 / sqrt(3).
    assert k16["difference_mean"] == pytest.approx(0.002)
    assert k16["difference_se"] == pytest.approx(0.001 / 3**0.5)
    assert (k16["seeds_above"], k16["meets_rule"]) == (3, True)
    # Above in two of three seeds (+0.01, +0.01, -0.01): fails whatever the mean.
    assert (by_run["goalrank_wG0"]["seeds_above"], by_run["goalrank_wG0"]["meets_rule"]) == (
        2,
        False,
    )
    # One finite seed (seed 10's value is NaN): never enough to change a default.
    prob = by_run["goalrank_prob"]
    assert prob["seeds"] == ["2"] and prob["difference_mean"] == pytest.approx(-0.01)
    assert np.isnan(prob["difference_se"]) and not prob["meets_rule"]
    # Every seed above but inside two standard errors: differences 0.001 and 0.009, mean
    # 0.005, se 0.004, so 0.005 < 2 x 0.004.
    close = report.default_rule(
        {"1": stages(0.3, goalrank_K5=0.301), "2": stages(0.3, goalrank_K5=0.309)},
        [("goalrank_K5", "K = 5")],
        {},
    )
    assert close[0]["difference_se"] == pytest.approx(0.004)
    assert (close[0]["seeds_above"], close[0]["meets_rule"]) == (2, False)
    lines = "\n".join(report.default_rule_lines(verdicts, "N@6"))
    assert (
        "| K = 16 | 0.2020 / 0.3030 / 0.4010 (seeds 1, 2, 10) | 0.2000 / 0.3000 / 0.4000 | "
        "+0.0020 ± 0.0006 | 3 of 3 | **yes** |" in lines
    )
    assert "| prob CE | 0.2900 (seed 2) | 0.3000 | -0.0100 ± n/a | 0 of 1 | no |" in lines


def _one_seed_report(tmp_path, rows, *, dataset, ks, aliases):
    """report.write of one seed's ``rows`` on test, L = 6, without ablation sweeps or timings."""
    return report.write(
        str(tmp_path),
        {1: rows},
        dataset=dataset,
        split="test",
        list_len=6,
        ks=ks,
        group_sizes=(),
        aliases=aliases,
        defaults={},
        command="cmd",
        timings={},
    )


def test_real_data_orders_on_logged_labels_and_the_simulator_only_as_a_secondary(tmp_path):
    def row(ndcg, sim):
        return {"N@6": ndcg, "H@6": ndcg + 0.05, "sim_reward": sim}

    # The simulator prefers DNN; the logged labels prefer GoalRank.
    results = {"goalrank": row(0.30, 1.0), "mge@1": row(0.25, 1.5), "dnn": row(0.20, 2.0)}
    document = _one_seed_report(tmp_path, results, dataset="ml100k", ks=(1,), aliases={})
    assert document["primary_metric"] == "N@6"
    assert document["ordering"]["checks"][0]["holds"]  # GoalRank > MG-E on N@6
    assert [o["metric"] for o in document["ordering_other_metrics"]] == ["sim_reward"]
    assert not document["ordering_other_metrics"][0]["checks"][0]["holds"]
    text = (tmp_path / "comparison.md").read_text()
    assert "Primary list-quality metric: `N@6`" in text
    assert (
        "Checked on the mean `sim_reward` (the held-out simulator: secondary, not used for a "
        "conclusion):" in text
    )


def test_a_comparison_of_goalrank_runs_alone_reports_no_empty_sections(tmp_path):
    # compare.methods=goalrank,goalrank_prefix, no ablations: no MG-E, G-E or generator-only
    # rows, so neither an MG-E curve nor an ordering to check, nor a construction section of
    # the default run under its ablation name.
    values = _comparison_values(methods=("goalrank", "goalrank_prefix"), ablations=())
    experiment, comparison = comparison_config.from_config_dict(values)
    aliases = training.same_run_aliases(experiment, comparison)
    assert aliases == {}
    rows = {"goalrank": {"true_reward": 0.9}, "goalrank_prefix": {"true_reward": 0.8}}
    rows["random"] = {"true_reward": 0.5}
    document = _one_seed_report(
        tmp_path, rows, dataset="synthetic", ks=comparison.mge_ks, aliases=aliases
    )
    assert document["plots"] == []
    assert document["ordering"]["checks"] == []
    text = (tmp_path / "comparison.md").read_text()
    assert "MG-E as the number" not in text and "Group construction" not in text
    assert "best MG-E is" not in text
    assert (
        "Not checked: the comparison has no row of best MG-E, best G-E, best generator-only" in text
    )
    assert "| GoalRank, prefix generator (paper-faithful) | 0.8000 ± 0.0000 |" in text


def test_ordering_names_the_best_of_each_family():
    def row(v):
        return {"true_reward": {"mean": v, "std": 0.0, "n": 3}}

    summary = {
        "goalrank": row(0.5),
        "mge@3": row(0.45),
        "mge@20": row(0.47),
        "pier_ge": row(0.40),
        "nar4rec_ge": row(0.48),
        "dnn": row(0.30),
        "prm": row(0.35),
    }
    out = report.ordering(summary, "true_reward", ["mge@3", "mge@20"])
    assert out["best"] == {
        "goalrank": "goalrank",
        "best MG-E": "mge@20",
        "best G-E": "nar4rec_ge",
        "best generator-only": "prm",
    }
    assert [c["holds"] for c in out["checks"]] == [True, False, True]


def _comparison_values(**compare):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "experiments_compare", os.path.join(REPO, "experiments", "compare.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config("smoke")
    for key, value in compare.items():
        setattr(cfg.compare, key, value)
    return cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ({"methods": ("dnn", "xgboost")}, "unknown ['xgboost']"),
        ({"group_sizes": (1, 4)}, "K=1"),
        ({"seeds": ()}, "seeds is empty"),
        ({"seeds": (1, 1)}, "repeats a seed"),
        ({"mge_ks": (0, 3)}, "mge_ks must be >= 1"),
        ({"split": "train"}, "validation or test"),
        ({"select_metric": "ndcg"}, "select_metric must be"),
        ({"select_metric": "N@4"}, "must rank at L=3"),
        ({"select_metric": "rm_reward@3"}, "select_metric must be"),
        (
            {"select_metric": "rm_reward", "reuse_baselines_from": "runs/other"},
            "cannot be used with select_metric='rm_reward'",
        ),
    ],
)
def test_bad_comparison_configs_are_named(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        comparison_config.from_config_dict(_comparison_values(**override))


def test_a_derived_run_that_cannot_exist_is_named():
    cfg = _comparison_values()
    cfg.gro.group_construction = "on_policy"  # the mixed ablation is then a derived run
    cfg.gro.auxiliary = ("logged", "retriever", "reward_model_greedy", "random")  # fills K = 4
    with pytest.raises(ValueError, match="goalrank_mixed"):
        comparison_config.from_config_dict(cfg)


def test_goalrank_runs_share_no_settings_and_alias_the_default():
    experiment, comparison = comparison_config.from_config_dict(_comparison_values())
    runs = training.goalrank_runs(experiment, comparison)
    names = [r.name for r in runs]
    assert names[0] == "goalrank" and len(set(names)) == len(names)
    assert f"goalrank_K{experiment.gro.group_size}" not in names  # the default run itself
    aliases = training.same_run_aliases(experiment, comparison)
    assert aliases[f"goalrank_K{experiment.gro.group_size}"] == "goalrank"
    by_name = {r.name: r.gro for r in runs}
    assert (
        by_name["goalrank_wG0"].supervised_weight == 0
        and by_name["goalrank_wG0"].reward_weight == 1
    )
    assert by_name["supervised_ar"].reward_weight == 0
    assert by_name["goalrank_prob"].loss_form == "prob"
    assert isinstance(by_name["goalrank_plackett_luce"], configs.GROConfig)
    assert "goalrank_prefix" not in names  # an optional method, off by default


def test_the_prefix_row_is_goalrank_with_the_prefix_generator():
    values = _comparison_values(methods=("goalrank", "goalrank_prefix"), prefix_num_epochs=2)
    experiment, comparison = comparison_config.from_config_dict(values)
    runs = {r.name: r for r in training.goalrank_runs(experiment, comparison)}
    assert runs["goalrank_prefix"].gro == runs["goalrank"].gro
    assert (runs["goalrank_prefix"].variant, runs["goalrank_prefix"].num_epochs) == ("prefix", 2)
    assert (runs["goalrank"].variant, runs["goalrank"].num_epochs) == ("", 0)
    with pytest.raises(ValueError, match="prefix_num_epochs must be >= 0"):
        comparison_config.from_config_dict(_comparison_values(prefix_num_epochs=-1))


def test_the_prefix_row_takes_a_fraction_of_an_epoch():
    # A CPU that cannot train the prefix generator for whole epochs gives it a fraction of one.
    values = _comparison_values(methods=("goalrank", "goalrank_prefix"), prefix_num_epochs=0.25)
    experiment, comparison = comparison_config.from_config_dict(values)
    runs = {r.name: r for r in training.goalrank_runs(experiment, comparison)}
    prefix = training.run_experiment(experiment, runs["goalrank_prefix"])
    assert prefix.train.num_epochs == 0.25
    train = dataclasses.replace(prefix.train, batch_size=32)
    # ceil(0.25 x 1000 / 32) = ceil(7.8125) steps
    assert stages.resolve_budget(train, 1000).num_steps == 8


def _smoke_command(workdir, *flags, config="experiments/compare.py:smoke") -> list[str]:
    """The comparison command on the smoke config, seed 7 only, with ``flags``."""
    return [
        sys.executable,
        "-m",
        "goalrank_jax.comparison",
        f"--config={config}",
        f"--workdir={workdir}",
        "--config.compare.seeds=7",
        *flags,
    ]


# The smoke comparison of the fixture below.
SMOKE_FLAGS = (
    "--config.compare.ablations=group_size",
    "--config.compare.methods=" + ",".join(comparison_config.METHODS + ("goalrank_prefix",)),
    "--config.compare.group_sizes=3",  # the 2 auxiliary lists of K = 3 and one sampled
    # Every ranker selected on its validation N@3, evaluated every 2 steps.
    "--config.compare.select_metric=N@3",
    "--config.compare.baseline_train.eval_every=2",
    "--config.train.eval_every=2",
)


@pytest.fixture(scope="module")
def smoke_comparison(tmp_path_factory):
    """Every method of the comparison on the smoke config, one seed, one ablation family."""
    workdir = str(tmp_path_factory.mktemp("compare"))
    command = _smoke_command(workdir, *SMOKE_FLAGS)
    first = _run(command, timeout=900)
    second = _run(command, timeout=300)
    return workdir, first.stdout, second.stdout


def test_smoke_comparison_reports_every_baseline(smoke_comparison):
    workdir, _, _ = smoke_comparison
    document = _json(os.path.join(workdir, "comparison.json"))
    summary = document["summary"]
    rows = ("dnn", "prm", "supervised_ar", "nar", "pier_ge", "nar4rec_ge", "goalrank")
    for row in rows + ("goalrank_prefix",):
        assert row in summary, row
        assert 0.0 <= summary[row]["N@3"]["mean"] <= 1.0
        assert np.isfinite(summary[row]["true_reward"]["mean"])
    for k in (1, 3, 8):
        assert f"mge@{k}" in summary and f"mge_no_rm@{k}" in summary
    assert [p["k"] for p in document["mge_curve"]] == [1, 3, 8]
    # Nested pools: the evaluator's estimate of the MG-E pick never falls as k grows, and the
    # evaluator's own greedy list (the argmax of a pointwise DCG reward) is never beaten.
    estimates = [summary[f"mge@{k}"]["rm_reward"]["mean"] for k in (1, 3, 8)]
    assert estimates == sorted(estimates)
    greedy = summary["reward_model_greedy"]["rm_reward"]["mean"]
    assert all(summary[r]["rm_reward"]["mean"] <= greedy + 1e-5 for r in summary)
    # The MG-E pool's first generator is the PRM's sort: MG-E with k = 1 is that list.
    assert summary["mge@1"]["true_reward"]["mean"] == pytest.approx(
        summary["prm"]["true_reward"]["mean"], rel=1e-6
    )
    # The ordering is checked on the primary metric and on N@L (logged labels).
    assert document["ordering"]["metric"] == "true_reward"
    assert [o["metric"] for o in document["ordering_other_metrics"]] == ["N@3"]
    with open(os.path.join(workdir, "comparison.md")) as f:
        text = f.read()
    assert "Checked on the mean `N@3` (logged labels):" in text
    labels = ("DNN", "PRM", "PIER-style G-E", "NAR4Rec-style G-E", "GoalRank", "MG-E, k = 3")
    for label in labels + ("prefix generator",):
        assert label in text
    for picture in ("mge_vs_k.png", "group_size.png"):
        assert os.path.getsize(os.path.join(workdir, picture)) > 1000


def test_every_ranker_is_selected_on_validation_and_its_training_reported(smoke_comparison):
    workdir, _, _ = smoke_comparison
    with open(os.path.join(workdir, "comparison.json")) as f:
        training_records = json.load(f)["training"]
    stages = training_records["7"]
    for name in ("dnn", "prm", "nar", "supervised_ar", "goalrank", "goalrank_K3"):
        record = stages[name]
        assert record["selected_step"] in range(2, record["num_steps"] + 1, 2), name
        assert record["steps"] == record["num_steps"] and record["epochs"] > 0
    with open(os.path.join(workdir, "seed_7", "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    for name, evaluations in (("dnn", 2), ("goalrank", 3)):  # 4 and 6 steps, every 2
        key = f"validation/{name}/N@3"
        values = [row[key] for row in logged if key in row]
        assert len(values) == evaluations and all(0.0 <= v <= 1.0 for v in values)
    with open(os.path.join(workdir, "comparison.md")) as f:
        text = f.read()
    assert "## Training" in text
    # The smoke config trains GoalRank 6 steps and the baselines 4: the report says so.
    assert "budget = 6 steps," in text and "DNN / PRM / NAR budget = 4 steps." in text


def test_rankers_can_be_selected_on_the_evaluators_reward(tmp_path):
    """compare.select_metric = rm_reward: each ranker keeps the state whose greedy lists the
    frozen evaluator rates best on validation. Compared on the validation split, the
    evaluation (its own compiled path) gives each row the reward its selection recorded."""
    workdir = str(tmp_path)
    command = _smoke_command(
        workdir,
        "--config.compare.methods=dnn,goalrank",
        "--config.compare.ablations=",
        "--config.compare.select_metric=rm_reward",
        "--config.compare.split=validation",
        "--config.compare.baseline_train.eval_every=2",
        "--config.train.eval_every=2",
    )
    _run(command, timeout=600)
    result = _json(os.path.join(workdir, "comparison.json"))
    with open(os.path.join(workdir, "seed_7", "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    for name, evaluations in (("dnn", 2), ("goalrank", 3)):
        key = f"validation/{name}/rm_reward"
        values = [row[key] for row in logged if key in row]
        assert len(values) == evaluations, name
        record = result["training"]["7"][name]
        assert record["selected_value"] == pytest.approx(max(values), abs=1e-6)
        evaluated = result["summary"][name]["rm_reward"]["mean"]
        assert evaluated == pytest.approx(record["selected_value"], abs=1e-5), name


def test_the_budget_names_its_cap_and_patience():
    assert compare.budget_text(configs.StageConfig(num_epochs=40, patience=6)) == (
        "40 epochs, patience 6"
    )
    assert compare.budget_text(configs.StageConfig(num_epochs=2.5)) == "2.5 epochs"
    assert compare.budget_text(configs.StageConfig(num_steps=4)) == "4 steps"


def test_rerun_is_served_from_the_cache(smoke_comparison):
    _, first, second = smoke_comparison
    assert "training steps" in first
    assert "[compare] note: unequal budgets" in first
    assert "cached results" in second and "training steps" not in second


def test_a_rerun_under_another_goalrank_config_is_refused(smoke_comparison):
    """The workdir's stages were trained under its config.json: a rerun that changes what they
    depend on stops before restoring any of them under the new settings."""
    workdir, _, _ = smoke_comparison
    before = open(os.path.join(workdir, "config.json")).read()
    command = _smoke_command(workdir, *SMOKE_FLAGS, "--config.gro.reward_weight=0.5")
    done = _run(command, returncode=2, timeout=300)
    assert "Differing fields: experiment.gro.reward_weight: 0.01 there, 0.5 here." in done.stderr
    assert "training steps" not in done.stdout
    assert open(os.path.join(workdir, "config.json")).read() == before


def test_a_seed_evaluated_under_other_settings_is_not_reported(smoke_comparison):
    """The seed's cache records its evaluation settings; a report under others leaves it out
    (a full run would evaluate it again) and a report-only run writes no config.json."""
    workdir, _, _ = smoke_comparison
    with open(os.path.join(workdir, "seed_7", "results.json")) as f:
        recorded = json.load(f)["evaluated_with"]
    assert recorded["compare.split"] == "test" and recorded["compare.num_proposals"] == 4
    before = open(os.path.join(workdir, "config.json")).read()
    command = _smoke_command(workdir, *SMOKE_FLAGS, "--config.compare.num_proposals=3")
    done = _run([*command, "--report_only"], returncode=2, timeout=300)
    assert "seed 7: no complete cached results; left out" in done.stdout
    assert "No seed of (7,) has results" in done.stderr
    assert open(os.path.join(workdir, "config.json")).read() == before


def test_mge_k_is_chosen_on_validation(smoke_comparison, tmp_path):
    workdir, _, _ = smoke_comparison
    results = _json(os.path.join(workdir, "seed_7", "results.json"))
    document = _json(os.path.join(workdir, "comparison.json"))
    validation = results["validation_mge"]
    assert sorted(validation) == ["mge@1", "mge@3", "mge@8"]
    # The k with the best validation N@3, the smaller k on a tie, found here by a plain loop.
    best_k, best_value = None, -1.0
    for k in (1, 3, 8):
        if validation[f"mge@{k}"]["N@3"] > best_value:
            best_k, best_value = k, validation[f"mge@{k}"]["N@3"]
    assert document["mge_selection"] == {"metric": "validation/N@3", "k": {"7": best_k}}
    for metric, value in results["rows"][f"mge@{best_k}"].items():
        assert document["summary"]["mge_selected"][metric]["mean"] == pytest.approx(value)
    assert document["ordering"]["best"]["best MG-E"] == "mge_selected"
    # The same MG-E pool drawn with the validation stream: its pick is the evaluator's argmax
    # among k lists, so its estimated reward never falls as k grows.
    estimates = [validation[f"mge@{k}"]["rm_reward"] for k in (1, 3, 8)]
    assert estimates == sorted(estimates)
    # Results cached before MG-E had a validation evaluation: a report-only run keeps the best
    # k on the test split and says that it is an optimistic bound.
    old = str(tmp_path / "old")
    os.makedirs(os.path.join(old, "seed_7"))
    del results["validation_mge"]
    with open(os.path.join(old, "seed_7", "results.json"), "w") as f:
        json.dump(results, f)
    command = _smoke_command(
        old,
        "--config.compare.ablations=group_size",
        "--config.compare.methods=" + ",".join(comparison_config.METHODS + ("goalrank_prefix",)),
        "--config.compare.group_sizes=3",
        "--report_only",
    )
    _run(command, timeout=300)
    fallback = _json(os.path.join(old, "comparison.json"))
    assert fallback["mge_selection"] is None and "mge_selected" not in fallback["summary"]
    assert fallback["ordering"]["best"]["best MG-E"].startswith("mge@")
    with open(os.path.join(old, "comparison.md")) as f:
        assert "an optimistic bound for MG-E" in f.read()


def test_a_report_only_run_from_copied_results_lists_the_shared_reward_model(
    smoke_comparison, tmp_path
):
    """A report written elsewhere from the workdir's config, shared files and seed results (no
    checkpoints) still has the shared reward model's row in its Training table."""
    source, _, _ = smoke_comparison
    workdir = tmp_path / "report"
    os.makedirs(workdir / "seed_7")
    for name in ("config.json", "shared_seconds.json", "shared_records.json"):
        shutil.copy(os.path.join(source, name), workdir / name)
    shutil.copy(os.path.join(source, "seed_7", "results.json"), workdir / "seed_7")
    _run(_smoke_command(str(workdir), *SMOKE_FLAGS, "--report_only"), timeout=300)
    with open(workdir / "comparison.md") as f:
        training_rows = f.read().split("## Training")[1]
    with open(os.path.join(source, "comparison.md")) as f:
        original_rows = f.read().split("## Training")[1]
    shared_row = next(
        line for line in original_rows.splitlines() if line.startswith("| shared by all seeds")
    )
    assert "reward_model" in shared_row
    assert shared_row in training_rows.splitlines()


def test_a_seed_evaluated_again_keeps_the_seconds_its_stages_trained(tmp_path):
    from goalrank_jax.comparison import compare

    path = tmp_path / "results.json"
    # dnn and goalrank were only restored here; goalrank_prefix trained on under a grown budget
    # (its checkpoint's total over both invocations).
    restored = {"dnn": 0.5, "goalrank": 0.7, "goalrank_prefix": 6632.0}
    assert compare._stage_seconds_over_invocations(str(path), restored) == {}
    earlier = {"dnn": 254.0, "goalrank": 1794.0, "goalrank_prefix": 2671.8, "evaluation": 213.0}
    path.write_text(json.dumps({"rows": {}, "seconds": earlier}))
    assert compare._stage_seconds_over_invocations(str(path), restored) == {
        "dnn": 254.0,
        "goalrank": 1794.0,
        "goalrank_prefix": 6632.0,
    }


def test_a_one_seed_report_restores_that_seeds_results(smoke_comparison, tmp_path):
    from goalrank_jax.comparison import restore

    workdir, _, _ = smoke_comparison
    original = _json(os.path.join(workdir, "seed_7", "results.json"))
    path = restore.restore(os.path.join(workdir, "comparison.json"), str(tmp_path))
    assert path == os.path.join(str(tmp_path), "seed_7", "results.json")
    with open(path) as f:
        restored = json.load(f)
    for row, metrics in original["rows"].items():
        for metric, value in metrics.items():
            if np.isfinite(value):
                assert restored["rows"][row][metric] == pytest.approx(value, rel=1e-6), row
    assert restored["stages"] == original["stages"]
    assert restored["split"] == "test" and "validation_mge" not in restored
    assert "mge_selected" not in restored["rows"]  # derived from validation results, not kept
    # A rerun that chooses MG-E's k on validation evaluates a seed without that evaluation
    # again, but not a restored one (its models are elsewhere): it stays cached.
    from goalrank_jax.comparison import compare

    rows = set(original["rows"])
    assert compare._load_cached(path, rows, need_validation_mge=True) is not None
    del restored["restored_from"]
    unrestored = tmp_path / "unrestored.json"
    unrestored.write_text(json.dumps(restored))
    assert compare._load_cached(str(unrestored), rows, need_validation_mge=True) is None
    assert compare._load_cached(str(unrestored), rows, need_validation_mge=False) is not None
    with pytest.raises(ValueError, match="exists already"):
        restore.restore(os.path.join(workdir, "comparison.json"), str(tmp_path))
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"seeds": [1, 2], "summary": {}, "split": "test"}))
    with pytest.raises(ValueError, match="only a one-seed report"):
        restore.restore(str(two), str(tmp_path / "other"))


def test_the_last_seed_of_a_report_is_derived_from_the_others(tmp_path):
    from goalrank_jax.comparison import report as report_lib
    from goalrank_jax.comparison import restore

    rng = np.random.default_rng(0)
    per_seed = {
        s: {row: {"N@6": float(rng.uniform()), "true_reward": float(rng.normal())} for row in "ab"}
        for s in (1, 2, 3)
    }
    per_seed[2]["b"]["true_reward"] = float("nan")  # left out of that seed's mean

    def report(seeds):
        return {
            "seeds": list(seeds),
            "split": "test",
            "summary": report_lib.summarize([per_seed[s] for s in seeds]),
            "timings": {f"seed {s}": {"dnn": 10.0 * s} for s in seeds},
            "training": {str(s): {"dnn": {"epochs": s}} for s in seeds},
        }

    paths = {}
    for name, seeds in (("all", (1, 2, 3)), ("one", (1,)), ("three", (3,))):
        paths[name] = str(tmp_path / f"{name}.json")
        with open(paths[name], "w") as f:
            json.dump(report(seeds), f)
    path = restore.restore(paths["all"], str(tmp_path / "w"), (paths["one"], paths["three"]))
    assert path == str(tmp_path / "w" / "seed_2" / "results.json")
    with open(path) as f:
        derived = json.load(f)
    assert derived["rows"]["a"] == pytest.approx(per_seed[2]["a"], rel=1e-9)
    assert derived["rows"]["b"] == pytest.approx({"N@6": per_seed[2]["b"]["N@6"]}, rel=1e-9)
    assert derived["seconds"] == {"dnn": 20.0} and derived["stages"] == {"dnn": {"epochs": 2}}
    assert derived["derived_with"] == [paths["one"], paths["three"]]
    # Known reports that do not cover all seeds but one are refused, as is a known seed whose
    # values are not the report's (the std over the seeds no longer matches).
    with pytest.raises(ValueError, match="every seed of the report but one"):
        restore.restore(paths["all"], str(tmp_path / "x"), (paths["one"],))
    per_seed[3]["a"]["N@6"] += 0.01
    with open(paths["three"], "w") as f:
        json.dump(report((3,)), f)
    with pytest.raises(ValueError, match="not of this comparison"):
        restore.restore(paths["all"], str(tmp_path / "y"), (paths["one"], paths["three"]))


def test_shared_stage_time_survives_the_cached_rerun(smoke_comparison):
    workdir, _, _ = smoke_comparison
    shared = _json(os.path.join(workdir, "shared_seconds.json"))
    assert set(shared) >= {"data", "reward_model"}
    assert all(seconds > 0 for seconds in shared.values())
    # The report written by the rerun (which trained nothing) still lists the shared stages.
    with open(os.path.join(workdir, "comparison.md")) as f:
        text = f.read()
    assert "| shared by all seeds | reward_model |" in text
    assert "| seed 7 | seed_total |" in text


def test_shared_seconds_add_wall_time_but_not_a_restored_stages_training_twice(tmp_path):
    """A restored reward model reports the seconds its checkpoint keeps (every invocation's);
    adding them again on each invocation would count its training once per rerun."""
    from goalrank_jax.comparison import compare

    workdir = str(tmp_path)
    compare._add_shared_seconds(workdir, {"data": 5.0, "reward_model": 100.0}, ("reward_model",))
    totals = compare._add_shared_seconds(
        workdir, {"data": 1.0, "reward_model": 101.0}, ("reward_model",)
    )
    assert totals == {"data": 6.0, "reward_model": 101.0}


def test_a_second_evaluator_track_copies_the_evaluator_free_stages(smoke_comparison, tmp_path):
    source, _, _ = smoke_comparison
    workdir = str(tmp_path / "list_aware")
    command = _smoke_command(
        workdir,
        "--config.compare.ablations=",
        # DNN and PRM come from the source; the PIER-style G-E picks with the new evaluator.
        "--config.compare.methods=dnn,prm,pier_ge",
        "--config.compare.select_metric=N@3",
        "--config.compare.baseline_train.eval_every=2",
        "--config.train.eval_every=2",
        f"--config.compare.reuse_baselines_from={source}",
        config="experiments/compare.py:smoke,evaluator=list_aware",
    )
    done = _run(command, timeout=600)
    out = done.stdout
    for name in ("dnn", "prm"):
        assert f"{name} copied from" in out and f"[{name}] training steps" not in out
    assert "[reward_model] training steps" in out  # the list-aware evaluator trains here
    second = _json(os.path.join(workdir, "comparison.json"))
    first = _json(os.path.join(source, "comparison.json"))
    records = second["training"]["7"]
    assert records["prm"]["copied_from"] == os.path.join(source, "seed_7", "prm")
    assert records["prm"]["selected_step"] == first["training"]["7"]["prm"]["selected_step"]
    # The copied models rank the test split as they did in the source (labels and the true
    # reward do not depend on the evaluator; rm_reward does and is not compared).
    for row in ("dnn", "prm"):
        for metric in ("N@3", "true_reward"):
            assert second["summary"][row][metric]["mean"] == pytest.approx(
                first["summary"][row][metric]["mean"], abs=1e-6
            )
    timings = second["timings"]["seed 7"]
    # One entry per copied stage: the seconds its checkpoint keeps, those it trained in the
    # source (the source's own figure adds its evaluations on validation, so it is no smaller).
    copied_seconds = timings["prm (copied, trained in the source)"]
    assert copied_seconds == pytest.approx(records["prm"]["train_seconds"])
    assert 0 < copied_seconds <= first["timings"]["seed 7"]["prm"]
    assert "prm" not in timings and "prm (copied, restored)" not in timings
    with open(os.path.join(workdir, "comparison.md")) as f:
        text = f.read()
    assert "prm (copied from `" in text and "reward model = list_aware" in text


def test_a_copied_stages_wall_time_says_where_it_trained():
    """A checkpoint that keeps its training seconds gives one entry, labelled by whether the
    stage trained on here; an older one gives the restore's seconds beside the source's."""
    from goalrank_jax.comparison import compare

    def entries(here, checkpoint_seconds, source_seconds):
        models = types.SimpleNamespace(
            train_seconds={"prm": here, "dnn": 3.0},
            train_records={"prm": {"train_seconds": checkpoint_seconds}},
        )
        info = {"from": "elsewhere/seed_1/prm", "seconds": source_seconds}
        out = compare._copied_stage_seconds("prm", info, models)
        assert models.train_seconds == {"dnn": 3.0}  # the stage's own entry is replaced
        return out

    assert entries(240.0, 240.0, 241.5) == {"prm (copied, trained in the source)": 240.0}
    assert entries(300.0, 300.0, 241.5) == {"prm (copied, trained in the source and here)": 300.0}
    assert entries(240.0, 240.0, None) == {"prm (copied, trained in the source)": 240.0}
    assert entries(2.0, None, 241.5) == {
        "prm (copied, restored)": 2.0,
        "prm (trained in the source)": 241.5,
    }


def test_reusing_baselines_trained_under_another_config_is_refused(smoke_comparison, tmp_path):
    source, _, _ = smoke_comparison
    command = _smoke_command(
        tmp_path / "other",
        "--config.generator.ff_dim=24",  # DNN and NAR take their width from the generator's
        f"--config.compare.reuse_baselines_from={source}",
    )
    done = _run(command, returncode=2, timeout=300)
    assert "experiment.generator.ff_dim: 16 there, 24 here" in done.stderr
    assert not os.path.exists(tmp_path / "other" / "seed_7")
    missing = command[:-1] + [f"--config.compare.reuse_baselines_from={tmp_path / 'nowhere'}"]
    done = _run(missing, returncode=2, timeout=300)
    assert "is not a comparison workdir" in done.stderr


def test_baselines_are_reused_across_goalrank_settings_but_not_across_their_own(tmp_path):
    from goalrank_jax.comparison import reuse

    def write_source(values):
        experiment, comparison = comparison_config.from_config_dict(values)
        source = tmp_path / f"source_{len(list(tmp_path.iterdir()))}"
        source.mkdir()
        document = {
            "experiment": dataclasses.asdict(experiment),
            "compare": dataclasses.asdict(comparison),
        }
        (source / "config.json").write_text(json.dumps(document))
        return str(source)

    experiment, comparison = comparison_config.from_config_dict(_comparison_values())
    other_goalrank = _comparison_values()
    other_goalrank.train.patience += 3
    other_goalrank.train.num_epochs += 10
    other_goalrank.gro.reward_weight = 0.5
    reuse.check_source(experiment, comparison, write_source(other_goalrank))  # no error
    other_baseline = _comparison_values()
    other_baseline.compare.baseline_train.batch_size *= 2
    with pytest.raises(ValueError, match="compare.baseline_train.batch_size"):
        reuse.check_source(experiment, comparison, write_source(other_baseline))
    # The baselines' budget may be larger here (a stage that ended at the source's cap
    # continues), not smaller (one trained past this cap would be restored under it).
    shorter, longer = _comparison_values(), _comparison_values()
    shorter.compare.baseline_train.num_steps -= 1
    longer.compare.baseline_train.num_steps += 1
    reuse.check_source(experiment, comparison, write_source(shorter))  # no error
    with pytest.raises(ValueError, match="compare.baseline_train.num_steps"):
        reuse.check_source(experiment, comparison, write_source(longer))
    other_width = _comparison_values()
    other_width.generator.embed_dim *= 2
    with pytest.raises(ValueError, match="experiment.generator.embed_dim"):
        reuse.check_source(experiment, comparison, write_source(other_width))


def test_diagnose_finds_runs_and_seeds_that_earlier_invocations_trained(tmp_path):
    """config.json holds the last invocation only (here: seed 2, no ablations); the ablation
    runs and seeds trained by earlier invocations into the same workdir stay diagnosable."""
    from goalrank_jax import diagnose

    values = _comparison_values(seeds=(2,), ablations=())
    experiment, comparison = comparison_config.from_config_dict(values)
    document = {
        "experiment": dataclasses.asdict(experiment),
        "compare": dataclasses.asdict(comparison),
    }
    (tmp_path / "config.json").write_text(json.dumps(document))
    for stage in ("seed_2/goalrank", "seed_3/goalrank_wG0", "seed_3/goalrank_K16"):
        (tmp_path / stage).mkdir(parents=True)
    workdir = str(tmp_path)

    layout = diagnose.run_layout(workdir, "goalrank_wG0", 3)
    assert layout.generator_stage == "goalrank_wG0" and layout.config.seed == 3
    assert layout.generator_dir == os.path.join(workdir, "seed_3")
    assert layout.config.gro.supervised_weight == 0.0 and layout.config.gro.reward_weight == 1.0
    layout = diagnose.run_layout(workdir, "goalrank_K16", 3)
    assert layout.config.gro.group_size == 16  # not among compare.group_sizes of config.json
    default_k = experiment.gro.group_size
    assert diagnose.run_layout(workdir, f"goalrank_K{default_k}", 2).generator_stage == "goalrank"
    with pytest.raises(ValueError, match="was not trained"):
        diagnose.run_layout(workdir, "goalrank_prob", 3)
    with pytest.raises(ValueError, match=r"is not a seed of .*\[2, 3\]"):
        diagnose.run_layout(workdir, "goalrank", 4)


def test_diagnose_measures_a_goalrank_run_of_the_comparison(smoke_comparison):
    from goalrank_jax import diagnose

    workdir, _, _ = smoke_comparison
    out = diagnose.diagnose(
        workdir, split="test", log_fn=lambda _: None, run_name="goalrank", comparison_seed=7
    )
    document = _json(os.path.join(workdir, "comparison.json"))
    # The restored generator is the one the comparison evaluated: its greedy lists have the
    # comparison's test N@3, and it is the state of the step selected on validation.
    assert out["N@3_greedy"] == pytest.approx(
        document["summary"]["goalrank"]["N@3"]["mean"], abs=1e-5
    )
    record = document["training"]["7"]["goalrank"]
    assert out["stage_steps"]["generator"] == record["selected_step"]
    assert out["run"] == "goalrank (seed 7)" and np.isfinite(out["gro_progress"])
    assert -1.0 <= out["rm_true_spearman"] <= 1.0
    with pytest.raises(ValueError, match="must name one of its GoalRank runs"):
        diagnose.diagnose(workdir, log_fn=lambda _: None, run_name="nope")
    with pytest.raises(ValueError, match="is not a seed of"):
        diagnose.diagnose(workdir, log_fn=lambda _: None, run_name="goalrank", comparison_seed=3)
    with pytest.raises(ValueError, match="is a comparison workdir"):
        diagnose.load_config(workdir)

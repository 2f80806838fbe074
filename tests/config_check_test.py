"""A workdir refuses a config its trained stages were not trained under (goalrank_jax.config_check),
for a run of goalrank_jax.main and for a comparison workdir; fields no model depends on may
change, and budgets may grow."""

import importlib.util
import json
import os

import pytest

from goalrank_jax import config_check, configs, run
from goalrank_jax.comparison import compare
from goalrank_jax.comparison import config as comparison_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _experiment_file(name):
    spec = importlib.util.spec_from_file_location(
        f"experiments_{name}", os.path.join(REPO, "experiments", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("smoke")


def test_differences_name_changed_fields_and_leave_out_ignored_missing_and_grown_ones():
    saved = {
        "data": {"data_dir": "/a", "list_len": 3},
        "train": {"num_steps": 10, "log_every": 5, "batch_size": 8},
        "gro": {"group_size": 8},
    }
    current = {
        "data": {"data_dir": "/b", "list_len": 3},
        "train": {"num_steps": 20, "log_every": 1, "batch_size": 16},
        "gro": {"group_size": 16, "new_option": 1},
    }
    ignored = ("data.data_dir", "*.log_every")
    # Strict: every differing field, the one only ``current`` has included.
    assert config_check.differences(saved, current) == [
        "data.data_dir",
        "gro.group_size",
        "gro.new_option",
        "train.batch_size",
        "train.log_every",
        "train.num_steps",
    ]
    assert config_check.differences(
        saved, current, ignored, missing_ok=True, growable=config_check.RUN_GROWABLE
    ) == ["gro.group_size", "train.batch_size"]
    # The generator's budget may grow, not shrink, and not change from or to 0 (the other
    # budget field then applies).
    grow = config_check.RUN_GROWABLE
    for before, after, differs in [(10, 20, False), (20, 10, True), (0, 5, True), (5, 0, True)]:
        names = config_check.differences(
            {"train": {"num_epochs": before}}, {"train": {"num_epochs": after}}, growable=grow
        )
        assert names == (["train.num_epochs"] if differs else []), (before, after)
    # Not the budgets of what other stages are trained against: the reward model, the retriever.
    for group, field in [("reward_model", "train"), ("data", "retriever")]:
        names = config_check.differences(
            {group: {field: {"num_epochs": 10}}},
            {group: {field: {"num_epochs": 20}}},
            growable=grow,
        )
        assert names == [f"{group}.{field}.num_epochs"]


def test_check_saved_names_each_field_with_both_values(tmp_path):
    path = str(tmp_path / "config.json")
    config_check.check_saved(path, {"a": 1})  # no saved config: nothing to check
    (tmp_path / "config.json").write_text(json.dumps({"a": 1, "b": {"c": "x"}}))
    config_check.check_saved(path, {"a": 1, "b": {"c": "x"}})
    with pytest.raises(ValueError) as err:
        config_check.check_saved(path, {"a": 2, "b": {"c": "y"}}, what="workdir W")
    message = str(err.value)
    assert "workdir W was started under another config" in message
    assert "a: 1 there, 2 here" in message and "b.c: 'x' there, 'y' here" in message
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read .*config.json"):
        config_check.check_saved(path, {"a": 1})


def test_a_run_workdir_refuses_another_generator_before_writing(tmp_path):
    """run.train_and_evaluate checks before it prepares data or trains anything."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    cfg = _experiment_file("goalrank")
    config = configs.from_config_dict(cfg)
    saved = config_check.config_json(config)
    (workdir / "config.json").write_text(json.dumps(saved))
    cfg.generator.embed_dim = 2 * cfg.generator.embed_dim
    cfg.data.manual_dir = "/elsewhere"  # a path: no trained model depends on it
    other = configs.from_config_dict(cfg)
    with pytest.raises(ValueError, match="generator.embed_dim") as err:
        run.train_and_evaluate(other, str(workdir), lambda _: None)
    assert "manual_dir" not in str(err.value)
    assert sorted(os.listdir(workdir)) == ["config.json"]  # nothing prepared or trained
    assert json.loads((workdir / "config.json").read_text()) == saved  # not overwritten


def test_a_comparison_workdir_pins_what_its_stages_were_trained_under(tmp_path):
    def tree(**changes):
        cfg = _experiment_file("compare")
        for dotted, value in changes.items():
            group, _, field = dotted.rpartition("__")
            node = cfg
            for part in group.split("__") if group else []:
                node = node[part]
            node[field] = value
        experiment, comparison = comparison_config.from_config_dict(cfg)
        return compare.config_tree(experiment, comparison)

    path = str(tmp_path / "config.json")
    (tmp_path / "config.json").write_text(json.dumps(tree()))

    def check(**changes):
        config_check.check_saved(
            path, tree(**changes), compare.WORKDIR_IGNORED, compare.WORKDIR_GROWABLE
        )

    # What is run and how it is evaluated may change between invocations, and budgets grow.
    check(
        compare__seeds=(4, 5),
        compare__ablations=("loss_form",),
        compare__group_sizes=(5,),
        compare__split="validation",
        compare__num_proposals=7,
        data__manual_dir="/elsewhere",
        train__log_every=1,
        train__num_steps=2 * _experiment_file("compare").train.num_steps,
        compare__baseline_train__num_steps=5,
    )
    # What a trained stage depends on may not.
    for changes, field in [
        ({"gro__group_size": 16}, "experiment.gro.group_size"),
        ({"generator__embed_dim": 48}, "experiment.generator.embed_dim"),
        ({"compare__select_metric": ""}, "compare.select_metric"),
        ({"compare__baseline_train__batch_size": 4}, "compare.baseline_train.batch_size"),
        ({"eval__max_examples": 3}, "experiment.eval.max_examples"),
        ({"train__num_steps": 3}, "experiment.train.num_steps"),  # shrunk
        # The evaluator's and the candidates' budgets may not even grow.
        ({"reward_model__train__num_steps": 60}, "experiment.reward_model.train.num_steps"),
        ({"data__retriever__num_epochs": 20}, "experiment.data.retriever.num_epochs"),
        ({"eval__batch_size": 8}, "experiment.eval.batch_size"),  # the evaluation's draws
    ]:
        with pytest.raises(ValueError, match=field.replace(".", r"\.") + ": .* there, .* here"):
            check(**changes)


def test_a_seed_evaluated_under_other_settings_is_evaluated_again(tmp_path):
    def settings(**changes):
        cfg = _experiment_file("compare")
        for name, value in changes.items():
            group, field = name.split("__")
            cfg[group][field] = value
        experiment, comparison = comparison_config.from_config_dict(cfg)
        return compare.evaluation_settings(compare.config_tree(experiment, comparison))

    now = settings()
    path = tmp_path / "results.json"
    rows = {"prm": {"N@3": 0.5}}

    def cached(document, current, legacy=None):
        path.write_text(json.dumps({"rows": rows, **document}))
        return compare._load_cached(str(path), {"prm"}, False, current, legacy)

    assert cached({"split": "test", "evaluated_with": now}, now) is not None
    for change in (
        {"compare__split": "validation"},
        {"compare__num_proposals": 7},
        {"compare__mge_ks": (1, 3, 5)},  # a smaller largest pool: other samples per generator
        {"train__num_steps": 12},  # a grown budget trained further
        {"compare__prefix_num_epochs": 2.0},
    ):
        assert cached({"split": "test", "evaluated_with": now}, settings(**change)) is None, change
    # The largest pool decides; adding a smaller k only adds rows (checked on the rows).
    assert (
        cached({"split": "test", "evaluated_with": now}, settings(compare__mge_ks=(2, 8)))
        is not None
    )
    # A cache written before the settings were recorded: those of the saved config, its split.
    old = {"split": "test"}
    assert cached(old, now, legacy=now) is not None
    assert cached(old, settings(compare__split="validation"), legacy=now) is None
    assert cached(old, settings(compare__num_proposals=7), legacy=now) is None
    # A record lacking a field (written before the field was recorded): the saved config's.
    partial = {"split": "test", "evaluated_with": {"compare.num_proposals": 4}}
    assert cached(partial, now, legacy=now) is not None
    assert cached(partial, settings(train__num_steps=12), legacy=now) is None
    # A seed restored from a report (its models are elsewhere) is checked on its split only.
    restored = {"split": "test", "restored_from": "r.json"}
    assert cached(restored, settings(compare__num_proposals=7)) is not None
    assert cached(restored, settings(compare__split="validation")) is None

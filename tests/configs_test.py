"""Config conversion and validation: impossible values fail early with the field named."""

import importlib.util
import os

import pytest

from goalrank_jax import configs

EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "experiments", "goalrank.py")


def _experiment(arg=""):
    spec = importlib.util.spec_from_file_location("goalrank_experiment", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("arg", ["", "smoke"])
def test_experiment_configs_are_valid(arg):
    config = configs.from_config_dict(_experiment(arg))
    assert isinstance(config, configs.ExperimentConfig)
    assert config.data.list_len <= config.data.num_candidates


def test_unknown_experiment_arg():
    with pytest.raises(ValueError, match="Unknown config arg"):
        _experiment("huge")
    with pytest.raises(ValueError, match="Unknown evaluator 'oracle'"):
        _experiment("evaluator=oracle")


def test_the_evaluator_arg_sets_the_reward_model_kind():
    assert _experiment("").reward_model.kind == "pointwise"
    config = configs.from_config_dict(_experiment("smoke,evaluator=list_aware"))
    assert config.reward_model.kind == "list_aware"


@pytest.mark.parametrize(
    "arg, supervised_weight, expected",
    [
        ("", 1.0, "validation/goalrank/N@6"),
        ("", 0.0, "validation/goalrank/rm_reward"),
        ("smoke", 1.0, "validation/goalrank/N@3"),
        ("dataset=ml100k", 0.0, "validation/goalrank/rm_reward"),
    ],
)
def test_auto_select_metric_follows_the_objective(arg, supervised_weight, expected):
    cfg = _experiment(arg)
    assert cfg.train.select_metric == configs.SELECT_AUTO
    cfg.gro.supervised_weight = supervised_weight
    assert configs.from_config_dict(cfg).train.select_metric == expected


def test_an_explicit_select_metric_is_kept_for_pure_gro():
    cfg = _experiment("")
    cfg.gro.supervised_weight = 0.0
    cfg.train.select_metric = "validation/goalrank/N@6"
    assert configs.from_config_dict(cfg).train.select_metric == "validation/goalrank/N@6"
    config = configs.from_config_dict(_experiment(""))
    assert configs.resolve_select_metric(config) is config  # nothing left to resolve


def test_auto_select_metric_is_for_the_generator_only():
    cfg = _experiment("smoke")
    cfg.reward_model.train.select_metric = "auto"
    with pytest.raises(ValueError, match="reward_model.train.select_metric 'auto' is for the"):
        configs.from_config_dict(cfg)


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("data", "list_len"), 60, "list_len .* must be <= num_candidates"),
        (("gro", "group_size"), 1, "group_size .* must be >= 2"),
        (("gro", "loss_form"), "squared", "loss_form must be one of"),
        (("gro", "group_construction"), "beam", "group_construction must be one of"),
        (("gro", "tau_ref"), 0.0, "tau_ref must be > 0"),
        (("generator", "num_heads"), 3, "embed_dim .* divisible by num_heads"),
        (("generator", "dropout"), 1.5, "dropout must be in"),
        (("train", "num_steps"), 0, "num_steps must be > 0"),
        (("data", "dataset"), "movielens-9m", "dataset must be one of"),
        (("reward_model", "kind"), "oracle", "kind must be one of"),
    ],
)
def test_impossible_values_are_rejected(path, value, message):
    cfg = _experiment("smoke")
    node = cfg
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    if path == ("data", "list_len"):
        cfg.data.env.list_len = value
    with pytest.raises(ValueError, match=message):
        configs.from_config_dict(cfg)


def test_batch_must_divide_device_count():
    cfg = _experiment("smoke")
    cfg.train.batch_size = 18
    with pytest.raises(
        ValueError,
        match=r"train.batch_size \(18\) must be divisible by the number of devices \(4\)",
    ):
        configs.from_config_dict(cfg, num_devices=4)


def test_unknown_field_and_wrong_type():
    cfg = _experiment("smoke").to_dict()
    cfg["gro"]["group_sise"] = 4
    with pytest.raises(ValueError, match="gro.group_sise"):
        configs.from_config_dict(cfg)
    cfg = _experiment("smoke").to_dict()
    cfg["train"]["num_steps"] = "ten"
    with pytest.raises(ValueError, match="train.num_steps must be int"):
        configs.from_config_dict(cfg)


def test_config_is_frozen():
    config = configs.from_config_dict(_experiment("smoke"))
    with pytest.raises(AttributeError):
        config.gro.group_size = 3


def test_tuple_fields_split_comma_separated_flag_values():
    from goalrank_jax.config_fields import split_commas

    assert split_commas(("prm,mge, goalrank",)) == ("prm", "mge", "goalrank")
    assert split_commas(("",)) == ()
    assert split_commas("logged") == ("logged",)
    assert split_commas((1, 2, 3)) == (1, 2, 3)
    cfg = _experiment("smoke")
    cfg.gro.auxiliary = ("logged,random",)  # as --config.gro.auxiliary=logged,random gives it
    assert configs.from_config_dict(cfg).gro.auxiliary == ("logged", "random")

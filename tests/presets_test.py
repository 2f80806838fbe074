"""Size presets and parameter counts: eval_shape counts equal real ones, the presets grow
monotonically and hit their names, unknown names fail clearly, the config arg and the CLI work."""

import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from goalrank_jax import configs
from goalrank_jax.models import make_generator
from goalrank_jax.scaling import presets

REPO = os.path.join(os.path.dirname(__file__), "..")
EXPERIMENT = os.path.join(REPO, "experiments", "goalrank.py")
USERS, ITEMS, CANDIDATES, HISTORY = 30, 70, 9, 5


def _experiment():
    spec = importlib.util.spec_from_file_location("goalrank_experiment", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _real_batch(batch_size=2):
    rng = np.random.default_rng(0)
    history = rng.integers(0, ITEMS, (batch_size, HISTORY)).astype(np.int32)
    cand = rng.integers(0, ITEMS, (batch_size, CANDIDATES)).astype(np.int32)
    return {
        "user_id": rng.integers(0, USERS, batch_size).astype(np.int32),
        "history_items": history,
        "history_labels": rng.integers(0, 2, history.shape).astype(np.int32),
        "history_mask": np.ones(history.shape, bool),
        "cand_items": cand,
        "cand_mask": np.ones(cand.shape, bool),
    }


@pytest.mark.parametrize("variant", ["prefix", "fast"])
def test_eval_shape_count_equals_initialised_count(variant):
    model = presets.apply_preset(configs.ModelConfig(), "0.01m", variant)
    params = make_generator(model, USERS, ITEMS).init(jax.random.key(1), _real_batch())
    sizes = [np.asarray(x).size for x in jax.tree_util.tree_leaves(params)]
    counted = presets.count_generator(model, USERS, ITEMS, CANDIDATES, HISTORY)
    assert counted.total == sum(sizes)
    # Closed form of the vocabulary tables: item [I, D], user [U, D], label [2, D], bias [I, 1].
    dim = model.embed_dim
    assert counted.by_table == {
        "item_embed": ITEMS * dim,
        "user_embed": USERS * dim,
        "label_embed": 2 * dim,
        "item_bias": ITEMS,
        "feature_embed": 0,
    }
    assert counted.embedding == ITEMS * dim + USERS * dim + 2 * dim + ITEMS
    assert counted.non_embedding == counted.total - counted.embedding


@pytest.mark.parametrize("variant", ["prefix", "fast"])
def test_item_side_features_add_one_embedding_table(variant):
    model = presets.apply_preset(configs.ModelConfig(), "0.01m", variant)
    features = 7
    batch = _real_batch()
    rng = np.random.default_rng(3)
    for field in ("history", "cand"):
        items = batch[f"{field}_items"]
        batch[f"{field}_item_features"] = rng.integers(-1, features, items.shape + (2,)).astype(
            np.int32
        )
    params = make_generator(model, USERS, ITEMS, features).init(jax.random.key(1), batch)
    sizes = [np.asarray(x).size for x in jax.tree_util.tree_leaves(params)]
    counted = presets.count_generator(
        model, USERS, ITEMS, CANDIDATES, HISTORY, num_item_features=features
    )
    plain = presets.count_generator(model, USERS, ITEMS, CANDIDATES, HISTORY)
    assert counted.total == sum(sizes)
    assert counted.by_table["feature_embed"] == features * model.embed_dim
    assert counted.total - plain.total == features * model.embed_dim
    assert counted.non_embedding == plain.non_embedding


def test_counts_do_not_depend_on_the_history_length():
    model = presets.apply_preset(configs.ModelConfig(), "0.1m", "prefix")
    short = presets.count_generator(model, USERS, ITEMS, CANDIDATES, history_len=3)
    long = presets.count_generator(model, USERS, ITEMS, CANDIDATES, history_len=60)
    assert short == long


@pytest.fixture(scope="module")
def default_rows():
    data = configs.DataConfig()  # 1000 users, 2000 items, N=50: the default synthetic data
    users, items = presets.vocabulary(data)
    return presets.preset_rows(configs.ModelConfig(), users, items, data.num_candidates)


def test_presets_are_monotonic(default_rows):
    fields = [presets.PRESETS[row["preset"]] for row in default_rows]
    for smaller, larger in zip(fields, fields[1:], strict=False):
        assert larger.embed_dim > smaller.embed_dim
        assert larger.prefix_layers >= smaller.prefix_layers
        assert larger.fast_layers >= smaller.fast_layers
        assert larger.fast_decoder_layers >= smaller.fast_decoder_layers
    for variant in ("prefix", "fast"):
        for key in ("non_embedding", "total", "embedding"):
            counts = [row[variant][key] for row in default_rows]
            assert counts == sorted(counts) and len(set(counts)) == len(counts), (variant, key)


def test_presets_hit_their_names_on_the_default_data(default_rows):
    names = [row["preset"] for row in default_rows]
    assert names[0] == "0.01m" and presets.nominal_params(names[-1]) >= 1e8
    for row in default_rows:
        nominal = presets.nominal_params(row["preset"])
        for variant in ("prefix", "fast"):
            ratio = row[variant]["non_embedding"] / nominal
            assert 0.8 < ratio < 1.25, (row["preset"], variant, ratio)


def test_markdown_table_has_one_row_per_preset(default_rows):
    table = presets.markdown_table(default_rows).splitlines()
    assert len(table) == 2 + len(presets.PRESETS)
    assert "| 100m | 768 |" in table[2 + list(presets.PRESETS).index("100m")]


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown model size preset 'huge'; valid presets: 0.01m"):
        presets.get_preset("huge")
    with pytest.raises(ValueError, match="valid presets: .*100m"):
        presets.apply_preset(configs.ModelConfig(), "1M")
    with pytest.raises(ValueError, match="Unknown model size preset 'huge'"):
        _experiment().get_config("size=huge")


def test_size_arg_applies_the_preset_and_combines_with_the_others():
    module = _experiment()
    cfg = configs.from_config_dict(module.get_config("smoke,size=1m,variant=fast"))
    assert cfg.generator == presets.apply_preset(configs.ModelConfig(), "1m", "fast")
    assert cfg.data.num_candidates == 12  # smoke data kept
    default = configs.from_config_dict(module.get_config("size=0.1m"))
    assert default.generator == presets.apply_preset(default.generator, "0.1m", "fast")
    prefix = configs.from_config_dict(module.get_config("size=0.1m,variant=prefix"))
    assert (prefix.generator.variant, prefix.generator.num_layers) == ("prefix", 3)
    real = module.get_config("dataset=ml100k,smoke,size=0.3m")
    assert real.data.dataset == "ml100k" and real.generator.embed_dim == 80
    assert module.parse_args("dataset=ml100k,smoke,size=0.3m") == ("ml100k", True)
    with pytest.raises(ValueError, match="Unknown variant 'slow'"):
        module.get_config("variant=slow")


def _param_count(*args):
    return subprocess.run(
        [sys.executable, "-m", "goalrank_jax.scaling.param_count", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_param_count_command_line():
    done = _param_count(f"--config={EXPERIMENT}:size=10m", "--variant=fast")
    assert done.returncode == 0, done.stderr
    model = presets.apply_preset(configs.ModelConfig(), "10m", "fast")
    counted = presets.count_generator(model, 1000, 2000, 50)
    assert f"non-embedding {counted.non_embedding:,}" in done.stdout
    assert "layers=3 decoder_layers=1" in done.stdout
    bad = _param_count(f"--config={EXPERIMENT}:size=huge")
    assert bad.returncode == 2
    assert "valid presets: 0.01m, 0.03m" in bad.stderr

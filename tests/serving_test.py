"""Serving: the exported greedy ranker equals the policy it was exported from, the export command
restores the state the run evaluated, and the ranking command ranks JSON lines with jax and numpy
only and rejects bad input (exit 2, line and field named, nothing written)."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from goalrank_jax import checkpointing, configs, policies
from goalrank_jax import train_step as ts
from goalrank_jax.data import item_features
from goalrank_jax.models import make_generator
from goalrank_jax.serving import export, rank

sys.path.insert(0, os.path.dirname(__file__))
from step_fixtures import NUM_ITEMS, NUM_USERS, random_batch  # noqa: E402

N, L, H = 10, 3, 6
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING_PACKAGES = ("flax", "optax", "orbax", "tensorflow", "tensorflow_datasets", "grain")


VARIANTS = getattr(configs, "GENERATOR_VARIANTS", ("prefix",))


def _config(num_steps=6, select_metric="", variant="prefix"):
    generator = configs.ModelConfig(embed_dim=8, num_layers=1, num_heads=2, ff_dim=8)
    if variant != "prefix":
        generator = dataclasses.replace(generator, variant=variant)
    return configs.ExperimentConfig(
        data=configs.DataConfig(
            num_candidates=N, list_len=L, history_len=H, env=configs.EnvConfig(list_len=L)
        ),
        generator=generator,
        train=configs.StageConfig(num_steps=num_steps, select_metric=select_metric),
    )


def _batch(batch_size, seed):
    return random_batch(batch_size, N, L, H, seed)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """variant -> a tiny freshly initialised generator of that variant, exported once."""
    cache = {}

    def get(variant):
        if variant not in cache:
            generator = make_generator(_config(variant=variant).generator, NUM_USERS, NUM_ITEMS)
            params = jax.jit(generator.init)(jax.random.key(0), _batch(2, 0))
            policy = policies.GeneratorPolicy(generator, L)
            model_dir = str(tmp_path_factory.mktemp(f"ranker_{variant}"))
            metadata = export.export_ranker(
                policy, params, _batch(2, 0), model_dir, variant=variant
            )
            cache[variant] = dict(policy=policy, params=params, dir=model_dir, metadata=metadata)
        return cache[variant]

    return get


@pytest.fixture(scope="module")
def model(exported):
    return exported("prefix")


def _greedy(policy, params, batch):
    return np.asarray(jax.jit(policy.greedy)(params, batch))


def _assert_valid_lists(lists, cand_mask):
    assert lists.shape == (cand_mask.shape[0], L)
    for row, mask in zip(lists, cand_mask, strict=True):
        assert len(set(row.tolist())) == L
        assert mask[row].all()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batch_size", [1, 37])
def test_deserialized_ranker_equals_policy_greedy(exported, variant, batch_size):
    model = exported(variant)
    ranker = rank.load_ranker(model["dir"])
    assert ranker.metadata["generator_variant"] == variant
    batch = _batch(batch_size, seed=batch_size)
    lists = ranker(batch)
    _assert_valid_lists(lists, batch["cand_mask"])
    np.testing.assert_array_equal(lists, _greedy(model["policy"], model["params"], batch))


def test_ranker_with_item_features_bakes_in_the_table(tmp_path):
    """A generator that reads item side features exports with the [I, F] table baked in: the
    artifact takes item ids only and ranks as the policy does on the batch with its features."""
    table = np.random.default_rng(0).integers(-1, 4, (NUM_ITEMS, 2)).astype(np.int32)
    generator = make_generator(_config().generator, NUM_USERS, NUM_ITEMS, num_item_features=4)
    featured = _batch(2, 0)
    item_features.add_to_batch(featured, table)
    params = jax.jit(generator.init)(jax.random.key(0), featured)
    policy = policies.GeneratorPolicy(generator, L)
    export.export_ranker(policy, params, _batch(2, 0), str(tmp_path), item_features=table)
    batch = _batch(23, seed=4)
    lists = rank.load_ranker(str(tmp_path))(batch)
    item_features.add_to_batch(batch, table)
    np.testing.assert_array_equal(lists, _greedy(policy, params, batch))


def test_metadata_describes_the_artifact(model):
    meta = json.load(open(os.path.join(model["dir"], rank.METADATA_FILE)))
    assert meta == model["metadata"]
    assert (meta["num_candidates"], meta["list_len"], meta["history_len"]) == (N, L, H)
    assert (meta["num_users"], meta["num_items"]) == (NUM_USERS, NUM_ITEMS)
    assert [spec["name"] for spec in meta["inputs"]] == list(rank.INPUT_NAMES)
    shapes = {spec["name"]: spec["shape"] for spec in meta["inputs"]}
    assert shapes["user_id"] == [None] and shapes["cand_mask"] == [None, N]
    assert shapes["history_items"] == [None, H]
    assert meta["output"]["shape"] == [None, L]
    assert meta["format_version"] == rank.FORMAT_VERSION
    assert meta["jax_version"] == jax.__version__
    assert meta["generator_variant"] == "prefix"
    assert os.path.getsize(os.path.join(model["dir"], rank.ARTIFACT_FILE)) == meta["artifact_bytes"]
    assert sorted(os.listdir(model["dir"])) == [rank.ARTIFACT_FILE, rank.METADATA_FILE]


def _save_generator(directory, step, params):
    optimizer = ts.make_optimizer(configs.OptimConfig())
    ckpt = checkpointing.Checkpointer(directory)
    ckpt.save(step, ts.create_state(params, optimizer), {"iterator": {}})
    ckpt.wait()
    ckpt.close()


@pytest.fixture(scope="module")
def workdir(model, tmp_path_factory):
    """A run's workdir as run.py leaves it (config.json, final and best generator checkpoints),
    with freshly initialised parameters instead of trained ones."""
    root = str(tmp_path_factory.mktemp("run"))
    generator = model["policy"].module
    init = jax.jit(generator.init)
    final, best = init(jax.random.key(1), _batch(2, 0)), init(jax.random.key(2), _batch(2, 0))
    _save_generator(os.path.join(root, "generator", "checkpoints"), 6, final)
    _save_generator(os.path.join(root, "generator", "best"), 4, best)
    return dict(root=root, generator=generator, final=final, best=best)


def _write_config(root, config):
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f)


def test_export_command_exports_the_final_state(workdir, tmp_path):
    _write_config(workdir["root"], _config())
    out = str(tmp_path / "serving")
    result = subprocess.run(
        [sys.executable, "-m", "goalrank_jax.serving.export", f"--workdir={workdir['root']}"]
        + [f"--output={out}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 0, result.stderr
    ranker = rank.load_ranker(out)
    assert ranker.metadata["source"]["step"] == 6
    assert (ranker.num_users, ranker.num_items) == (NUM_USERS, NUM_ITEMS)
    batch = _batch(16, seed=5)
    policy = policies.GeneratorPolicy(workdir["generator"], L)
    np.testing.assert_array_equal(ranker(batch), _greedy(policy, workdir["final"], batch))


def test_export_takes_the_selected_state_with_select_metric(workdir, tmp_path):
    _write_config(workdir["root"], _config(select_metric="validation/goalrank/N@3"))
    out = str(tmp_path / "serving")
    meta = export.export_run(workdir["root"], out)
    assert meta["source"]["step"] == 4
    batch = _batch(16, seed=6)
    policy = policies.GeneratorPolicy(workdir["generator"], L)
    np.testing.assert_array_equal(
        rank.load_ranker(out)(batch), _greedy(policy, workdir["best"], batch)
    )


def test_export_refuses_an_unfinished_run(workdir, tmp_path):
    _write_config(workdir["root"], _config(num_steps=10))
    with pytest.raises(export.ExportError, match="has not finished"):
        export.export_run(workdir["root"], str(tmp_path / "serving"))
    assert not os.path.exists(tmp_path / "serving")


def _requests(count, seed):
    """Random valid requests: histories shorter and longer than H, 0 to N candidates beyond L."""
    rng = np.random.default_rng(seed)
    requests = []
    for i in range(count):
        history_len = int(rng.integers(0, H + 4))
        requests.append(
            {
                "request_id": f"r{i}",
                "user_id": int(rng.integers(0, NUM_USERS)),
                "history_items": rng.integers(0, NUM_ITEMS, history_len).tolist(),
                "history_labels": rng.integers(0, 2, history_len).tolist(),
                "cand_items": rng.choice(NUM_ITEMS, int(rng.integers(L, N + 1)), replace=False)
                .astype(int)
                .tolist(),
            }
        )
    return requests


def _expected_positions(policy, params, requests):
    """The policy's greedy lists on the requests padded as the training data is."""
    size = len(requests)
    history = np.full((size, H), -1, np.int32)
    labels = np.zeros((size, H), np.int32)
    cands = np.full((size, N), -1, np.int32)
    for row, request in enumerate(requests):
        kept = len(request["history_items"][-H:])
        if kept:
            history[row, H - kept :] = request["history_items"][-H:]
            labels[row, H - kept :] = request["history_labels"][-H:]
        cands[row, : len(request["cand_items"])] = request["cand_items"]
    batch = {
        "user_id": np.array([r["user_id"] for r in requests], np.int32),
        "history_items": history,
        "history_labels": labels,
        "history_mask": history >= 0,
        "cand_items": cands,
        "cand_mask": cands >= 0,
    }
    return _greedy(policy, params, batch)


_RUN_AND_LIST_MODULES = """
import json, runpy, sys
sys.argv = ["rank"] + sys.argv[1:]
try:
    runpy.run_module("goalrank_jax.serving.rank", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_rank_command_end_to_end_with_jax_and_numpy_only(model, tmp_path):
    requests = _requests(11, seed=3)
    requests[0]["history_items"], requests[0]["history_labels"] = [], []
    source = tmp_path / "requests.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in requests) + "\n")
    output = tmp_path / "ranked.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST_MODULES, f"--model={model['dir']}"]
        + [f"--input={source}", f"--output={output}", "--batch_size=4"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, result.stderr
    modules = report["modules"]
    assert not [m for m in modules if m.split(".")[0] in TRAINING_PACKAGES]
    # rank.py ran as __main__; no other module of the package was imported.
    assert [m for m in modules if m.startswith("goalrank_jax")] == [
        "goalrank_jax",
        "goalrank_jax.serving",
    ]

    ranked = [json.loads(line) for line in output.read_text().splitlines()]
    expected = _expected_positions(model["policy"], model["params"], requests)
    assert [r["request_id"] for r in ranked] == [r["request_id"] for r in requests]
    for request, result_row, positions in zip(requests, ranked, expected, strict=True):
        assert result_row["ranked_positions"] == positions.tolist()
        assert len(set(result_row["ranked_items"])) == L
        assert result_row["ranked_items"] == [request["cand_items"][i] for i in positions]


def _good():
    return {
        "request_id": 7,
        "user_id": 3,
        "history_items": [5, 6, 7],
        "history_labels": [0, 1, 0],
        "cand_items": [10, 11, 12, 13],
    }


def _with(**changes):
    request = _good()
    for key, value in changes.items():
        if value is None:
            del request[key]
        else:
            request[key] = value
    return json.dumps(request)


BAD_LINES = {
    "invalid_json": ('{"request_id": 1, "user_id": ', "invalid JSON"),
    "not_an_object": ("[1, 2, 3]", "JSON object"),
    "missing_cand_items": (_with(cand_items=None), "'cand_items'"),
    "missing_request_id": (_with(request_id=None), "'request_id'"),
    "user_id_string": (_with(user_id="3"), "'user_id'"),
    "user_id_out_of_range": (_with(user_id=NUM_USERS), "'user_id'"),
    "user_id_negative": (_with(user_id=-1), "'user_id'"),
    "history_item_float": (_with(history_items=[5, 6.5, 7]), "'history_items'"),
    "history_item_out_of_range": (_with(history_items=[5, -1, 7]), "'history_items'"),
    "history_labels_length": (_with(history_labels=[0, 1]), "'history_labels'"),
    "history_label_not_binary": (_with(history_labels=[0, 2, 0]), "'history_labels'"),
    "cand_items_not_a_list": (_with(cand_items=10), "'cand_items'"),
    "cand_item_out_of_range": (_with(cand_items=[10, 11, NUM_ITEMS]), "'cand_items'"),
    "duplicate_candidates": (_with(cand_items=[10, 11, 10, 12]), "'cand_items'"),
    "fewer_than_L_candidates": (_with(cand_items=[10, 11]), "'cand_items'"),
    "oversized_request": (_with(cand_items=list(range(N + 1))), "'cand_items'"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_rank_command_rejects_bad_input(model, tmp_path, capsys, case):
    line, field = BAD_LINES[case]
    source = tmp_path / "requests.jsonl"
    source.write_text(_with() + "\n" + line + "\n" + _with() + "\n")
    output = tmp_path / "ranked.jsonl"
    code = rank.main([f"--model={model['dir']}", f"--input={source}", f"--output={output}"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{source}:2: " in err and field in err, err
    assert ":1:" not in err and ":3:" not in err
    assert not output.exists()
    assert os.listdir(tmp_path) == ["requests.jsonl"]


def test_rank_command_rejects_a_corrupted_artifact(model, tmp_path, capsys):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    blob = open(os.path.join(model["dir"], rank.ARTIFACT_FILE), "rb").read()
    (model_dir / rank.ARTIFACT_FILE).write_bytes(blob[: len(blob) // 2])
    meta = open(os.path.join(model["dir"], rank.METADATA_FILE)).read()
    (model_dir / rank.METADATA_FILE).write_text(meta)
    source = tmp_path / "requests.jsonl"
    source.write_text(_with() + "\n")
    output = tmp_path / "ranked.jsonl"
    code = rank.main([f"--model={model_dir}", f"--input={source}", f"--output={output}"])
    assert code == 2
    assert "checksum" in capsys.readouterr().err
    assert not output.exists()

"""Item side features (genre readers, the table, batch lookups, the encoder) and the
synthetic world's impression candidates."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goalrank_jax import configs
from goalrank_jax.data import item_features, pipeline, synthetic_builder
from goalrank_jax.data import requests as requests_lib
from goalrank_jax.data.raw_formats import RawDataError
from goalrank_jax.data.retriever import RetrieverConfig
from goalrank_jax.env import synthetic
from goalrank_jax.models import make_reward_model


def write(path, text):
    path.write_text(text, encoding="latin-1")
    return str(path)


def test_read_genres_of_the_three_movielens_item_files(tmp_path):
    atomic = write(
        tmp_path / "ml-100k.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n7\tTwelve Monkeys\t1995\tDrama Sci-Fi\n",
    )
    assert item_features.read_genres(atomic) == {
        "1": ["Animation", "Children's", "Comedy"],
        "7": ["Drama", "Sci-Fi"],
    }
    flags = ["0"] * 19
    flags[1] = flags[8] = "1"  # Action, Drama in u.genre order.
    u_item = write(tmp_path / "u.item", "5|Copycat (1995)|01-Jan-1995||http://x|" + "|".join(flags))
    assert item_features.read_genres(u_item) == {"5": ["Action", "Drama"]}
    movies = write(tmp_path / "movies.dat", "2::Jumanji (1995)::Adventure|Children's|Fantasy\n")
    assert item_features.read_genres(movies) == {"2": ["Adventure", "Children's", "Fantasy"]}


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("ml-100k.item", "item_id:token\ttitle:token_seq\n1\tx\n", "class"),
        ("ml-100k.item", "item_id:token\tclass:token_seq\n1\tDrama\textra\n", ":2: expected 2"),
        ("u.item", "1|a|b|c|d|0|1\n", ":1: expected"),
        ("movies.dat", "1::Toy Story\n", ":1: expected id::title::genres"),
    ],
)
def test_read_genres_names_file_and_line_of_a_bad_row(tmp_path, name, text, match):
    with pytest.raises(RawDataError, match=match):
        item_features.read_genres(write(tmp_path / name, text))


def test_table_from_names_numbers_the_sorted_vocabulary_in_item_order():
    table, names = item_features.table_from_names(
        np.array(["10", "2", "7"]), {"2": ["b", "a"], "10": ["c"], "99": ["z"]}
    )
    assert names == ["a", "b", "c"]
    np.testing.assert_array_equal(table, [[2, -1], [0, 1], [-1, -1]])


@pytest.mark.parametrize("xp", [np, jnp])
def test_add_to_batch_looks_up_rows_and_pads_missing_items(xp):
    table = np.array([[0, -1], [1, 2], [2, -1]], np.int32)
    batch = {"history_items": xp.array([[-1, 2]]), "cand_items": xp.array([[1, 0, -1]])}
    item_features.add_to_batch(batch, table, xp=xp)
    np.testing.assert_array_equal(batch["history_item_features"], [[[-1, -1], [2, -1]]])
    np.testing.assert_array_equal(batch["cand_item_features"], [[[1, 2], [0, -1], [-1, -1]]])


def toy_batch():
    batch = {
        "user_id": np.array([0, 1], np.int32),
        "history_items": np.array([[3, 4, -1], [5, -1, -1]], np.int32),
        "history_labels": np.array([[1, 0, 0], [1, 0, 0]], np.int32),
        "cand_items": np.array([[0, 1, 2, 3], [4, 5, 6, -1]], np.int32),
    }
    batch["history_mask"] = batch["history_items"] >= 0
    batch["cand_mask"] = batch["cand_items"] >= 0
    return batch


def test_side_features_enter_the_scores_and_are_absent_without_them():
    model_config = configs.ModelConfig(embed_dim=8, num_layers=1, ff_dim=8, dropout=0.0)
    table = np.array([[i % 3] for i in range(7)], np.int32)
    batch = toy_batch()
    item_features.add_to_batch(batch, table)
    model = make_reward_model("pointwise", model_config, 2, 7, num_item_features=3)
    params = model.init(jax.random.key(0), batch)
    embedding = params["params"]["RequestEncoder_0"]["feature_embed"]["embedding"]
    assert embedding.shape == (3, 8)
    scores = model.apply(params, batch)
    changed = dict(batch, cand_item_features=batch["cand_item_features"].copy())
    changed["cand_item_features"][0, 1, 0] = 0  # candidate 1 of request 0: feature 1 -> 0
    new = model.apply(params, changed)
    assert abs(float(new[0, 1] - scores[0, 1])) > 1e-6
    # Without features the model has no feature table and ignores the fields.
    plain = make_reward_model("pointwise", model_config, 2, 7)
    plain_params = plain.init(jax.random.key(0), batch)
    assert "feature_embed" not in str(jax.tree_util.tree_structure(plain_params))
    np.testing.assert_array_equal(
        plain.apply(plain_params, batch), plain.apply(plain_params, changed)
    )


def test_impression_candidates_are_the_unshown_retrieved_items():
    logs = requests_lib.Logs(
        user=np.repeat(np.arange(4), 3).astype(np.int32),
        items=np.arange(72, dtype=np.int32).reshape(12, 6) % 40,
        labels=np.ones((12, 6), np.int8),
        order=np.tile(np.arange(3), 4).astype(np.int64),
        unshown=(np.arange(12 * 5, dtype=np.int32).reshape(12, 5) + 100),
    )
    by_split, _ = requests_lib.build_requests(
        logs,
        4,
        200,
        9,
        4,
        0.25,
        0.25,
        RetrieverConfig(num_epochs=1),
        0,
        lambda _: None,
        candidates="impression",
    )
    train = by_split["train"]
    for row in range(len(train["user_id"])):
        others = train["cand_items"][row][train["cand_logged_pos"][row] < 0]
        user, order = train["user_id"][row], train["request_order"][row]
        source = int(np.flatnonzero((logs.user == user) & (logs.order == order))[0])
        assert sorted(others) == sorted(logs.unshown[source, :3])
    with pytest.raises(ValueError, match="impression"):
        requests_lib.build_requests(
            dataclasses.replace(logs, unshown=None),
            4,
            200,
            9,
            4,
            0.25,
            0.25,
            RetrieverConfig(num_epochs=1),
            0,
            lambda _: None,
            candidates="impression",
        )


def test_impression_candidates_need_the_synthetic_world_with_enough_retrieved_items():
    with pytest.raises(ValueError, match="impression"):
        configs.DataConfig(
            candidates="impression", env=synthetic.EnvConfig(impression_size=0)
        ).validate()
    with pytest.raises(ValueError, match="impression"):
        configs.DataConfig(
            dataset="ml100k",
            candidates="impression",
            env=synthetic.EnvConfig(impression_size=50),
        ).validate()
    configs.DataConfig(
        candidates="impression", env=synthetic.EnvConfig(impression_size=50)
    ).validate()


def test_synthetic_batches_carry_each_items_category(tmp_path):
    env = synthetic.EnvConfig(
        num_users=30,
        num_items=150,
        num_categories=5,
        requests_per_user=8,
        list_len=3,
        impression_size=12,
        retrieval_temperature=2.0,
    )
    data = configs.DataConfig(
        num_candidates=10,
        list_len=3,
        history_len=6,
        oracle_beam_width=4,
        candidates="impression",
        env=env,
        retriever=RetrieverConfig(num_epochs=1),
    )
    dataset = pipeline.load_dataset(data, str(tmp_path), log_fn=lambda _: None)
    assert dataset.num_item_features == 5
    np.testing.assert_array_equal(
        dataset.item_features[:, 0], synthetic_builder.world_categories(env)
    )
    batch = next(pipeline.eval_batches(dataset.sources["test"], 8))
    # cand_category is the true model's field, stored by the builder from the world itself.
    np.testing.assert_array_equal(batch["cand_item_features"][..., 0], batch["cand_category"])
    hist = batch["history_items"]
    np.testing.assert_array_equal(
        batch["history_item_features"][..., 0],
        np.where(hist >= 0, dataset.item_features[np.maximum(hist, 0), 0], -1),
    )
    off = pipeline.load_dataset(
        dataclasses.replace(data, item_features=False), str(tmp_path), lambda _: None
    )
    assert off.num_item_features == 0 and off.item_features is None
    assert "cand_item_features" not in next(pipeline.eval_batches(off.sources["test"], 8))
    # Turning the features off reads the same prepared dataset.
    assert len(os.listdir(tmp_path / "goalrank_synthetic")) == 1

"""Raw-format readers on files written here (valid and malformed), and the preprocessing
protocol (deduplication, k-core, chunking, labels) against plain-Python recomputations."""

import os

import numpy as np
import pytest

from goalrank_jax import configs
from goalrank_jax.data import raw_formats, real_data
from goalrank_jax.data.raw_formats import RawDataError

ROWS = [("u1", "i1", 5.0, 100.0), ("u2", "i1", 3.0, 50.0), ("u1", "i2", 4.0, 90.0)]


def write(tmp_path, name, text):
    path = os.path.join(tmp_path, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def as_rows(inter):
    return list(
        zip(
            inter.user.tolist(),
            inter.item.tolist(),
            inter.feedback.tolist(),
            inter.timestamp.tolist(),
            strict=True,
        )
    )


# One writer per raw format: rows -> file text.
FORMATS = {
    "udata": (
        "u.data",
        lambda rows: "".join(f"{u}\t{i}\t{r:g}\t{t:g}\n" for u, i, r, t in rows),
        raw_formats.read_udata,
    ),
    "inter": (
        "ml-100k.inter",
        lambda rows: (
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            + "".join(f"{u}\t{i}\t{r:g}\t{t:g}\n" for u, i, r, t in rows)
        ),
        raw_formats.read_atomic_inter,
    ),
    "dat": (
        "ratings.dat",
        lambda rows: "".join(f"{u}::{i}::{r:g}::{t:g}\n" for u, i, r, t in rows),
        raw_formats.read_ratings_dat,
    ),
    "amazon": (
        "ratings_Books.csv",
        lambda rows: "".join(f"{u},{i},{r:g},{t:g}\n" for u, i, r, t in rows),
        raw_formats.read_amazon_csv,
    ),
    "kuairand": (
        "log_standard_4_08_to_4_21_pure.csv",
        lambda rows: (
            "user_id,video_id,date,hourmin,time_ms,is_click,is_like\n"
            + "".join(f"{u},{i},20220408,1000,{t:g},{int(r >= 4)},0\n" for u, i, r, t in rows)
        ),
        lambda path: raw_formats.read_kuairand_logs([path]),
    ),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_reader_round_trip(tmp_path, fmt):
    name, render, read = FORMATS[fmt]
    inter = read(write(tmp_path, name, render(ROWS)))
    expected = [(u, i, float(r >= 4) if fmt == "kuairand" else r, t) for u, i, r, t in ROWS]
    assert as_rows(inter) == expected


def test_amazon_header_line_is_skipped(tmp_path):
    path = write(tmp_path, "ratings_Books.csv", "user,item,rating,timestamp\nA,B,5,7\n")
    assert as_rows(raw_formats.read_amazon_csv(path)) == [("A", "B", 5.0, 7.0)]


def test_atomic_inter_columns_found_by_name(tmp_path):
    text = "timestamp:float\titem_id:token\tuser_id:token\trating:float\n9\tx\ty\t2\n"
    path = write(tmp_path, "a.inter", text)
    assert as_rows(raw_formats.read_atomic_inter(path)) == [("y", "x", 2.0, 9.0)]


INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"

# Malformed inputs: (format, file text, expected message fragment, line number or None).
MALFORMED = [
    ("udata", "1\t2\t3\t4\n1\t2\t3\n", "expected 4 fields", 2),
    ("udata", "1\t2\tfive\t4\n", "rating is not a number: 'five'", 1),
    ("udata", "1\t2\t3\tnan\n", "timestamp is not finite", 1),
    ("udata", "", "empty file", None),
    ("udata", "\n\n", "empty file", None),
    ("dat", "1::2::3::4\n1::2::3::4::5\n", "expected 4 fields", 2),
    ("dat", "1::2::x::4\n", "rating is not a number", 1),
    ("amazon", "a,b,5,1\na,b,5\n", "expected 4 fields", 2),
    ("amazon", "a,,5,1\n", "empty user or item id", 1),
    ("amazon", "", "empty file", None),
    ("inter", INTER_HEADER + "1\t2\t3\n", "got 3", 2),
    ("inter", "user_id\titem_id\trating\ttimestamp\n1\t2\t3\t4\n", "typed header", 1),
    ("inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t4\n", "lacks", 1),
    (
        "inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\tx\t4\n",
        "rating",
        2,
    ),
    ("inter", "", "empty file", None),
    ("kuairand", "user_id,video_id,time_ms,is_click\n1,2,3\n", "expected 4", 2),
    ("kuairand", "user_id,video_id,time_ms,is_click\n1,2,3,yes\n", "is_click is not a number", 2),
    ("kuairand", "user_id,video_id,time_ms\n1,2,3\n", "lacks the columns ['is_click']", 1),
    ("kuairand", "", "empty file", None),
]


@pytest.mark.parametrize("fmt,text,fragment,line", MALFORMED)
def test_malformed_input_names_file_line_and_problem(tmp_path, fmt, text, fragment, line):
    name, _, read = FORMATS[fmt]
    path = write(tmp_path, name, text)
    with pytest.raises(RawDataError) as err:
        read(path)
    message = str(err.value)
    assert message.startswith(path), message
    assert fragment in message, message
    if line is not None:
        assert f"{path}:{line}:" in message, message


def test_missing_files_say_what_is_expected_and_where(tmp_path):
    with pytest.raises(RawDataError, match="manual_dir"):
        real_data.find_raw_files("ml1m", "")
    with pytest.raises(RawDataError, match="ratings.dat.*grouplens"):
        real_data.find_raw_files("ml1m", str(tmp_path))
    with pytest.raises(RawDataError, match="not a directory"):
        real_data.find_raw_files("ml100k", str(tmp_path / "nope"))
    with pytest.raises(RawDataError, match="log_standard_.*kuairand.com"):
        real_data.find_raw_files("kuairand", str(tmp_path))
    nested = tmp_path / "ml-100k"
    nested.mkdir()
    write(nested, "u.data", "1\t2\t3\t4\n")
    assert real_data.find_raw_files("ml100k", str(tmp_path)) == [str(nested / "u.data")]


def random_interactions(seed, num_users=30, num_items=25, count=900):
    rng = np.random.default_rng(seed)
    return raw_formats.Interactions(
        user=np.asarray([f"u{x}" for x in rng.integers(0, num_users, count)]),
        item=np.asarray([f"i{x}" for x in rng.zipf(1.6, count) % num_items]),
        feedback=rng.integers(1, 6, count).astype(np.float32),
        timestamp=rng.integers(0, 50, count).astype(np.float64),  # many ties
    )


def test_deduplicate_keeps_earliest_pair():
    inter = random_interactions(0)
    kept = real_data.deduplicate(inter)
    seen, expected = set(), []
    order = sorted(range(len(inter)), key=lambda r: (inter.timestamp[r], r))
    for r in order:
        pair = (inter.user[r], inter.item[r])
        if pair not in seen:
            seen.add(pair)
            expected.append(r)
    assert as_rows(kept) == as_rows(real_data.subset(inter, np.sort(expected)))


@pytest.mark.parametrize("k", [2, 4, 6])
def test_k_core_is_the_largest_k_core(k):
    inter = real_data.deduplicate(random_interactions(1))
    kept = real_data.k_core(inter, k)
    # Independent fixed point by repeated removal, one row at a time.
    rows = list(range(len(inter)))
    changed = True
    while changed:
        users = {}
        items = {}
        for r in rows:
            users[inter.user[r]] = users.get(inter.user[r], 0) + 1
            items[inter.item[r]] = items.get(inter.item[r], 0) + 1
        new = [r for r in rows if users[inter.user[r]] >= k and items[inter.item[r]] >= k]
        changed = len(new) != len(rows)
        rows = new
    assert as_rows(kept) == as_rows(real_data.subset(inter, np.asarray(rows, int)))
    assert len(kept) > 0


def test_to_logs_chunks_each_timeline_in_time_order():
    inter = real_data.k_core(real_data.deduplicate(random_interactions(2)), 3)
    list_len = 4
    logs, num_users, num_items = real_data.to_logs(inter, list_len, label_threshold=4.0)
    users = sorted(set(inter.user.tolist()))
    items = sorted(set(inter.item.tolist()))
    assert (num_users, num_items) == (len(users), len(items))
    expected = []
    for u_index, user in enumerate(users):
        rows = [r for r in range(len(inter)) if inter.user[r] == user]
        rows.sort(key=lambda r: (inter.timestamp[r], r))
        for j in range(len(rows) // list_len):
            chunk = rows[j * list_len : (j + 1) * list_len]
            expected.append(
                (
                    u_index,
                    j,
                    [items.index(inter.item[r]) for r in chunk],
                    [int(inter.feedback[r] >= 4.0) for r in chunk],
                )
            )
    got = sorted(
        zip(
            logs.user.tolist(),
            logs.order.tolist(),
            logs.items.tolist(),
            logs.labels.tolist(),
            strict=True,
        )
    )
    assert got == sorted(expected)


def test_real_dataset_configs_validate():
    cfg = configs.DataConfig(dataset="ml100k", manual_dir="x", list_len=6)
    cfg.validate()  # env.list_len is not checked against real data
    with pytest.raises(ValueError, match="k_core"):
        configs.DataConfig(dataset="ml100k", k_core=0).validate()
    with pytest.raises(ValueError, match="dataset"):
        configs.DataConfig(dataset="movielens").validate()


@pytest.mark.parametrize("dataset", ["ml1m", "kuairand"])
def test_builder_end_to_end_on_written_files(tmp_path, dataset):
    rng = np.random.default_rng(3)
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    rows = [
        (f"u{u}", f"i{i}", float(rng.integers(1, 6)), float(t))
        for u in range(24)
        for t, i in enumerate(rng.choice(60, 30, replace=False))
    ]
    name, render, _ = FORMATS["dat" if dataset == "ml1m" else "kuairand"]
    write(raw_dir, name, render(rows))
    data = configs.DataConfig(
        dataset=dataset,
        manual_dir=str(raw_dir),
        num_candidates=12,
        list_len=3,
        history_len=5,
        k_core=5,
        label_threshold=1.0 if dataset == "kuairand" else 4.0,
        retriever=configs.RetrieverConfig(num_epochs=1),
    )
    data.validate()
    builder = real_data.prepare(data, str(tmp_path / "tfds"), log_fn=lambda _: None)
    stats = builder.info.metadata["stats"]
    assert stats["raw_interactions"] == len(rows)
    assert stats["requests"] == 24 * 10  # every user: 30 distinct items -> 10 lists of 3
    sources = builder.as_data_source()
    sizes = {split: len(sources[split]) for split in ("train", "validation", "test")}
    assert sum(sizes.values()) == 240 and min(sizes.values()) > 0
    example = sources["test"][0]
    assert sorted(np.asarray(example["cand_logged_pos"])[example["cand_logged_pos"] >= 0]) == [
        0,
        1,
        2,
    ]
    assert len(set(np.asarray(example["cand_items"]).tolist())) == 12  # distinct candidates

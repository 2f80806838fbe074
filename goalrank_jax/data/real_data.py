"""Real interaction logs -> ranking requests (SPEC section 5), and their TFDS builder.

Protocol, every choice a ``DataConfig`` value: read the raw files from ``data.manual_dir``; drop
repeated (user, item) pairs (first occurrence kept); iterative k-core filtering
(``data.k_core``: every user and item keeps at least k interactions); per user, interactions
sorted by time (file order breaks ties) and chunked into consecutive requests of L items (the
logged list; a final incomplete chunk is dropped); label = feedback >= ``data.label_threshold``;
then :func:`goalrank_jax.data.requests.build_requests` (history, time split per user, the stage-1
MF retriever trained on the train split, N - L retrieved candidates, per-request shuffling).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import time
from collections.abc import Callable

import numpy as np

from goalrank_jax.data import item_features as item_features_lib
from goalrank_jax.data import raw_formats, tfds_requests
from goalrank_jax.data import requests as requests_lib
from goalrank_jax.data.raw_formats import RawDataError


@dataclasses.dataclass(frozen=True)
class RawSource:
    """Where a dataset's raw files are expected and how they are read."""

    patterns: tuple[str, ...]  # Glob patterns tried in order under manual_dir (recursive).
    reader: str  # Name of the reader in raw_formats (see read_raw).
    source: str  # Where users get the files.
    # Optional item file with the items' genres (item_features.read_genres), tried in order.
    item_patterns: tuple[str, ...] = ()


RAW_SOURCES = {
    "ml100k": RawSource(
        ("ml-100k.inter", "u.data"),
        "udata_or_inter",
        "https://grouplens.org/datasets/movielens/100k/ (ml-100k.zip, file u.data), or "
        "ml-100k.inter from the recbole==1.2.1 wheel on PyPI (recbole/dataset_example/ml-100k/): "
        "pip download --no-deps recbole==1.2.1 && unzip -j recbole-1.2.1-*.whl "
        "'recbole/dataset_example/ml-100k/ml-100k.inter' -d DIR",
        ("ml-100k.item", "u.item"),
    ),
    "ml1m": RawSource(
        ("ratings.dat",),
        "ratings_dat",
        "https://grouplens.org/datasets/movielens/1m/ (ml-1m.zip, file ratings.dat)",
        ("movies.dat",),
    ),
    "amazon_book": RawSource(
        ("ratings_Books.csv", "Books.csv"),
        "amazon_csv",
        "https://cseweb.ucsd.edu/~jmcauley/datasets/amazon_v2/ (Books ratings only, CSV "
        "user,item,rating,timestamp)",
    ),
    "kuairand": RawSource(
        ("log_standard_*.csv",),
        "kuairand",
        "https://kuairand.com/ (KuaiRand-Pure or KuaiRand-1K, files data/log_standard_*.csv)",
    ),
}


def find_raw_files(dataset: str, manual_dir: str) -> list[str]:
    """The raw files of ``dataset`` under ``manual_dir`` (searched recursively).

    Raises RawDataError saying which files are expected where, and where to get them.
    """
    if dataset not in RAW_SOURCES:
        raise ValueError(f"Unknown real dataset {dataset!r}; available: {sorted(RAW_SOURCES)}")
    spec = RAW_SOURCES[dataset]
    expected = " or ".join(repr(p) for p in spec.patterns)
    if not manual_dir:
        raise RawDataError(
            f"data.dataset={dataset!r} reads raw files from --config.data.manual_dir=DIR; "
            f"expected {expected} in DIR. Get them from {spec.source}"
        )
    if not os.path.isdir(manual_dir):
        raise RawDataError(
            f"data.manual_dir {manual_dir!r} is not a directory; expected {expected} in it. "
            f"Get them from {spec.source}"
        )
    for pattern in spec.patterns:
        found = sorted(glob.glob(os.path.join(manual_dir, "**", pattern), recursive=True))
        if found:
            return found if dataset == "kuairand" else found[:1]
    raise RawDataError(
        f"no raw files for {dataset!r} under {manual_dir!r}: expected {expected}. "
        f"Get them from {spec.source}"
    )


def find_item_file(dataset: str, manual_dir: str) -> str | None:
    """The optional item file (genres) of ``dataset`` under ``manual_dir``, or None."""
    for pattern in RAW_SOURCES[dataset].item_patterns:
        found = sorted(glob.glob(os.path.join(manual_dir, "**", pattern), recursive=True))
        if found:
            return found[0]
    return None


def read_raw(dataset: str, paths: list[str], feedback_column: str) -> raw_formats.Interactions:
    reader = RAW_SOURCES[dataset].reader
    if reader == "udata_or_inter":
        path = paths[0]
        if path.endswith(".inter"):
            return raw_formats.read_atomic_inter(path)
        return raw_formats.read_udata(path)
    if reader == "ratings_dat":
        return raw_formats.read_ratings_dat(paths[0])
    if reader == "amazon_csv":
        return raw_formats.read_amazon_csv(paths[0])
    return raw_formats.read_kuairand_logs(paths, feedback_column)


def deduplicate(inter: raw_formats.Interactions) -> raw_formats.Interactions:
    """Keeps the earliest interaction of each (user, item) pair (file order breaks ties)."""
    order = np.lexsort((np.arange(len(inter)), inter.timestamp))
    pairs = np.char.add(np.char.add(inter.user[order], "\x00"), inter.item[order])
    _, first = np.unique(pairs, return_index=True)
    keep = np.sort(order[first])
    return subset(inter, keep)


def subset(inter: raw_formats.Interactions, rows: np.ndarray) -> raw_formats.Interactions:
    """The interactions at the given [K] row indices, in that order."""
    return raw_formats.Interactions(
        user=inter.user[rows],
        item=inter.item[rows],
        feedback=inter.feedback[rows],
        timestamp=inter.timestamp[rows],
    )


def k_core(inter: raw_formats.Interactions, k: int) -> raw_formats.Interactions:
    """Iteratively removes users and items with fewer than k interactions."""
    keep = np.ones(len(inter), bool)
    while True:
        _, user_idx, user_count = np.unique(
            inter.user[keep], return_inverse=True, return_counts=True
        )
        _, item_idx, item_count = np.unique(
            inter.item[keep], return_inverse=True, return_counts=True
        )
        ok = (user_count[user_idx] >= k) & (item_count[item_idx] >= k)
        if ok.all():
            return subset(inter, np.flatnonzero(keep))
        keep[np.flatnonzero(keep)[~ok]] = False


def to_logs(
    inter: raw_formats.Interactions, list_len: int, label_threshold: float
) -> tuple[requests_lib.Logs, int, int]:
    """Chunks each user's timeline into logged lists. Returns (logs, num_users, num_items)."""
    user_keys, user = np.unique(inter.user, return_inverse=True)
    item_keys, item = np.unique(inter.item, return_inverse=True)
    rows = np.lexsort((np.arange(len(inter)), inter.timestamp, user))
    user, item = user[rows], item[rows]
    label = (inter.feedback[rows] >= label_threshold).astype(np.int8)
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    rank = np.arange(len(user)) - np.repeat(starts, np.diff(np.r_[starts, len(user)]))
    counts = np.bincount(user, minlength=len(user_keys))
    complete = rank < (counts[user] // list_len) * list_len
    user, item, label, rank = user[complete], item[complete], label[complete], rank[complete]
    if not len(user):
        raise RawDataError(f"no user has {list_len} interactions left after filtering")
    num_requests = len(user) // list_len
    logs = requests_lib.Logs(
        user=user[::list_len].astype(np.int32),
        items=item.reshape(num_requests, list_len).astype(np.int32),
        labels=label.reshape(num_requests, list_len),
        order=(rank[::list_len] // list_len).astype(np.int64),
    )
    return logs, len(user_keys), len(item_keys)


def generate_real_requests(data_config, paths: list[str], log_fn: Callable[[str], None] = print):
    """Returns ({split: features}, stats, num_users, num_items, item features) of a real dataset
    whose raw files (from :func:`find_raw_files`) are ``paths``; the item features are
    ``{item_features: [I][F] ids, item_feature_names: [V]}`` when the dataset's item file
    (:func:`find_item_file`) is there, else empty."""
    start = time.time()
    inter = read_raw(data_config.dataset, paths, data_config.feedback_column)
    log_fn(f"[data] read {len(inter)} interactions from {paths} in {time.time() - start:.1f}s")
    raw_count = len(inter)
    inter = deduplicate(inter)
    inter = k_core(inter, data_config.k_core)
    if not len(inter):
        raise RawDataError(
            f"no interactions survive the {data_config.k_core}-core filter "
            f"(data.k_core={data_config.k_core}) of {paths}"
        )
    logs, num_users, num_items = to_logs(inter, data_config.list_len, data_config.label_threshold)
    log_fn(
        f"[data] {data_config.k_core}-core: {len(inter)} interactions, {num_users} users, "
        f"{num_items} items -> {len(logs.user)} requests of L={data_config.list_len}"
    )
    if data_config.num_candidates - data_config.list_len > num_items:
        raise ValueError(
            f"DataConfig.num_candidates (N={data_config.num_candidates}) needs N-L retrieved items"
            f" but only {num_items} items survive filtering."
        )
    by_split, stats = requests_lib.build_requests_from_config(
        logs, num_users, num_items, data_config, log_fn
    )
    features = {}
    item_path = find_item_file(data_config.dataset, data_config.manual_dir)
    if item_path is not None:
        # to_logs numbers the items in the order of np.unique of their raw ids.
        table, names = item_features_lib.table_from_names(
            np.unique(inter.item), item_features_lib.read_genres(item_path)
        )
        features = dict(item_features=table.tolist(), item_feature_names=names)
        log_fn(f"[data] item features: {len(names)} genres from {item_path}")
    stats.update(
        raw_interactions=raw_count,
        interactions_after_filtering=int(len(inter)),
        k_core=data_config.k_core,
        label_threshold=data_config.label_threshold,
        preprocessing_seconds=round(time.time() - start, 2),
    )
    return by_split, stats, num_users, num_items, features


def config_fingerprint(data_config, paths: list[str]) -> str:
    """Names the prepared dataset by everything that determines it, raw file sizes included."""
    content = dataclasses.asdict(data_config)
    for field in ("data_dir", "manual_dir", "env", "oracle_beam_width", "item_features"):
        content.pop(field, None)
    item_path = find_item_file(data_config.dataset, data_config.manual_dir)
    if item_path is not None:
        paths = [*paths, item_path]
    content["raw_files"] = [(os.path.basename(p), os.path.getsize(p)) for p in paths]
    digest = hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
    return f"{data_config.dataset}_n{data_config.num_candidates}_l{data_config.list_len}_{digest}"


class GoalrankReal(tfds_requests.RequestsBuilder):
    """Ranking requests built from a real interaction log (raw files from a manual directory)."""

    def __init__(self, *, raw_paths: list[str], **kwargs):
        self.raw_paths = raw_paths
        super().__init__(**kwargs)

    def source_description(self) -> str:
        dataset = self.builder_config.data_config.dataset
        return f"dataset {dataset!r} built from {', '.join(self.raw_paths)}"

    def generate(self):
        by_split, stats, num_users, num_items, features = generate_real_requests(
            self.builder_config.data_config, self.raw_paths, self.builder_config.log_fn
        )
        return by_split, dict(num_users=num_users, num_items=num_items, stats=stats, **features)


def prepare(data_config, data_dir: str, log_fn: Callable[[str], None] = print):
    """Prepares (once) and returns the builder of a real dataset."""
    paths = find_raw_files(data_config.dataset, data_config.manual_dir)
    config = tfds_requests.RequestsConfig(
        config_fingerprint(data_config, paths), data_config, log_fn
    )
    return tfds_requests.prepare(
        GoalrankReal(raw_paths=paths, config=config, data_dir=data_dir, file_format="array_record")
    )

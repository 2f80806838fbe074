"""Item side features: categorical features of each item (genres, categories) that the models
may see beside the item id (``DataConfig.item_features``).

A dataset's features are one table ``[I, F]`` of feature ids in ``[0, V)``, padded with -1 (an
item has at most F features of a vocabulary of V), stored in the prepared dataset's metadata
with the feature names. The synthetic world gives each item its category (F = 1); MovieLens gives
each movie its genres, read from the optional item file beside the ratings (``ml-100k.item`` or
``u.item`` for ML-100K, ``movies.dat`` for ML-1M). The models never see the table itself:
:func:`add_to_batch` looks up the rows of a batch's history and candidate items.

Axis names: I items, F features per item, V feature vocabulary, B batch, H history, N candidates.
"""

from __future__ import annotations

import os

import numpy as np

from goalrank_jax.data.raw_formats import RawDataError

# Fields a batch gains when the dataset has item features.
BATCH_FIELDS = ("history_item_features", "cand_item_features")


def table_from_lists(features: list[list[int]]) -> np.ndarray:
    """Per-item lists of feature ids -> [I, F] int32 table padded with -1 (F >= 1)."""
    width = max([len(f) for f in features] + [1])
    table = np.full((len(features), width), -1, np.int32)
    for row, ids in enumerate(features):
        table[row, : len(ids)] = ids
    return table


def table_from_names(
    item_keys: np.ndarray, names_by_key: dict[str, list[str]]
) -> tuple[np.ndarray, list[str]]:
    """The [I, F] table of items ``item_keys`` (raw ids, in model-id order) from their feature
    names, and the sorted vocabulary of names. Items missing from ``names_by_key`` get none."""
    vocabulary = sorted({name for key in item_keys for name in names_by_key.get(str(key), [])})
    index = {name: i for i, name in enumerate(vocabulary)}
    rows = [sorted(index[n] for n in set(names_by_key.get(str(key), []))) for key in item_keys]
    return table_from_lists(rows), vocabulary


def _genre_lines(path: str):
    if not os.path.isfile(path):
        raise RawDataError(f"{path}: file not found")
    with open(path, encoding="latin-1") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield lineno, line


def read_genres(path: str) -> dict[str, list[str]]:
    """Raw item id -> genre names, from a MovieLens item file.

    ``*.item`` (RecBole atomic, tab-separated with a typed header and a ``class:token_seq``
    column of space-separated genres), ``u.item`` (``id|title|date|video date|url|`` then 19
    0/1 genre flags, in the order of ML-100K's ``u.genre``) or ``movies.dat``
    (``id::title::Genre|Genre``). Raises RawDataError naming the file and line of a bad row.
    """
    name = os.path.basename(path)
    if name == "u.item":
        return _read_u_item(path)
    if name == "movies.dat":
        return _read_movies_dat(path)
    return _read_atomic_item(path)


def _read_atomic_item(path: str) -> dict[str, list[str]]:
    lines = _genre_lines(path)
    lineno, header = next(lines, (1, ""))
    names = [field.split(":", 1)[0].strip() for field in header.split("\t")]
    if "item_id" not in names or "class" not in names:
        raise RawDataError(
            f"{path}:{lineno}: expected a typed header with item_id and class columns, e.g. "
            f"'item_id:token\\tmovie_title:token_seq\\tclass:token_seq', got {header!r}"
        )
    item_col, class_col = names.index("item_id"), names.index("class")
    out = {}
    for lineno, line in lines:
        fields = line.split("\t")
        if len(fields) != len(names):
            raise RawDataError(
                f"{path}:{lineno}: expected {len(names)} tab-separated fields (header), "
                f"got {len(fields)}"
            )
        out[fields[item_col].strip()] = fields[class_col].split()
    return out


# The genres of ML-100K's u.genre, in flag order.
U_ITEM_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip


def _read_u_item(path: str) -> dict[str, list[str]]:
    out = {}
    for lineno, line in _genre_lines(path):
        fields = line.split("|")
        flags = fields[5:]
        if len(flags) != len(U_ITEM_GENRES) or any(f not in ("0", "1") for f in flags):
            raise RawDataError(
                f"{path}:{lineno}: expected id|title|date|video date|url| and "
                f"{len(U_ITEM_GENRES)} 0/1 genre flags, got {line!r}"
            )
        out[fields[0].strip()] = [g for g, f in zip(U_ITEM_GENRES, flags, strict=True) if f == "1"]
    return out


def _read_movies_dat(path: str) -> dict[str, list[str]]:
    out = {}
    for lineno, line in _genre_lines(path):
        fields = line.split("::")
        if len(fields) != 3:
            raise RawDataError(f"{path}:{lineno}: expected id::title::genres, got {line!r}")
        out[fields[0].strip()] = [g for g in fields[2].split("|") if g]
    return out


def add_to_batch(batch: dict, table: np.ndarray, xp=np) -> None:
    """Adds ``history_item_features`` [B, H, F] and ``cand_item_features`` [B, N, F] (feature
    ids, -1 for none and for padded items) to a batch holding ``history_items`` and
    ``cand_items`` (-1 padded), in place. ``xp``: numpy (host batches) or jax.numpy (inside a
    traced function, e.g. the exported ranker, with ``table`` a constant)."""
    padded = xp.asarray(np.concatenate([table, np.full((1, table.shape[1]), -1, table.dtype)]))
    for items, field in zip(("history_items", "cand_items"), BATCH_FIELDS, strict=True):
        ids = batch[items]
        batch[field] = padded[xp.where(ids >= 0, ids, len(table))]

"""Readers of the raw interaction files users download, with errors that name file and line.

Every reader returns an :class:`Interactions` of raw (string) user and item ids, a float
feedback value (rating, or click flag) and a float timestamp, one entry per line. Formats:

* MovieLens 100K ``u.data``: ``user<TAB>item<TAB>rating<TAB>timestamp``, no header.
* RecBole atomic ``.inter`` files (e.g. ``ml-100k.inter``): tab-separated with a typed header
  ``user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float``; columns found by name.
* MovieLens 1M ``ratings.dat``: ``user::item::rating::timestamp``, no header.
* Amazon ratings CSV (e.g. ``ratings_Books.csv``): ``user,item,rating,timestamp``; a header line
  naming these columns is accepted.
* KuaiRand logs ``log_standard_*.csv``: comma-separated with a header containing ``user_id``,
  ``video_id``, ``time_ms`` and the feedback column (``is_click`` by default).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Iterable, Iterator

import numpy as np


class RawDataError(ValueError):
    """A malformed raw data file; the message names the file, the line and the problem."""


@dataclasses.dataclass(frozen=True)
class Interactions:
    """One entry per logged interaction, in file order.

    Attributes:
      user: [M] raw user ids (str).
      item: [M] raw item ids (str).
      feedback: [M] float32 rating or feedback value.
      timestamp: [M] float64 time (any unit; only the order matters).
    """

    user: np.ndarray
    item: np.ndarray
    feedback: np.ndarray
    timestamp: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


def _number(text: str, path: str, lineno: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RawDataError(f"{path}:{lineno}: {column} is not a number: {text.strip()!r}") from None
    if not math.isfinite(value):
        raise RawDataError(f"{path}:{lineno}: {column} is not finite: {text.strip()!r}")
    return value


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline) of the non-blank lines; checks existence."""
    if not os.path.isfile(path):
        raise RawDataError(f"{path}: file not found")
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield lineno, line


def _row(
    path: str,
    lineno: int,
    user: str,
    item: str,
    value: str,
    stamp: str,
    value_name: str = "rating",
    stamp_name: str = "timestamp",
) -> tuple[str, str, float, float]:
    """One parsed interaction; an empty id or a value that is not a finite number is an error."""
    if not user or not item:
        raise RawDataError(f"{path}:{lineno}: empty user or item id")
    return (
        user,
        item,
        _number(value, path, lineno, value_name),
        _number(stamp, path, lineno, stamp_name),
    )


def _column_index(path: str, lineno: int, names: list[str], needed, header: str) -> list[int]:
    """Positions of the ``needed`` columns in a header's ``names``."""
    missing = [name for name in needed if name not in names]
    if missing:
        raise RawDataError(f"{path}:{lineno}: header lacks the columns {missing}: {header!r}")
    return [names.index(name) for name in needed]


def _collect(rows: Iterable[tuple[str, str, float, float]], path: str) -> Interactions:
    users, items, feedback, times = [], [], [], []
    for user, item, value, stamp in rows:
        users.append(user)
        items.append(item)
        feedback.append(value)
        times.append(stamp)
    if not users:
        raise RawDataError(f"{path}: no interactions (empty file)")
    return Interactions(
        user=np.asarray(users, dtype=object).astype(str),
        item=np.asarray(items, dtype=object).astype(str),
        feedback=np.asarray(feedback, np.float32),
        timestamp=np.asarray(times, np.float64),
    )


def _split_rows(path: str, separator: str, columns: int, header_names: tuple[str, ...] = ()):
    for lineno, line in _lines(path):
        fields = [f.strip() for f in line.split(separator)]
        if (
            lineno == 1
            and header_names
            and [f.lower() for f in fields[:columns]] == list(header_names)
        ):
            continue
        if len(fields) != columns:
            raise RawDataError(
                f"{path}:{lineno}: expected {columns} fields separated by {separator!r}, "
                f"got {len(fields)}"
            )
        yield _row(path, lineno, *fields)


def read_udata(path: str) -> Interactions:
    """MovieLens 100K ``u.data`` (tab-separated, no header)."""
    return _collect(_split_rows(path, "\t", 4), path)


def read_ratings_dat(path: str) -> Interactions:
    """MovieLens 1M ``ratings.dat`` (``::``-separated, no header)."""
    return _collect(_split_rows(path, "::", 4), path)


def read_amazon_csv(path: str) -> Interactions:
    """Amazon ratings CSV ``user,item,rating,timestamp`` (optional header line)."""
    return _collect(_split_rows(path, ",", 4, ("user", "item", "rating", "timestamp")), path)


def read_atomic_inter(path: str) -> Interactions:
    """RecBole atomic ``.inter`` file with a typed header (``name:type`` per column)."""
    lines = _lines(path)
    try:
        lineno, header = next(lines)
    except StopIteration:
        raise RawDataError(f"{path}: no interactions (empty file)") from None
    names = [field.split(":", 1)[0].strip() for field in header.split("\t")]
    if not all(":" in field for field in header.split("\t")):
        raise RawDataError(
            f"{path}:{lineno}: expected a typed header like 'user_id:token\\titem_id:token\\t"
            f"rating:float\\ttimestamp:float', got {header!r}"
        )
    needed = ("user_id", "item_id", "rating", "timestamp")
    index = _column_index(path, lineno, names, needed, header)

    def rows():
        for row_lineno, line in lines:
            fields = line.split("\t")
            if len(fields) != len(names):
                raise RawDataError(
                    f"{path}:{row_lineno}: expected {len(names)} tab-separated fields (header), "
                    f"got {len(fields)}"
                )
            yield _row(path, row_lineno, *(fields[i].strip() for i in index))

    return _collect(rows(), path)


def _kuairand_rows(path: str, feedback_column: str):
    if not os.path.isfile(path):
        raise RawDataError(f"{path}: file not found")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise RawDataError(f"{path}: no interactions (empty file)")
        names = [h.strip() for h in header]
        needed = ("user_id", "video_id", feedback_column, "time_ms")
        index = _column_index(path, 1, names, needed, ",".join(header))
        for lineno, fields in enumerate(reader, 2):
            if not any(x.strip() for x in fields):
                continue
            if len(fields) != len(names):
                raise RawDataError(
                    f"{path}:{lineno}: expected {len(names)} comma-separated fields "
                    f"(header), got {len(fields)}"
                )
            values = (fields[i].strip() for i in index)
            yield _row(path, lineno, *values, value_name=feedback_column, stamp_name="time_ms")


def read_kuairand_logs(paths: list[str], feedback_column: str = "is_click") -> Interactions:
    """KuaiRand ``log_standard_*.csv`` files (header with user_id, video_id, time_ms, feedback)."""
    if not paths:
        raise RawDataError("no KuaiRand log files given")
    parts = [_collect(_kuairand_rows(path, feedback_column), path) for path in sorted(paths)]
    return Interactions(
        user=np.concatenate([p.user for p in parts]),
        item=np.concatenate([p.item for p in parts]),
        feedback=np.concatenate([p.feedback for p in parts]),
        timestamp=np.concatenate([p.timestamp for p in parts]),
    )

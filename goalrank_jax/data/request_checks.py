"""Checks of built ranking requests before any of them is written to disk.

Every request must satisfy what the models and metrics assume: ids inside the vocabularies, at
least L valid candidates, no candidate twice, the L logged items at positions 0..L-1 exactly once,
binary labels that are 1 only on logged items, and finite float features. A violation raises
:class:`RequestDataError` naming the source, the split, the request and the field; the TFDS
builder runs these checks before writing, so a failed preparation leaves no dataset behind.
"""

from __future__ import annotations

import numpy as np

from goalrank_jax.data.raw_formats import RawDataError

REQUIRED_FIELDS = (
    "user_id",
    "request_order",
    "history_items",
    "history_labels",
    "cand_items",
    "cand_labels",
    "cand_logged_pos",
    "cand_retriever_score",
)


class RequestDataError(RawDataError):
    """Built requests that break the request protocol (source, split, request, field named)."""


def check_requests(
    by_split: dict[str, dict[str, np.ndarray]],
    *,
    num_users: int,
    num_items: int,
    num_candidates: int,
    list_len: int,
    history_len: int,
    source: str,
) -> None:
    """Raises RequestDataError at the first request of any split that breaks the protocol.

    Args:
      by_split: {split: {feature: [R, ...] array}} as built by ``requests.build_requests``
        (plus the synthetic true-model fields, if any).
      source: what the requests were built from, for the message (dataset, raw files).
    """
    for split, feats in by_split.items():
        where = f"{source}: split {split!r}"
        _check_split(feats, where, num_users, num_items, num_candidates, list_len, history_len)


def _fail(where: str, row: int | None, field: str, problem: str) -> None:
    request = f", request {row}" if row is not None else ""
    raise RequestDataError(f"{where}{request}: field {field!r}: {problem}")


def _first(bad_rows: np.ndarray) -> int | None:
    rows = np.flatnonzero(bad_rows)
    return int(rows[0]) if len(rows) else None


def _check_split(feats, where, num_users, num_items, num_candidates, list_len, history_len):
    _check_fields(feats, where, num_candidates, list_len, history_len)
    _check_users_and_labels(feats, where, num_users, num_items)
    valid = _check_candidates(feats, where, num_items, list_len)
    _check_logged(feats, where, valid, list_len)
    if "oracle_list" in feats:
        _check_oracle(feats, where, valid, num_candidates)


def _check_fields(feats, where, num_candidates, list_len, history_len):
    """Every required field is present, the split is not empty, shapes match, floats are finite."""
    for field in REQUIRED_FIELDS:
        if field not in feats:
            _fail(where, None, field, "missing")
    count = len(feats["user_id"])
    if not count:
        _fail(where, None, "user_id", "the split has no requests")
    shapes = {"history_items": history_len, "history_labels": history_len}
    for field, value in feats.items():
        value = np.asarray(value)
        width = shapes.get(field, num_candidates if field.startswith("cand_") else None)
        if field == "oracle_list":
            width = list_len
        expected = (count,) if width is None else (count, width)
        if value.shape != expected:
            _fail(where, None, field, f"shape {value.shape}, expected {expected}")
        if np.issubdtype(value.dtype, np.floating):
            row = _first(~np.isfinite(value).reshape(count, -1).all(1))
            if row is not None:
                _fail(where, row, field, f"non-finite value in {value[row].tolist()}")


def _check_users_and_labels(feats, where, num_users, num_items):
    """User and history ids are in range; history and candidate labels are 0 or 1."""
    user = np.asarray(feats["user_id"])
    row = _first((user < 0) | (user >= num_users))
    if row is not None:
        _fail(where, row, "user_id", f"{int(user[row])} is outside [0, {num_users})")
    hist_items = np.asarray(feats["history_items"])
    row = _first(((hist_items < -1) | (hist_items >= num_items)).any(1))
    if row is not None:
        _fail(
            where,
            row,
            "history_items",
            f"an id outside [-1, {num_items}): {hist_items[row].tolist()}",
        )
    for field in ("history_labels", "cand_labels"):
        labels = np.asarray(feats[field])
        row = _first(((labels != 0) & (labels != 1)).any(1))
        if row is not None:
            _fail(where, row, field, f"labels must be 0 or 1, got {labels[row].tolist()}")


def _check_candidates(feats, where, num_items, list_len):
    """Candidate ids are in range, at least L are valid, none repeats; returns the [R, N] valid."""
    items = np.asarray(feats["cand_items"])
    valid = items >= 0
    row = _first(((items < -1) | (items >= num_items)).any(1))
    if row is not None:
        _fail(where, row, "cand_items", f"an id outside [-1, {num_items}): {items[row].tolist()}")
    row = _first(valid.sum(1) < list_len)
    if row is not None:
        _fail(
            where,
            row,
            "cand_items",
            f"{int(valid[row].sum())} valid candidate(s), fewer than the list length L={list_len}",
        )
    # Padding gets distinct negative keys so that only repeated valid ids compare equal.
    keys = np.sort(np.where(valid, items, -1 - np.arange(items.shape[1])), axis=1)
    row = _first((keys[:, 1:] == keys[:, :-1]).any(1))
    if row is not None:
        values, counts = np.unique(items[row][valid[row]], return_counts=True)
        item = int(values[counts > 1][0])
        positions = np.flatnonzero(items[row] == item).tolist()
        _fail(
            where, row, "cand_items", f"item {item} appears more than once (positions {positions})"
        )
    return valid


def _check_logged(feats, where, valid, list_len):
    """Logged positions are well formed and only logged candidates have positive labels."""
    logged = np.asarray(feats["cand_logged_pos"])
    row = _first(((logged < -1) | (logged >= list_len) | ((logged >= 0) & ~valid)).any(1))
    if row is not None:
        _fail(
            where,
            row,
            "cand_logged_pos",
            f"positions must be -1, or 0..{list_len - 1} on valid candidates: "
            f"{logged[row].tolist()}",
        )
    per_position = (logged[:, :, None] == np.arange(list_len)).sum(1)
    row = _first((per_position != 1).any(1))
    if row is not None:
        _fail(
            where,
            row,
            "cand_logged_pos",
            f"each logged position 0..{list_len - 1} must occur once: {logged[row].tolist()}",
        )
    labels = np.asarray(feats["cand_labels"])
    row = _first(((labels != 0) & (logged < 0)).any(1))
    if row is not None:
        _fail(where, row, "cand_labels", "a candidate that was not logged has a positive label")


def _check_oracle(feats, where, valid, num_candidates):
    """The oracle list holds L distinct valid candidate positions."""
    oracle = np.asarray(feats["oracle_list"])
    inside = (oracle >= 0) & (oracle < num_candidates)
    picked = np.take_along_axis(valid, np.clip(oracle, 0, num_candidates - 1), 1)
    repeated = (np.sort(oracle, 1)[:, 1:] == np.sort(oracle, 1)[:, :-1]).any(1)
    row = _first(~(inside & picked).all(1) | repeated)
    if row is not None:
        _fail(
            where,
            row,
            "oracle_list",
            f"must be L distinct valid candidate positions: {oracle[row].tolist()}",
        )

"""From chronological interaction logs to ranking requests with N candidates.

The protocol (SPEC section 5): each user's logged lists are sorted by time; the history of a
request is the user's interactions before it (the most recent H kept); the requests are split by
time per user into train / validation / test; a matrix-factorisation retriever trained on the
train split supplies N - L candidates the user has not been shown; the L logged items and the
retrieved items are shuffled per request. Non-logged candidates get label 0.

Everything is numpy on the host and deterministic from the seeds given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from goalrank_jax.data import candidates as candidates_lib
from goalrank_jax.data import retriever as retriever_lib

SPLITS = ("train", "validation", "test")
# Where the N - L non-logged candidates of a request come from (DataConfig.candidates).
CANDIDATE_SOURCES = ("retriever", "impression", "random", "popular")


@dataclasses.dataclass(frozen=True)
class Logs:
    """Chronological logged lists.

    Attributes:
      user: [R] int32 user id.
      items: [R, L] int32 logged items in their shown order.
      labels: [R, L] int8 feedback (1 = positive).
      order: [R] int64 position of the request in its user's timeline (0 = earliest).
      unshown: [R, M] int32 items the logging system retrieved for the request but did not
        show, in its retrieval order (only logs that record them: the synthetic world's).
    """

    user: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    order: np.ndarray
    unshown: np.ndarray | None = None


def assign_splits(logs: Logs, valid_fraction: float, test_fraction: float) -> np.ndarray:
    """[R] split index (0 train, 1 validation, 2 test), by time within each user.

    A user with n requests puts the last round(n * test_fraction) (at least 1 when n >= 3) in
    test and the round(n * valid_fraction) (at least 1 when n >= 3) before them in validation;
    users with fewer than 3 requests stay in train.
    """
    counts = np.bincount(logs.user, minlength=int(logs.user.max()) + 1)
    n = counts[logs.user]
    n_test = np.where(n >= 3, np.maximum(np.rint(n * test_fraction), 1), 0).astype(np.int64)
    n_valid = np.where(n >= 3, np.maximum(np.rint(n * valid_fraction), 1), 0).astype(np.int64)
    split = np.zeros(logs.user.shape, np.int8)
    split[logs.order >= n - n_test - n_valid] = 1
    split[logs.order >= n - n_test] = 2
    return split


def _timeline_index(logs: Logs) -> np.ndarray:
    """Row permutation that sorts requests by (user, order)."""
    return np.lexsort((logs.order, logs.user))


def build_histories(logs: Logs, history_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """History of every request: the last H interactions of its user before it.

    Returns (history_items [R, H] int32 padded with -1 on the left, history_labels [R, H] int8,
    seen_items [R, S] int32 every item the user was shown before or in this request, -1 padded),
    all rows aligned with ``logs``.
    """
    num_requests, list_len = logs.items.shape
    hist_items = np.full((num_requests, history_len), -1, np.int32)
    hist_labels = np.zeros((num_requests, history_len), np.int8)
    rows = _timeline_index(logs)
    user_sorted = logs.user[rows]
    starts = np.flatnonzero(np.r_[True, user_sorted[1:] != user_sorted[:-1]])
    ends = np.r_[starts[1:], len(rows)]
    max_seen = int((ends - starts).max()) * list_len
    seen = np.full((num_requests, max_seen), -1, np.int32)
    for start, end in zip(starts, ends, strict=True):
        user_rows = rows[start:end]
        flat_items = logs.items[user_rows].reshape(-1)
        flat_labels = logs.labels[user_rows].reshape(-1)
        for j, row in enumerate(user_rows):
            before = j * list_len
            lo = max(0, before - history_len)
            count = before - lo
            if count:
                hist_items[row, history_len - count :] = flat_items[lo:before]
                hist_labels[row, history_len - count :] = flat_labels[lo:before]
            seen[row, : before + list_len] = flat_items[: before + list_len]
    return hist_items, hist_labels, seen


def _train_and_retrieve(
    logs: Logs,
    split: np.ndarray,
    seen: np.ndarray,
    num_users: int,
    num_items: int,
    num_candidates: int,
    retriever_config: retriever_lib.RetrieverConfig,
    log_fn: Callable[[str], None],
) -> tuple[retriever_lib.RetrieverParams, np.ndarray]:
    """Trains the retriever on the train split and retrieves N - L unseen items per request.

    Returns:
        (trained retriever parameters, [R, N - L] int32 retrieved item ids).
    """
    num_requests, list_len = logs.items.shape
    train = split == 0
    # The retriever learns from positive feedback only (implicit-feedback MF with sampled
    # negatives): the logged non-clicked items were chosen for their relevance, and using them as
    # negatives teaches the retriever to prefer items that were rarely shown.
    positive = (logs.labels[train] > 0).reshape(-1)
    log_fn(
        f"[data] training the stage-1 retriever on the {int(positive.sum())} positive "
        f"interactions of {int(train.sum())} train requests"
    )
    params = retriever_lib.train_retriever(
        np.repeat(logs.user[train], list_len)[positive],
        logs.items[train].reshape(-1)[positive],
        np.ones(int(positive.sum()), np.int8),
        num_users,
        num_items,
        retriever_config,
        log_fn=log_fn,
    )
    num_retrieved = num_candidates - list_len
    log_fn(f"[data] retrieving {num_retrieved} candidates for {num_requests} requests")
    retrieved = candidates_lib.retrieve(params, logs.user, seen, num_retrieved)
    return params, retrieved


def _impression_candidates(logs: Logs, count: int) -> np.ndarray:
    """[R, count] the first ``count`` unshown items the logging system retrieved per request."""
    available = 0 if logs.unshown is None else logs.unshown.shape[1]
    if available < count:
        raise ValueError(
            f"candidates='impression' needs N - L = {count} unshown retrieved items per request "
            f"but the logs record {available} (the synthetic world's env.impression_size - L)"
        )
    return np.ascontiguousarray(logs.unshown[:, :count]).astype(np.int32)


def _never_interacted(logs: Logs, seen: np.ndarray) -> np.ndarray:
    """[R, S] every item of the request's user's whole timeline (-1 padded): the ``seen`` row
    of the user's last request."""
    rows = _timeline_index(logs)  # by (user, order): a user's latest request ends its run
    users = logs.user[rows]
    is_last = np.r_[users[1:] != users[:-1], True]
    last = np.zeros(int(logs.user.max()) + 1, np.int64)
    last[users[is_last]] = rows[is_last]
    return seen[last[logs.user]]


def _sampled_candidates(
    logs: Logs, split: np.ndarray, seen: np.ndarray, num_items: int, count: int, how: str, seed: int
) -> np.ndarray:
    """[R, count] items the request's user never interacted with, drawn without replacement
    uniformly ("random") or in proportion to 1 + their number of positive interactions in the
    train split ("popular")."""
    if how == "random":
        weights = np.ones(num_items)
    else:
        train = split == 0
        positives = logs.items[train][logs.labels[train] > 0]
        weights = 1.0 + np.bincount(positives, minlength=num_items)[:num_items]
    exclude = _never_interacted(logs, seen)
    return candidates_lib.sample_unseen(weights, exclude, count, seed=seed + 1)


def _stats(
    logs: Logs,
    split: np.ndarray,
    seen: np.ndarray,
    params: retriever_lib.RetrieverParams,
    num_retrieved: int,
) -> dict[str, float]:
    """Dataset statistics, with the retriever's recall of the test positives."""
    num_requests, list_len = logs.items.shape
    test = split == 2
    pos_rows, pos_cols = np.nonzero((logs.labels > 0) & test[:, None])
    history_only = np.where(
        np.arange(seen.shape[1])[None, :] < (logs.order[pos_rows, None] * list_len),
        seen[pos_rows],
        -1,
    )
    recall = (
        candidates_lib.recall_of_positives(
            params, logs.user[pos_rows], logs.items[pos_rows, pos_cols], history_only, num_retrieved
        )
        if len(pos_rows)
        else float("nan")
    )
    return {
        "users": int(len(np.unique(logs.user))),
        "items": int(len(np.unique(logs.items))),
        "requests": int(num_requests),
        **{f"requests_{name}": int((split == i).sum()) for i, name in enumerate(SPLITS)},
        "positives_per_request": float(logs.labels.sum(1).mean()),
        "positive_rate": float(logs.labels.mean()),
        f"retriever_recall@{num_retrieved}_test_positives": float(recall),
    }


def build_requests(
    logs: Logs,
    num_users: int,
    num_items: int,
    num_candidates: int,
    history_len: int,
    valid_fraction: float,
    test_fraction: float,
    retriever_config: retriever_lib.RetrieverConfig,
    seed: int,
    log_fn: Callable[[str], None] = print,
    candidates: str = "retriever",
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """Builds the ranking requests of every split and the dataset statistics.

    ``candidates`` = "retriever": the N - L other candidates are the stage-1 retriever's top
    unseen items (the protocol of SPEC section 5); "impression": the first N - L items the
    logging system retrieved for the request but did not show (``logs.unshown``); "random":
    drawn uniformly from the items the user never interacted with (in the whole log);
    "popular": drawn from those items in proportion to 1 + their number of positive
    interactions in the train split. The retriever is trained either way: it scores every
    candidate (``cand_retriever_score``).

    Returns ({split: {feature: [R_split, ...] array}}, stats). Features:
      user_id [], history_items [H], history_labels [H], cand_items [N], cand_labels [N],
      cand_logged_pos [N] (position in the logged list, -1 if retrieved),
      cand_retriever_score [N], request_order [].
    """
    num_requests, list_len = logs.items.shape
    if num_candidates < list_len:
        raise ValueError(f"num_candidates ({num_candidates}) must be >= list_len ({list_len})")
    split = assign_splits(logs, valid_fraction, test_fraction)
    hist_items, hist_labels, seen = build_histories(logs, history_len)

    params, retrieved = _train_and_retrieve(
        logs, split, seen, num_users, num_items, num_candidates, retriever_config, log_fn
    )
    if candidates == "impression":
        retrieved = _impression_candidates(logs, num_candidates - list_len)
    elif candidates in ("random", "popular"):
        retrieved = _sampled_candidates(
            logs, split, seen, num_items, num_candidates - list_len, candidates, seed
        )
    elif candidates != "retriever":
        raise ValueError(f"candidates must be one of {CANDIDATE_SOURCES}, got {candidates!r}")
    scores_all = (
        np.einsum(
            "rd,rmd->rm",
            params.user_emb[logs.user],
            params.item_emb[np.concatenate([logs.items, retrieved], 1)],
        )
        + params.item_bias[np.concatenate([logs.items, retrieved], 1)]
    ).astype(np.float32)

    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((num_requests, num_candidates)), axis=1)
    cand_items = np.take_along_axis(np.concatenate([logs.items, retrieved], 1), perm, 1)
    labels = np.concatenate([logs.labels, np.zeros_like(retrieved, dtype=np.int8)], 1)
    logged_pos = np.concatenate(
        [
            np.broadcast_to(np.arange(list_len, dtype=np.int32), logs.items.shape),
            np.full(retrieved.shape, -1, np.int32),
        ],
        1,
    )
    features = {
        "user_id": logs.user.astype(np.int32),
        "request_order": logs.order.astype(np.int32),
        "history_items": hist_items,
        "history_labels": hist_labels,
        "cand_items": cand_items.astype(np.int32),
        "cand_labels": np.take_along_axis(labels, perm, 1).astype(np.int8),
        "cand_logged_pos": np.take_along_axis(logged_pos, perm, 1),
        "cand_retriever_score": np.take_along_axis(scores_all, perm, 1),
    }
    by_split = {
        name: {k: np.ascontiguousarray(v[split == i]) for k, v in features.items()}
        for i, name in enumerate(SPLITS)
    }

    return by_split, _stats(logs, split, seen, params, num_candidates - list_len)


def build_requests_from_config(
    logs: Logs, num_users: int, num_items: int, data_config, log_fn: Callable[[str], None] = print
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """:func:`build_requests` with N, H, the split fractions, the retriever and the seed of a
    ``DataConfig``."""
    return build_requests(
        logs,
        num_users=num_users,
        num_items=num_items,
        num_candidates=data_config.num_candidates,
        history_len=data_config.history_len,
        valid_fraction=data_config.valid_fraction,
        test_fraction=data_config.test_fraction,
        retriever_config=data_config.retriever,
        seed=data_config.seed,
        log_fn=log_fn,
        candidates=data_config.candidates,
    )

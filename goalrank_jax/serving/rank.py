"""Rank JSON-lines requests with an exported GoalRank ranker; needs only jax and numpy.

    python -m goalrank_jax.serving.rank --model=DIR --input=requests.jsonl \
        --output=ranked.jsonl [--batch_size=1024]

``DIR`` holds ``ranker.bin`` and ``ranker.json`` written by
``python -m goalrank_jax.serving.export``. Each input line is one request::

    {"request_id": any, "user_id": int, "history_items": [int], "history_labels": [0/1],
     "cand_items": [int]}

``history_items`` is in time order (oldest first); only the most recent H are kept. Between L and
N distinct candidates are allowed; shorter candidate lists are padded with the mask off. Each
output line is ``{"request_id": ..., "ranked_items": [L item ids], "ranked_positions": [L indices
into cand_items]}``, in input order. The whole input is validated first: on a bad line nothing is
written, every problem found is printed as ``FILE:LINE: field 'NAME': problem`` and the exit
code is 2. The output is written to a temporary file and renamed, so it is never half written.

This module deliberately imports nothing of the training code (no flax, optax or orbax): a
serving machine needs jax, numpy and the artifact only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

FORMAT_VERSION = 1
ARTIFACT_FILE = "ranker.bin"
METADATA_FILE = "ranker.json"
# Positional arguments of the exported function, in this order; the leading axis of each is the
# (symbolic) batch axis. The masks are derived here, exactly as the training pipeline does.
INPUT_NAMES = (
    "user_id",
    "history_items",
    "history_labels",
    "history_mask",
    "cand_items",
    "cand_mask",
)
REQUEST_FIELDS = ("request_id", "user_id", "history_items", "history_labels", "cand_items")
PAD_ID = -1  # Padded history and candidate slots, as in the training data.
MAX_REPORTED_ERRORS = 20


class ServingError(Exception):
    """A problem with the model directory or the input; the message says what and where."""


class Request(NamedTuple):
    """One validated request (plain Python values, unpadded)."""

    request_id: Any
    user_id: int
    history_items: list[int]
    history_labels: list[int]
    cand_items: list[int]


class Ranker:
    """The deserialized greedy ranker: ``ranker(inputs) -> [B, L] candidate indices``.

    Attributes:
      metadata: the ``ranker.json`` dict (``num_candidates`` N, ``list_len`` L, ``history_len``
        H, ``num_items``, ``num_users``, ``inputs``, ...).
      exported: the ``jax.export.Exported`` read from ``ranker.bin``.
    """

    def __init__(self, exported: jax.export.Exported, metadata: dict):
        self.exported = exported
        self.metadata = metadata
        self.num_candidates = int(metadata["num_candidates"])
        self.list_len = int(metadata["list_len"])
        self.history_len = int(metadata["history_len"])
        self.num_items = int(metadata["num_items"])
        self.num_users = int(metadata["num_users"])
        self._dtypes = {spec["name"]: np.dtype(spec["dtype"]) for spec in metadata["inputs"]}
        # One compilation per distinct batch size, cached by jit.
        self._call = jax.jit(exported.call)

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """inputs: ``INPUT_NAMES`` -> arrays with a common leading batch axis B (user_id [B],
        history_* [B, H], cand_* [B, N]). Returns [B, L] int32 candidate indices."""
        args = [np.asarray(inputs[name], self._dtypes[name]) for name in INPUT_NAMES]
        return np.asarray(self._call(*args))


def load_ranker(model_dir: str) -> Ranker:
    """Reads, checks and deserializes the artifact in ``model_dir``; raises ServingError."""
    meta_path = os.path.join(model_dir, METADATA_FILE)
    bin_path = os.path.join(model_dir, ARTIFACT_FILE)
    try:
        with open(meta_path) as f:
            metadata = json.load(f)
        with open(bin_path, "rb") as f:
            blob = f.read()
    except (OSError, json.JSONDecodeError) as err:
        raise ServingError(f"cannot read the exported ranker in {model_dir}: {err}") from err
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ServingError(
            f"{meta_path}: format_version {metadata.get('format_version')!r} is not supported "
            f"(this reader understands {FORMAT_VERSION}); re-export the model."
        )
    if hashlib.sha256(blob).hexdigest() != metadata.get("artifact_sha256"):
        raise ServingError(
            f"{bin_path} does not match the checksum in {meta_path} (an interrupted or mixed "
            "export?); re-export the model."
        )
    if [spec["name"] for spec in metadata["inputs"]] != list(INPUT_NAMES):
        raise ServingError(f"{meta_path}: inputs {metadata['inputs']} are not {INPUT_NAMES}")
    exported = jax.export.deserialize(bytearray(blob))
    platform = jax.export.default_export_platform()
    if platform not in exported.platforms:
        raise ServingError(
            f"{bin_path} was exported for {list(exported.platforms)}, this machine runs "
            f"{platform}; re-export with --platforms={','.join(exported.platforms)},{platform}."
        )
    return Ranker(exported, metadata)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(obj: dict, field: str) -> list[int]:
    value = obj[field]
    if not isinstance(value, list):
        raise ValueError(f"field {field!r}: must be a list of integers, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not _is_int(item):
            raise ValueError(f"field {field!r}: entry {i} must be an integer, got {item!r}")
    return value


def _check_ids(field: str, ids: Sequence[int], vocab: int, what: str) -> None:
    for i, item in enumerate(ids):
        if not 0 <= item < vocab:
            raise ValueError(
                f"field {field!r}: entry {i} = {item} is not a known {what} id "
                f"(must be in [0, {vocab}))"
            )


def parse_request(text: str, ranker: Ranker) -> Request:
    """One JSON line -> :class:`Request`; raises ValueError naming the field at fault."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [field for field in REQUEST_FIELDS if field not in obj]
    if missing:
        raise ValueError("missing field(s) " + ", ".join(repr(field) for field in missing))
    user_id = obj["user_id"]
    if not _is_int(user_id):
        raise ValueError(f"field 'user_id': must be an integer, got {user_id!r}")
    if not 0 <= user_id < ranker.num_users:
        raise ValueError(
            f"field 'user_id': {user_id} is not a known user id "
            f"(must be in [0, {ranker.num_users}))"
        )
    history = _int_list(obj, "history_items")
    labels = _int_list(obj, "history_labels")
    cands = _int_list(obj, "cand_items")
    if len(labels) != len(history):
        raise ValueError(
            f"field 'history_labels': has {len(labels)} entries but history_items has "
            f"{len(history)}"
        )
    for i, label in enumerate(labels):
        if label not in (0, 1):
            raise ValueError(f"field 'history_labels': entry {i} = {label} must be 0 or 1")
    _check_ids("history_items", history, ranker.num_items, "item")
    _check_ids("cand_items", cands, ranker.num_items, "item")
    seen: set[int] = set()
    for i, item in enumerate(cands):
        if item in seen:
            raise ValueError(f"field 'cand_items': entry {i} = {item} repeats an earlier candidate")
        seen.add(item)
    if len(cands) < ranker.list_len:
        raise ValueError(
            f"field 'cand_items': {len(cands)} candidates, fewer than the list length "
            f"L={ranker.list_len}"
        )
    if len(cands) > ranker.num_candidates:
        raise ValueError(
            f"field 'cand_items': {len(cands)} candidates, more than the model's "
            f"N={ranker.num_candidates} (oversized request)"
        )
    return Request(obj["request_id"], user_id, history, labels, cands)


def read_requests(path: str, ranker: Ranker) -> list[Request]:
    """Parses and validates every line of ``path`` (blank lines are skipped).

    Raises ServingError listing the problems (``PATH:LINE: ...``) if any line is bad.
    """
    requests, errors = [], []
    try:
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8")
                    if not text.strip():
                        continue
                    requests.append(parse_request(text, ranker))
                except UnicodeDecodeError:
                    errors.append(f"{path}:{line_no}: not valid UTF-8")
                except ValueError as err:
                    errors.append(f"{path}:{line_no}: {err}")
                if len(errors) == MAX_REPORTED_ERRORS:
                    errors.append(f"{path}: stopped after {MAX_REPORTED_ERRORS} bad lines")
                    break
    except OSError as err:
        raise ServingError(f"cannot read {path}: {err}") from err
    if errors:
        raise ServingError("\n".join(errors))
    return requests


def encode_requests(requests: Sequence[Request], ranker: Ranker) -> dict[str, np.ndarray]:
    """Validated requests -> the model inputs, padded like the training data.

    History: the most recent H interactions, right-aligned, padded on the left with -1 (label
    0). Candidates: in the given order, padded on the right with -1. Masks mark real entries.
    """
    size, hist_len, num_cands = len(requests), ranker.history_len, ranker.num_candidates
    user_id = np.zeros((size,), np.int32)
    history = np.full((size, hist_len), PAD_ID, np.int32)
    labels = np.zeros((size, hist_len), np.int32)
    cands = np.full((size, num_cands), PAD_ID, np.int32)
    for row, request in enumerate(requests):
        user_id[row] = request.user_id
        recent = request.history_items[-hist_len:]
        if recent:
            history[row, hist_len - len(recent) :] = recent
            labels[row, hist_len - len(recent) :] = request.history_labels[-hist_len:]
        cands[row, : len(request.cand_items)] = request.cand_items
    return {
        "user_id": user_id,
        "history_items": history,
        "history_labels": labels,
        "history_mask": history >= 0,
        "cand_items": cands,
        "cand_mask": cands >= 0,
    }


def rank_requests(ranker: Ranker, requests: Sequence[Request], batch_size: int) -> list[dict]:
    """Ranks the requests in batches of at most ``batch_size``; one output dict per request."""
    results = []
    for start in range(0, len(requests), batch_size):
        chunk = requests[start : start + batch_size]
        inputs = encode_requests(chunk, ranker)
        positions = ranker(inputs)
        counts = inputs["cand_mask"].sum(-1)
        if np.any(positions >= counts[:, None]) or np.any(
            np.sort(positions, -1)[:, 1:] == np.sort(positions, -1)[:, :-1]
        ):
            raise ServingError("the ranker returned a padded or repeated candidate (bad artifact?)")
        for request, row in zip(chunk, positions.tolist(), strict=True):
            results.append(
                {
                    "request_id": request.request_id,
                    "ranked_items": [request.cand_items[i] for i in row],
                    "ranked_positions": row,
                }
            )
    return results


def atomic_write(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same directory and a rename,
    so ``path`` is either untouched or complete, never half written."""
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m goalrank_jax.serving.rank", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--model", required=True, help="Directory with ranker.bin and ranker.json (the export)."
    )
    parser.add_argument("--input", required=True, help="JSON-lines file of requests.")
    parser.add_argument(
        "--output", required=True, help="JSON-lines file of ranked lists (written atomically)."
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=1024,
        help="Requests ranked per call of the exported function (each size compiles once).",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code (2 on bad input or a bad model directory)."""
    args = _parse_args(argv)
    try:
        ranker = load_ranker(args.model)
        requests = read_requests(args.input, ranker)
        results = rank_requests(ranker, requests, args.batch_size)
    except ServingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lines = "".join(json.dumps(result) + "\n" for result in results)
    try:
        atomic_write(args.output, lines.encode("utf-8"))
    except OSError as err:
        print(f"error: cannot write {args.output}: {err}", file=sys.stderr)
        return 2
    print(f"ranked {len(results)} requests -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

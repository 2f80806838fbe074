"""grain pipelines over TFDS array_record data sources.

Examples hold int ids padded with -1; :func:`to_model_batch` adds the boolean masks the models
use (``history_mask``, ``cand_mask``) and float labels. Training batches come from a shuffled,
repeated grain ``MapDataset`` whose iterator state is checkpointed with the train state.
Evaluation batches cover every example of a split once, the last batch padded and flagged by
``example_mask`` so nothing is dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import grain
import numpy as np

from goalrank_jax.data import real_data, synthetic_builder

TRUE_MODEL_FIELDS = ("cand_true_logit", "cand_category", "cand_partner", "oracle_list")


@dataclasses.dataclass
class Dataset:
    """A prepared dataset: random-access sources per split plus vocabulary sizes and stats."""

    sources: dict[str, Any]
    num_users: int
    num_items: int
    num_candidates: int
    list_len: int
    stats: dict[str, Any]
    has_true_model: bool


def load_dataset(data_config, data_dir: str, log_fn: Callable[[str], None] = print) -> Dataset:
    """Prepares the dataset named by ``data_config.dataset`` if needed and opens its splits."""
    synthetic = data_config.dataset == "synthetic"
    if synthetic:
        builder = synthetic_builder.prepare(data_config, data_dir, log_fn)
    else:
        builder = real_data.prepare(data_config, data_dir, log_fn)
    sources = builder.as_data_source()
    meta = builder.info.metadata
    return Dataset(
        sources={split: sources[split] for split in ("train", "validation", "test")},
        num_users=int(meta["num_users"]),
        num_items=int(meta["num_items"]),
        num_candidates=data_config.num_candidates,
        list_len=data_config.list_len,
        stats=dict(meta["stats"]),
        has_true_model=synthetic,
    )


def to_model_batch(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stacked raw examples -> model batch with masks (numpy, host side)."""
    batch = dict(raw)
    batch["history_mask"] = raw["history_items"] >= 0
    batch["cand_mask"] = raw["cand_items"] >= 0
    batch["cand_labels"] = raw["cand_labels"].astype(np.float32)
    batch["history_labels"] = raw["history_labels"].astype(np.int32)
    if "example_mask" not in batch:
        batch["example_mask"] = np.ones(raw["user_id"].shape, bool)
    return batch


def _stack(examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


def train_dataset(source, batch_size: int, seed: int) -> grain.MapDataset:
    """Shuffled (reshuffled every epoch), repeated, batched training data.

    Indexable by step: element ``s`` is the batch of step ``s``.
    """
    if len(source) < batch_size:
        raise ValueError(
            f"The train split has {len(source)} examples, fewer than batch_size {batch_size}."
        )
    return (
        grain.MapDataset.source(source)
        .seed(seed)
        .shuffle()
        .repeat(None)
        .batch(batch_size, drop_remainder=True, batch_fn=_stack)
        .map(to_model_batch)
    )


def train_iterator(dataset: grain.MapDataset) -> grain.DatasetIterator:
    """Checkpointable iterator (``get_state`` / ``set_state``) over :func:`train_dataset`."""
    return iter(dataset.to_iter_dataset())


def eval_batches(source, batch_size: int, max_examples: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Every example of a split in order, in batches of exactly ``batch_size``.

    The last batch is padded by repeating its first example with ``example_mask`` False.
    """
    total = len(source) if max_examples <= 0 else min(max_examples, len(source))
    for start in range(0, total, batch_size):
        indices = list(range(start, min(start + batch_size, total)))
        examples = source.__getitems__(indices)
        count = len(examples)
        examples = examples + [examples[0]] * (batch_size - count)
        raw = _stack(examples)
        raw["example_mask"] = np.arange(batch_size) < count
        yield to_model_batch(raw)

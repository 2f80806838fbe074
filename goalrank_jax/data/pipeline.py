"""grain pipelines over TFDS array_record data sources.

Examples hold int ids padded with -1; :func:`to_model_batch` adds the boolean masks the models
use (``history_mask``, ``cand_mask``) and float labels. Training batches come from a shuffled,
repeated grain ``MapDataset`` whose iterator state is checkpointed with the train state; with
several processes each reads only its own rows of every global batch. Evaluation batches cover
every example of a split once, the last batch padded and flagged by ``example_mask`` so nothing
is dropped; every process reads the same (global) evaluation batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import grain
import jax
import numpy as np
from jax.experimental import multihost_utils

from goalrank_jax.data import item_features as item_features_lib
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
    # [I, F] item side features (ids in [0, num_item_features), -1 padded) that batches carry
    # (item_features.add_to_batch); None when the dataset has none or the config turns them off.
    item_features: np.ndarray | None = None
    num_item_features: int = 0


def load_dataset(data_config, data_dir: str, log_fn: Callable[[str], None] = print) -> Dataset:
    """Prepares the dataset named by ``data_config.dataset`` if needed and opens its splits.

    With several processes, process 0 prepares first and the others after a barrier: on a
    filesystem shared by all hosts they find the files ready, on per-host disks each prepares
    its own (deterministic) copy.
    """
    synthetic = data_config.dataset == "synthetic"
    prepare = synthetic_builder.prepare if synthetic else real_data.prepare
    if jax.process_count() == 1:
        builder = prepare(data_config, data_dir, log_fn)
    else:
        if jax.process_index() == 0:
            builder = prepare(data_config, data_dir, log_fn)
        multihost_utils.sync_global_devices(f"prepared {data_dir}")
        if jax.process_index() != 0:
            builder = prepare(data_config, data_dir, log_fn)
    sources = builder.as_data_source()
    meta = builder.info.metadata
    table, vocabulary = None, 0
    if data_config.item_features and meta.get("item_features"):
        table = item_features_lib.table_from_lists(meta["item_features"])
        vocabulary = len(meta["item_feature_names"])
    splits = ("train", "validation", "test")
    return Dataset(
        sources={
            split: sources[split] if table is None else ItemFeatureSource(sources[split], table)
            for split in splits
        },
        num_users=int(meta["num_users"]),
        num_items=int(meta["num_items"]),
        num_candidates=data_config.num_candidates,
        list_len=data_config.list_len,
        stats=dict(meta["stats"]),
        has_true_model=synthetic,
        item_features=table,
        num_item_features=vocabulary,
    )


class ItemFeatureSource:
    """A random-access source whose examples also carry their items' side features
    (``history_item_features`` [H, F], ``cand_item_features`` [N, F]) from an [I, F] table."""

    def __init__(self, source, table: np.ndarray):
        self.source = source
        self.table = table

    def __len__(self) -> int:
        return len(self.source)

    def _add(self, example: dict) -> dict:
        example = dict(example)
        item_features_lib.add_to_batch(example, self.table)
        return example

    def __getitem__(self, index):
        return self._add(self.source[index])

    def __getitems__(self, indices):
        return [self._add(e) for e in self.source.__getitems__(indices)]


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


def train_dataset(
    source,
    batch_size: int,
    seed: int,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.MapDataset:
    """Shuffled (reshuffled every epoch), repeated, batched training data of one process.

    Indexable by step: element ``s`` is this process's rows of the global batch of step ``s``,
    [batch_size / process_count, ...]. The global batch is the same whatever the process count:
    process p holds its rows p * b .. (p + 1) * b - 1 (b = batch_size / process_count), which is
    where ``sharding.put_local_batch`` places them on a process-major mesh, so a multi-process
    run sees exactly the batches of a one-process run. ``process_index`` / ``process_count``
    default to JAX's.
    """
    if len(source) < batch_size:
        raise ValueError(
            f"The train split has {len(source)} examples, fewer than batch_size {batch_size}."
        )
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if batch_size % count:
        raise ValueError(
            f"batch_size {batch_size} must be divisible by the number of processes ({count})."
        )
    # Batching the shuffled stream by b and taking every count-th batch from `index` gives the
    # contiguous blocks of the global batches; each process reads only its own examples.
    local = (
        grain.MapDataset.source(source)
        .seed(seed)
        .shuffle()
        .repeat(None)
        .batch(batch_size // count, drop_remainder=True, batch_fn=_stack)
    )
    if count > 1:
        local = local[index::count]
    return local.map(to_model_batch)


def train_iterator(dataset: grain.MapDataset) -> grain.DatasetIterator:
    """Checkpointable iterator (``get_state`` / ``set_state``) over :func:`train_dataset`.

    Its state is the next step's index, the same on every process, so the one copy that the
    checkpoint keeps (written by process 0) restores every process."""
    return iter(dataset.to_iter_dataset())


def eval_batches(source, batch_size: int, max_examples: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Every example of a split in order, in global batches of exactly ``batch_size``.

    The last batch is padded by repeating its first example with ``example_mask`` False. Every
    process yields the same batches (``sharding.put_batch`` gives each device its rows), so
    host-side reductions over them agree across processes.
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

"""What every ranking-request dataset shares: the TFDS feature spec, the builder config, an
abstract array_record builder, and its one-time preparation.

A concrete builder (synthetic or real data) only says how its requests are generated.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import jax
import numpy as np
import tensorflow_datasets as tfds

from goalrank_jax.data import request_checks

VERSION = "1.0.0"


def request_features(num_candidates: int, list_len: int, history_len: int, synthetic_fields: bool):
    """The TFDS feature spec of a request (``synthetic_fields``: the true-model fields)."""
    n, h, ell = (num_candidates,), (history_len,), (list_len,)
    spec = {
        "user_id": np.int32,
        "request_order": np.int32,
        "history_items": tfds.features.Tensor(shape=h, dtype=np.int32),
        "history_labels": tfds.features.Tensor(shape=h, dtype=np.int8),
        "cand_items": tfds.features.Tensor(shape=n, dtype=np.int32),
        "cand_labels": tfds.features.Tensor(shape=n, dtype=np.int8),
        "cand_logged_pos": tfds.features.Tensor(shape=n, dtype=np.int32),
        "cand_retriever_score": tfds.features.Tensor(shape=n, dtype=np.float32),
    }
    if synthetic_fields:
        spec.update(
            cand_true_logit=tfds.features.Tensor(shape=n, dtype=np.float32),
            cand_category=tfds.features.Tensor(shape=n, dtype=np.int32),
            cand_partner=tfds.features.Tensor(shape=n, dtype=np.int32),
            oracle_list=tfds.features.Tensor(shape=ell, dtype=np.int32),
            oracle_reward=np.float32,
        )
    return tfds.features.FeaturesDict(spec)


class RequestsConfig(tfds.core.BuilderConfig):
    """Builder config: the data config, its fingerprint as the name, and the log function."""

    def __init__(self, name: str, data_config, log_fn: Callable[[str], None] = print):
        super().__init__(name=name, version=VERSION)
        self.data_config = data_config
        self.log_fn = log_fn


class RequestsBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
    """Array_record builder of ranking requests; subclasses implement :meth:`generate`."""

    VERSION = tfds.core.Version(VERSION)
    HAS_TRUE_MODEL = False  # Store the true-model fields of the synthetic environment.

    @abc.abstractmethod
    def generate(self) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
        """Returns ({split: {feature: array}}, metadata with num_users, num_items and stats)."""

    def source_description(self) -> str:
        """What the requests are built from, for error messages."""
        return f"dataset {self.builder_config.data_config.dataset!r}"

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config.data_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=request_features(
                cfg.num_candidates, cfg.list_len, cfg.history_len, self.HAS_TRUE_MODEL
            ),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        by_split, metadata = self.generate()
        cfg = self.builder_config.data_config
        # Before anything is written: a bad request stops the preparation, and TFDS removes its
        # incomplete directory, so no half-written dataset is ever opened.
        request_checks.check_requests(
            by_split,
            num_users=int(metadata["num_users"]),
            num_items=int(metadata["num_items"]),
            num_candidates=cfg.num_candidates,
            list_len=cfg.list_len,
            history_len=cfg.history_len,
            source=self.source_description(),
        )
        self.info.metadata.update(metadata)
        return {split: self._generate_examples(feats) for split, feats in by_split.items()}

    def _generate_examples(self, feats):
        for i in range(len(feats["user_id"])):
            yield i, {k: v[i] for k, v in feats.items()}


def prepare(builder: RequestsBuilder) -> RequestsBuilder:
    """Generates the dataset once (on the host CPU) and returns the builder."""
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        builder.download_and_prepare()
    return builder

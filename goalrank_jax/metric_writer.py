"""Metrics output: JSON lines and TensorBoard event files (process 0 only; the other processes
of a multi-host run get a writer that drops everything)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax


class MetricWriter:
    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if self.enabled:
            # Imported here: tensorboardX loads torch (seconds), which the other processes skip.
            from tensorboardX import SummaryWriter

            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
        self._jsonl.flush()
        for name, value in clean.items():
            if math.isfinite(value):
                self._tb.add_scalar(name.replace("@", "_at_"), value, int(step))
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()

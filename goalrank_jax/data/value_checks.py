"""Argument checks shared by the stage-1 retriever's training and candidate retrieval."""

from __future__ import annotations

import math

import numpy as np


def check_int(name: str, value: object, minimum: int) -> None:
    """Raises ValueError unless value is an integer (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_positive_float(name: str, value: float) -> None:
    """Raises ValueError unless value is a finite number > 0."""
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def as_int_vector(name: str, values: np.ndarray) -> np.ndarray:
    """Returns values as a 1-D int64 array; raises ValueError unless 1-D with an integer dtype."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    return arr.astype(np.int64)


def check_range(name: str, values: np.ndarray, low: int, high: int) -> None:
    """Raises ValueError unless every entry lies in [low, high)."""
    if values.size and (values.min() < low or values.max() >= high):
        raise ValueError(
            f"{name} out of range: expected ids in [{low}, {high}), "
            f"got min {values.min()} and max {values.max()}"
        )

"""Checks that a workdir's trained stages belong to the config that would restore them.

A finished stage is restored by its directory name. Without a check, a second run in the same
workdir under another config would restore models trained under the first one and report
them under the second one's settings. ``config.json`` records the config of the workdir's
latest accepted run, and :func:`check_saved` compares the new config against it.

Fields named in ``ignored`` may differ: where files are (``data.data_dir``,
``data.manual_dir``: pointing them at other data is the user's responsibility), how the work is
spread over devices (``mesh``; with the default ``threefry2x32`` keys the draws do not depend on
it), how often progress is logged or checkpoints are written. None of these changes a trained
model. Patterns are ``fnmatch`` patterns on the dotted field names (``"*.log_every"``). A field
one of the two configs lacks (a setting added to the project after the workdir was started) is
not compared.

Budgets named in ``growable`` may grow: a stage's learning-rate schedule does not depend on its
total number of steps, so a longer budget continues the stage from where it stopped (a stage
that stopped early stays stopped; under model selection the evaluation at the old budget's last
step stays among the candidates). Only the budgets of stages no other stage is trained against
are growable (the generator's ``train``, not the reward model's or the retriever's, whose
longer training would change the evaluator or the candidates under finished stages). A shorter
budget, or a change from or to 0 (the other budget field then applies), is an error: a stage
trained past the new budget would be restored under it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os

# Fields of an ExperimentConfig that no trained model depends on.
RUN_IGNORED = (
    "data.data_dir",
    "data.manual_dir",
    "mesh.*",
    "*.log_every",
    "*.checkpoint_every",
    "*.keep_checkpoints",
    "*.max_nonfinite_steps",
)
# Budgets of a run of goalrank_jax.main that may grow: the generator's.
RUN_GROWABLE = ("train.num_steps", "train.num_epochs")


def under(group: str, patterns) -> tuple[str, ...]:
    """``patterns`` of a config nested as ``group`` in a larger tree (``"experiment"`` of a
    comparison's config.json); a pattern starting with ``*`` matches at any depth already."""
    return tuple(p if p.startswith("*") else f"{group}.{p}" for p in patterns)


def config_json(config) -> dict:
    """A dataclass config as plain JSON values (tuples become lists, as read back)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def flatten(tree, prefix: str = "") -> dict[str, object]:
    """{dotted field name: value} of a nested dict; lists are values."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _ignored(name: str, ignored) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or name.startswith(p + ".") for p in ignored)


def _grew(before, after) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (before, after))
    return numbers and 0 < before <= after


def differences(
    saved: dict, current: dict, ignored=(), *, missing_ok: bool = False, growable=()
) -> list[str]:
    """Sorted dotted names of the fields whose values differ between two config dicts, leaving
    out those matched by ``ignored``, those matched by ``growable`` whose positive value grew,
    and, with ``missing_ok``, those only one of the two has."""
    saved_flat, current_flat = flatten(saved), flatten(current)
    names = set(saved_flat) | set(current_flat)
    if missing_ok:
        names = set(saved_flat) & set(current_flat)
    out = []
    for name in sorted(names):
        before, after = saved_flat.get(name), current_flat.get(name)
        if before == after or _ignored(name, ignored):
            continue
        if _ignored(name, growable) and _grew(before, after):
            continue
        out.append(name)
    return out


def describe(saved: dict, current: dict, names: list[str], limit: int = 8) -> str:
    """'field: A there, B here; ...' for the first ``limit`` of ``names``."""
    saved_flat, current_flat = flatten(saved), flatten(current)
    shown = "; ".join(
        f"{n}: {saved_flat.get(n)!r} there, {current_flat.get(n)!r} here" for n in names[:limit]
    )
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def read(path: str) -> dict | None:
    """The JSON object at ``path``, or None when there is no file; a clear ValueError when it
    cannot be read."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return value


def check_saved(
    path: str, current: dict, ignored=(), growable=(), *, what: str = "this workdir"
) -> None:
    """Raises ValueError naming every differing field (value there and here) when the config
    saved at ``path`` differs from ``current`` outside ``ignored`` (a field of ``growable`` that
    grew is no difference); nothing when there is no saved config yet."""
    saved = read(path)
    if saved is None:
        return
    names = differences(saved, current, ignored, missing_ok=True, growable=growable)
    if names:
        raise ValueError(
            f"{what} was started under another config ({path}), so its trained stages would be "
            f"restored under settings they were not trained with. Differing fields: "
            f"{describe(saved, current, names)}. Use a new --workdir, or repeat the saved "
            "settings (a ranker's training budget may grow, not shrink)."
        )

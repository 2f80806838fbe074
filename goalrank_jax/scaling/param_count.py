"""Generator parameter counts, with and without the embedding tables, without allocating.

    python -m goalrank_jax.scaling.param_count --config=experiments/goalrank.py:size=10m
    python -m goalrank_jax.scaling.param_count --config=experiments/goalrank.py:size=10m \
        --variant=fast
    python -m goalrank_jax.scaling.param_count --table   # every preset and variant (markdown)

Counts come from ``jax.eval_shape`` of the generator's real ``init`` on an abstract batch, so
nothing is allocated and a 300M-parameter preset is counted on a CPU in seconds. The
vocabulary (users, items) and N come from the config's data section: the synthetic world's
sizes, or ``--num_users`` / ``--num_items`` for a real dataset (its vocabulary is known only
once prepared; the data preparation logs it as ``users`` / ``items``).

Embedding parameters are the vocabulary-sized tables: ``item_embed`` [I, D], ``user_embed``
[U, D], ``label_embed`` [2, D] (history feedback) and ``item_bias`` [I, 1]. Everything else,
including the candidate-slot embedding [N, D], counts as non-embedding.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from goalrank_jax import configs
from goalrank_jax.models import generator_variants, get_generator
from goalrank_jax.scaling import presets


def config_arg_size(config_filename: str) -> str | None:
    """'experiments/goalrank.py:smoke,size=10m' -> '10m' (None without a size arg)."""
    _, _, arg = config_filename.partition(".py:")
    for part in (p.strip() for p in arg.split(",")):
        if part.startswith("size="):
            return part.split("=", 1)[1]
    return None


_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/goalrank.py", "Experiment config, e.g. experiments/goalrank.py:size=1m."
)
_VARIANT = flags.DEFINE_enum(
    "variant",
    "",
    ["", *generator_variants()],
    "Generator variant (default: the config's). With a size=NAME config arg the preset's depth "
    "for this variant is used.",
)
_TABLE = flags.DEFINE_bool("table", False, "Print every preset, both variants, as markdown.")
_NUM_USERS = flags.DEFINE_integer("num_users", 0, "User vocabulary (default: the config's).")
_NUM_ITEMS = flags.DEFINE_integer("num_items", 0, "Item vocabulary (default: the config's).")
_NUM_ITEM_FEATURES = flags.DEFINE_integer(
    "num_item_features",
    -1,
    "Item side-feature vocabulary (default -1: the synthetic world's categories when "
    "data.item_features is on, else 0; real data: the 'item features' of its '[data] vocabulary' "
    "line).",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        config = configs.from_config_dict(_CONFIG.value)
        users, items = presets.vocabulary(config.data, _NUM_USERS.value, _NUM_ITEMS.value)
        features = presets.feature_vocabulary(config.data, _NUM_ITEM_FEATURES.value)
        model = config.generator
        size = config_arg_size(config_flags.get_config_filename(flags.FLAGS["config"]))
        if _VARIANT.value:
            if size:
                model = presets.apply_preset(model, size, _VARIANT.value)
            else:
                model = dataclasses.replace(model, variant=_VARIANT.value)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    n = config.data.num_candidates
    print(
        f"vocabulary: {users:,} users, {items:,} items, {features} item features; N={n} candidates"
    )
    if _TABLE.value:
        print(presets.markdown_table(presets.preset_rows(model, users, items, n, features)))
        return
    counted = presets.count_generator(model, users, items, n, num_item_features=features)
    print(
        f"generator: variant={model.variant}{f' size={size}' if size else ''} "
        f"D={model.embed_dim} heads={model.num_heads} ff={model.ff_dim} "
        f"layers={model.num_layers}"
        + "".join(f" {f}={getattr(model, f)}" for f in get_generator(model.variant).fields)
    )
    tables = ", ".join(f"{k} {v:,}" for k, v in counted.by_table.items() if v)
    for label, n in (
        ("parameters: total", counted.total),
        ("  non-embedding", counted.non_embedding),
        ("  embedding", counted.embedding),
    ):
        print(f"{label} {n:,} ({presets.format_millions(n)})")
    print(f"  embedding tables: {tables}")


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing where a bad flag or config arg (e.g. an unknown preset) exits with
    code 2 and a one-line message."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        print(f"error: invalid flags: {lines[-1] if lines else err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

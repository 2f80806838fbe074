"""Named generator sizes for the scaling study, from ~10k to ~300M parameters.

A preset fixes the width (D, heads, feed-forward width) and, per generator variant, the depth.
The depth differs between the variants because a layer costs a different number of parameters
in each: the prefix generator's only stack is its candidate encoder (~12 D^2 per layer), while
the fast generator needs at least one encoder layer *and* one decoder layer (~16 D^2, with
cross-attention). Each preset's depths are chosen so that the **non-embedding** parameter count
of both variants is close to the preset's name on the default synthetic data (2,000 items,
1,000 users, N = 50 candidates); the counts (``python -m goalrank_jax.scaling.param_count --table``)
are in docs/scaling.md. The embedding tables (item, user, history-label embeddings and the
per-item bias) scale with the vocabulary, not with the preset.

The feed-forward width is 4 D; the widths are shared by both variants and the depths never
shrink from one preset to the next.

Counting: :func:`count_generator` runs ``jax.eval_shape`` of the generator's real ``init`` on an
abstract batch (nothing is allocated, so 300M parameters are counted on a CPU in seconds) and
splits the count into the vocabulary-sized embedding tables (:data:`EMBEDDING_TABLES`) and the
rest. ``python -m goalrank_jax.scaling.param_count`` prints the counts.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from goalrank_jax import configs
from goalrank_jax.configs import ModelConfig
from goalrank_jax.models import generator_variants, get_generator, make_generator


@dataclasses.dataclass(frozen=True)
class Preset:
    """One generator size (both variants share the width, each has its own depth)."""

    embed_dim: int  # D.
    num_heads: int
    ff_dim: int  # Feed-forward width of every transformer / decoder layer.
    prefix_layers: int  # Prefix variant: layers of the candidate encoder (re-run every step).
    fast_layers: int  # Fast variant: layers of the candidate encoder (run once per request).
    fast_decoder_layers: int  # Fast variant: layers of the pointer decoder.

    def model_fields(self, variant: str) -> dict[str, int | str]:
        """The ``ModelConfig`` fields this preset sets for ``variant``: the width, shared by
        every variant, and the depth that the variant's registered preset rule
        (goalrank_jax/models/registry.py) takes from this preset."""
        spec = get_generator(variant)  # raises on an unknown variant, listing the registered
        return dict(
            variant=variant,
            embed_dim=self.embed_dim,
            num_heads=self.num_heads,
            ff_dim=self.ff_dim,
            **spec.preset_fields(self),
        )


def _preset(dim: int, heads: int, prefix_layers: int, fast_layers: int, decoder: int) -> Preset:
    return Preset(dim, heads, 4 * dim, prefix_layers, fast_layers, decoder)


# Name = the targeted non-embedding parameter count on the default synthetic data. The two
# smallest sizes are below the paper's range (~1M .. ~0.1B); they are cheap on a CPU and extend
# the curve downwards.
PRESETS: dict[str, Preset] = {
    "0.01m": _preset(16, 2, prefix_layers=2, fast_layers=1, decoder=1),
    "0.03m": _preset(28, 2, prefix_layers=2, fast_layers=1, decoder=1),
    "0.1m": _preset(48, 2, prefix_layers=3, fast_layers=1, decoder=1),
    "0.3m": _preset(80, 2, prefix_layers=3, fast_layers=2, decoder=1),
    "1m": _preset(128, 2, prefix_layers=4, fast_layers=3, decoder=1),
    "3m": _preset(224, 4, prefix_layers=4, fast_layers=3, decoder=1),
    "10m": _preset(384, 6, prefix_layers=5, fast_layers=3, decoder=1),
    "30m": _preset(512, 8, prefix_layers=9, fast_layers=6, decoder=2),
    "100m": _preset(768, 12, prefix_layers=14, fast_layers=10, decoder=3),
    "300m": _preset(1024, 16, prefix_layers=24, fast_layers=16, decoder=6),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ValueError lists the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"Unknown model size preset {name!r}; valid presets: {', '.join(PRESETS)}."
        ) from None


def nominal_params(name: str) -> float:
    """'0.3m' -> 3e5: the non-embedding parameter count a preset's name stands for."""
    get_preset(name)
    return float(name[:-1]) * 1e6


def apply_preset(model: ModelConfig, name: str, variant: str | None = None) -> ModelConfig:
    """``model`` with the width and depth of preset ``name`` for ``variant`` (default: the
    config's own variant). Dropout, dtype and the other fields are kept."""
    fields = get_preset(name).model_fields(variant or model.variant)
    return dataclasses.replace(model, **fields)


def sorted_names(names) -> list[str]:
    """Preset names ordered by size (the order of :data:`PRESETS`)."""
    for name in names:
        get_preset(name)
    order = list(PRESETS)
    return sorted(set(names), key=order.index)


# Parameter counts (``python -m goalrank_jax.scaling.param_count`` prints them).

EMBEDDING_TABLES = ("item_embed", "user_embed", "label_embed", "item_bias", "feature_embed")


@dataclasses.dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int  # Parameters of the EMBEDDING_TABLES.
    by_table: dict[str, int]  # Embedding parameters per table name.

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def abstract_batch(
    num_candidates: int, history_len: int, batch_size: int = 1, item_features: bool = False
) -> dict:
    """ShapeDtypeStructs of the request features a generator's ``init`` reads: user_id [B],
    history_items / history_labels / history_mask [B, H], cand_items / cand_mask [B, N], and
    with ``item_features`` one side feature per item (history_item_features [B, H, 1],
    cand_item_features [B, N, 1]; the count of features per item changes no parameter)."""
    spec = jax.ShapeDtypeStruct
    history, candidates = (batch_size, history_len), (batch_size, num_candidates)
    features = {}
    if item_features:
        features = {
            "history_item_features": spec(history + (1,), jnp.int32),
            "cand_item_features": spec(candidates + (1,), jnp.int32),
        }
    return features | {
        "user_id": spec((batch_size,), jnp.int32),
        "history_items": spec(history, jnp.int32),
        "history_labels": spec(history, jnp.int32),
        "history_mask": spec(history, jnp.bool_),
        "cand_items": spec(candidates, jnp.int32),
        "cand_mask": spec(candidates, jnp.bool_),
    }


def count(params) -> ParamCount:
    """Counts a parameter tree of arrays or ShapeDtypeStructs."""
    total, by_table = 0, dict.fromkeys(EMBEDDING_TABLES, 0)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        size = int(np.prod(leaf.shape))
        total += size
        names = [getattr(entry, "key", None) for entry in path]
        table = next((n for n in names if n in EMBEDDING_TABLES), None)
        if table is not None:
            by_table[table] += size
    return ParamCount(total, sum(by_table.values()), by_table)


def generator_shapes(
    model: configs.ModelConfig,
    num_users,
    num_items,
    num_candidates,
    history_len,
    num_item_features: int = 0,
):
    """The generator's parameter tree as ShapeDtypeStructs (``jax.eval_shape`` of its init)."""
    generator = make_generator(model, num_users, num_items, num_item_features)
    batch = abstract_batch(num_candidates, history_len, item_features=num_item_features > 0)
    return jax.eval_shape(generator.init, jax.random.key(0), batch)


def count_generator(
    model: configs.ModelConfig,
    num_users: int,
    num_items: int,
    num_candidates: int,
    history_len=8,
    num_item_features: int = 0,
) -> ParamCount:
    """Parameter count of the generator ``model`` on a vocabulary of users / items (and of
    ``num_item_features`` item side features) and N candidates (the history length changes no
    parameter)."""
    return count(
        generator_shapes(
            model, num_users, num_items, num_candidates, history_len, num_item_features
        )
    )


def feature_vocabulary(data: configs.DataConfig, override: int = -1) -> int:
    """The number of item side features the models embed: ``override`` if >= 0, else the
    synthetic world's categories when ``data.item_features`` is on, else 0 (a real dataset's
    feature vocabulary is known only after preparation)."""
    if override >= 0:
        return override
    if data.dataset == "synthetic" and data.item_features:
        return data.env.num_categories
    return 0


def vocabulary(data: configs.DataConfig, num_users: int = 0, num_items: int = 0):
    """(num_users, num_items): the overrides if given, else the synthetic world's sizes."""
    if num_users and num_items:
        return num_users, num_items
    if data.dataset == "synthetic":
        return num_users or data.env.num_users, num_items or data.env.num_items
    raise ValueError(
        f"The vocabulary of dataset {data.dataset!r} is known only after preparation: pass "
        "--num_users and --num_items (the 'users' / 'items' of its '[data] vocabulary' line)."
    )


def preset_rows(
    base: configs.ModelConfig, num_users, num_items, num_candidates, num_item_features: int = 0
) -> list[dict]:
    """One row per preset: its shape and the counts of both variants."""
    rows = []
    for name, preset in PRESETS.items():
        row = {"preset": name, "preset_fields": dataclasses.asdict(preset)}
        for variant in generator_variants():
            model = apply_preset(base, name, variant)
            counted = count_generator(
                model, num_users, num_items, num_candidates, num_item_features=num_item_features
            )
            row[variant] = {
                "total": counted.total,
                "non_embedding": counted.non_embedding,
                "embedding": counted.embedding,
            }
        rows.append(row)
    return rows


def format_millions(n: int) -> str:
    """Three significant digits: 12345 -> '0.0123M', 31027201 -> '31M'."""
    return f"{n / 1e6:.3g}M"


def _exact(n: int) -> str:
    return f"{n:,} ({format_millions(n)})"


def _depth(variant: str, preset: Preset) -> tuple[str, str]:
    """(column label, cell) of the depth of ``variant`` at ``preset``: "layers" / "4", or
    "enc+dec layers" / "3+1" for a variant with a decoder."""
    spec = get_generator(variant)
    fields = spec.preset_fields(preset)
    if "decoder_layers" in spec.fields:
        return "enc+dec layers", f"{fields['num_layers']}+{fields['decoder_layers']}"
    return "layers", str(fields["num_layers"])


def markdown_table(rows: list[dict]) -> str:
    """The preset table: shape, embedding params (the same for every variant), and per variant
    (those of ``preset_rows``) depth / non-embedding / total params."""
    variants = [key for key in rows[0] if key not in ("preset", "preset_fields")]
    first = Preset(**rows[0]["preset_fields"])
    header = ["preset", "D", "heads", "FF", "embedding"]
    for variant in variants:
        header += [f"{variant} {_depth(variant, first)[0]}", f"{variant} non-emb"]
        header += [f"{variant} total"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        p = row["preset_fields"]
        cells = [row["preset"], p["embed_dim"], p["num_heads"], p["ff_dim"]]
        cells += [_exact(row[variants[0]]["embedding"])]
        for variant in variants:
            counts = row[variant]
            cells += [_depth(variant, Preset(**p))[1]]
            cells += [_exact(counts["non_embedding"]), _exact(counts["total"])]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)

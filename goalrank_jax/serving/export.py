"""Export the greedy ranker of a finished run as a self-contained ``jax.export`` artifact.

    python -m goalrank_jax.serving.export --workdir=runs/goalrank --output=runs/goalrank/serving
    python -m goalrank_jax.serving.rank --model=runs/goalrank/serving --input=requests.jsonl \
        --output=ranked.jsonl

``DIR/ranker.bin`` is the serialized greedy decoder of the generator policy,
``(user_id [B], history_items [B, H], history_labels [B, H], history_mask [B, H],
cand_items [B, N], cand_mask [B, N]) -> [B, L] int32 candidate indices``, with the parameters
baked in as constants and a symbolic batch axis B, so one artifact serves batch 1 and batch 1024
without the model's Python code. ``DIR/ranker.json`` describes it (:func:`export_ranker`).
:mod:`goalrank_jax.serving.rank` loads and runs it with jax and numpy only.

The parameters are those the run evaluated: the generator stage's best checkpoint when
``train.select_metric`` is set, its final checkpoint otherwise. Both files are written to a
temporary file and renamed, and ``ranker.json`` (written last) holds the checksum of
``ranker.bin``, so an interrupted export is detected instead of being served.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags, logging

from goalrank_jax import configs, policies, run
from goalrank_jax.data import item_features as item_features_lib
from goalrank_jax.models import make_generator
from goalrank_jax.serving import rank

INPUT_DTYPES = {
    "user_id": np.int32,
    "history_items": np.int32,
    "history_labels": np.int32,
    "history_mask": np.bool_,
    "cand_items": np.int32,
    "cand_mask": np.bool_,
}
# Stand-in vocabulary sizes for finding the user- and item-table axes of a saved parameter tree:
# primes far from any width or length a model uses.
_PROBE_USERS, _PROBE_ITEMS = 1_000_003, 1_000_033


class ExportError(Exception):
    """The workdir cannot be exported; the message says why."""


def serving_input_specs(
    num_candidates: int, history_len: int, batch_size: int = 1
) -> dict[str, jax.ShapeDtypeStruct]:
    """ShapeDtypeStructs of the ranker inputs (``rank.INPUT_NAMES``) for a batch of requests."""
    shapes = {"user_id": (batch_size,), "history_items": (batch_size, history_len)}
    shapes["history_labels"] = shapes["history_mask"] = shapes["history_items"]
    shapes["cand_items"] = shapes["cand_mask"] = (batch_size, num_candidates)
    return {name: jax.ShapeDtypeStruct(shapes[name], INPUT_DTYPES[name]) for name in INPUT_DTYPES}


def with_feature_specs(specs: dict, width: int) -> dict:
    """``specs`` plus the side-feature inputs ([batch, H, F] / [batch, N, F] int32) that a
    generator with item features reads (see goalrank_jax/data/item_features.py)."""
    out = dict(specs)
    for items, field in zip(
        ("history_items", "cand_items"), item_features_lib.BATCH_FIELDS, strict=True
    ):
        out[field] = jax.ShapeDtypeStruct(specs[items].shape + (width,), np.int32)
    return out


def _artifact_metadata(exported, blob, specs, policy, num_users, num_items) -> dict[str, Any]:
    """The part of ``ranker.json`` that describes the artifact's file, inputs and output."""
    (out_aval,) = exported.out_avals
    return {
        "format_version": rank.FORMAT_VERSION,
        "artifact": rank.ARTIFACT_FILE,
        "artifact_sha256": hashlib.sha256(blob).hexdigest(),
        "artifact_bytes": len(blob),
        "num_candidates": int(specs[rank.INPUT_NAMES.index("cand_items")].shape[1]),
        "list_len": int(policy.list_len),
        "history_len": int(specs[rank.INPUT_NAMES.index("history_items")].shape[1]),
        "num_items": int(num_items),
        "num_users": int(num_users),
        "inputs": [
            {"name": name, "dtype": np.dtype(spec.dtype).name, "shape": [None, *spec.shape[1:]]}
            for name, spec in zip(rank.INPUT_NAMES, specs, strict=True)
        ],
        "output": {
            "name": "ranked_positions",
            "dtype": np.dtype(out_aval.dtype).name,
            "shape": [None, *out_aval.shape[1:]],
        },
    }


def export_ranker(
    policy: policies.GeneratorPolicy,
    params: Any,
    example_batch_shapes: Mapping[str, Any],
    path: str,
    *,
    num_users: int | None = None,
    num_items: int | None = None,
    variant: str | None = None,
    config_hash: str | None = None,
    platforms: Sequence[str] | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    item_features: np.ndarray | None = None,
) -> dict[str, Any]:
    """Exports ``policy.greedy`` with ``params`` baked in; writes ``path``/ranker.{bin,json}.

    Args:
      policy: the generator policy (any generator variant; its ``greedy(params, batch)``).
      params: its parameters (moved to the host and embedded as constants).
      example_batch_shapes: ``rank.INPUT_NAMES`` -> anything with ``.shape`` and ``.dtype``
        (arrays of an example batch, or ``serving_input_specs``); the leading axis becomes the
        symbolic batch axis, the others fix H and N. Other keys are ignored.
      path: output directory (created if missing).
      num_users, num_items: vocabulary sizes, checked by the ranking command; default to the
        generator module's ``num_users`` / ``num_items``.
      variant: the generator variant (``ModelConfig.variant``) recorded in the metadata.
      config_hash: hash of the run's config, recorded in the metadata.
      platforms: lowering platforms (None = the default backend).
      extra_metadata: more metadata entries (e.g. where the parameters came from).
      item_features: the [I, F] item side-feature table of a generator that uses them; baked in,
        so that requests still carry item ids only.

    Returns:
      The metadata written to ``ranker.json``.
    """
    missing = [name for name in rank.INPUT_NAMES if name not in example_batch_shapes]
    if missing:
        raise ValueError(f"example_batch_shapes lacks the ranker input(s) {missing}")
    num_users = num_users if num_users is not None else policy.module.num_users
    num_items = num_items if num_items is not None else policy.module.num_items
    (batch,) = jax.export.symbolic_shape("batch")
    specs = [
        jax.ShapeDtypeStruct(
            (batch,) + tuple(example_batch_shapes[name].shape[1:]),
            example_batch_shapes[name].dtype,
        )
        for name in rank.INPUT_NAMES
    ]
    host_params = jax.device_get(params)

    def greedy_ranker(*inputs):
        batch = dict(zip(rank.INPUT_NAMES, inputs, strict=True))
        if item_features is not None:
            item_features_lib.add_to_batch(batch, item_features, xp=jnp)
        return policy.greedy(host_params, batch)

    exported = jax.export.export(jax.jit(greedy_ranker), platforms=platforms)(*specs)
    blob = bytes(exported.serialize())
    metadata = {
        **_artifact_metadata(exported, blob, specs, policy, num_users, num_items),
        "generator_variant": variant,
        "decoding": "plackett_luce_sort" if policy.plackett_luce else "greedy",
        "config_hash": config_hash,
        "platforms": list(exported.platforms),
        "jax_version": jax.__version__,
        **(extra_metadata or {}),
    }
    os.makedirs(path, exist_ok=True)
    rank.atomic_write(os.path.join(path, rank.ARTIFACT_FILE), blob)
    rank.atomic_write(
        os.path.join(path, rank.METADATA_FILE),
        (json.dumps(metadata, indent=2) + "\n").encode("utf-8"),
    )
    return metadata


def read_config(workdir: str) -> tuple[configs.ExperimentConfig, str]:
    """The run's validated config and the sha256 of its canonical JSON."""
    path = os.path.join(workdir, "config.json")
    try:
        with open(path) as f:
            values = json.load(f)
        config = configs.from_config_dict(values)
    except (OSError, json.JSONDecodeError, ValueError) as err:
        raise ExportError(f"cannot read the run's config {path}: {err}") from err
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return config, hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _manager(directory: str) -> ocp.CheckpointManager | None:
    if not os.path.isdir(directory):
        return None
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add("state", ocp.args.PyTreeRestore)
    registry.add("data", ocp.args.JsonRestore)
    return ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(create=False),
        handler_registry=registry,
    )


def evaluated_checkpoint(
    workdir: str, train: configs.StageConfig
) -> tuple[ocp.CheckpointManager, int]:
    """(manager, step) of the generator state the run evaluated: mirrors ``train_stage``.

    Raises ExportError if the generator stage has not finished.
    """
    stage_dir = os.path.join(workdir, run.GENERATOR_STAGE)
    final = _manager(os.path.join(stage_dir, "checkpoints"))
    latest = final.latest_step() if final is not None else None
    data = {}
    if latest is not None:
        data = final.restore(latest, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
    # The stage's step budget (resolved from epochs) is kept with its checkpoints; an early
    # stopped stage is finished too.
    budget = int((data or {}).get("num_steps", train.num_steps))
    if latest is None or not (latest >= budget or (data or {}).get("stopped_early")):
        if final is not None:
            final.close()
        raise ExportError(
            f"the generator stage of {workdir} has not finished (latest checkpoint: "
            f"{latest}, step budget: {budget}); rerun goalrank_jax.main on this "
            "workdir to finish it first."
        )
    if train.select_metric:
        best = _manager(os.path.join(stage_dir, "best"))
        step = best.latest_step() if best is not None else None
        if step is not None:
            final.close()
            return best, step
        if best is not None:
            best.close()
    return final, latest


def _shapes_by_path(tree) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """keystr path -> (shape, dtype) of every leaf (arrays, abstract arrays or orbax metadata)."""
    return {
        jax.tree_util.keystr(path): (tuple(leaf.shape), np.dtype(leaf.dtype))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _abstract_params(generator, specs):
    return jax.eval_shape(generator.init, jax.random.key(0), specs)


def _vocab_sizes_from_params(model_config, saved, specs) -> dict[str, int]:
    """num_users / num_items read off the saved tables whose axes a probe model of stand-in
    vocabulary sizes puts them on (works for any generator variant). Absent if unused."""
    probe = _shapes_by_path(
        _abstract_params(make_generator(model_config, _PROBE_USERS, _PROBE_ITEMS), specs)
    )
    found: dict[str, set[int]] = {"num_users": set(), "num_items": set()}
    for path, (shape, _) in probe.items():
        if path not in saved or len(saved[path][0]) != len(shape):
            continue  # A structural mismatch, reported by _check_params.
        for probe_dim, saved_dim in zip(shape, saved[path][0], strict=True):
            if probe_dim == _PROBE_USERS:
                found["num_users"].add(saved_dim)
            elif probe_dim == _PROBE_ITEMS:
                found["num_items"].add(saved_dim)
    if any(len(sizes) > 1 for sizes in found.values()):
        raise ExportError(f"inconsistent vocabulary sizes in the saved parameters: {found}")
    return {name: sizes.pop() for name, sizes in found.items() if sizes}


def _check_params(expected, saved, where: str) -> None:
    for path in sorted(set(expected) | set(saved)):
        if path not in saved:
            raise ExportError(f"{where}: parameter {path} of the configured generator is missing")
        if path not in expected:
            raise ExportError(f"{where}: saved parameter {path} is not in the configured generator")
        if saved[path] != expected[path]:
            raise ExportError(
                f"{where}: parameter {path} is saved as {saved[path]}, the configured "
                f"generator expects {expected[path]} (different size or variant in config.json?)"
            )


def restore_generator(workdir: str, config: configs.ExperimentConfig, log_fn=print):
    """The state the run evaluated: (generator module, host params, {num_users, num_items},
    source info, the [I, F] item side-feature table when the generator uses one, else None)."""
    data = config.data
    specs = serving_input_specs(data.num_candidates, data.history_len, batch_size=2)
    manager, step = evaluated_checkpoint(workdir, config.train)
    where = f"{manager.directory}/{step}"
    try:
        saved = _shapes_by_path(manager.item_metadata(step)["state"].tree["params"])
        sizes = _vocab_sizes_from_params(config.generator, saved, specs)
        if len(sizes) < 2:
            # A vocabulary that sizes no parameter (e.g. use_user_id=False): ask the dataset.
            dataset = run.prepare_data(config, workdir, log_fn)
            sizes = {"num_users": dataset.num_users, "num_items": dataset.num_items} | sizes
        num_features, table = _item_features(config, saved, workdir, log_fn)
        generator = make_generator(
            config.generator, sizes["num_users"], sizes["num_items"], num_features
        )
        if table is not None:
            specs = with_feature_specs(specs, table.shape[1])
        abstract = _abstract_params(generator, specs)
        _check_params(_shapes_by_path(abstract), saved, where)
        as_numpy = jax.tree_util.tree_map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract
        )
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item={"params": abstract},
                    restore_args={"params": as_numpy},
                    partial_restore=True,
                )
            ),
        )
    finally:
        manager.close()
    source = {"workdir": os.path.abspath(workdir), "checkpoint": where, "step": int(step)}
    return generator, restored.state["params"], sizes, source, table


def _item_features(config, saved, workdir: str, log_fn) -> tuple[int, np.ndarray | None]:
    """(V, the [I, F] table) of a saved generator with a side-feature embedding (read from
    the run's dataset), else (0, None)."""
    shapes = [shape for path, (shape, _) in saved.items() if "feature_embed" in path]
    if not shapes:
        return 0, None
    dataset = run.prepare_data(config, workdir, log_fn)
    if dataset.item_features is None or dataset.num_item_features != shapes[0][0]:
        raise ExportError(
            f"the saved generator embeds {shapes[0][0]} item side features but the run's "
            f"dataset gives {dataset.num_item_features}"
        )
    return dataset.num_item_features, dataset.item_features


def export_run(
    workdir: str, output: str, platforms: Sequence[str] | None = None, log_fn=print
) -> dict[str, Any]:
    """Exports the greedy ranker of the finished run in ``workdir`` to ``output``."""
    config, config_hash = read_config(workdir)
    generator, params, sizes, source, table = restore_generator(workdir, config, log_fn)
    policy = policies.GeneratorPolicy(
        generator,
        config.data.list_len,
        plackett_luce=config.gro.group_construction == "plackett_luce",
    )
    return export_ranker(
        policy,
        params,
        serving_input_specs(config.data.num_candidates, config.data.history_len),
        output,
        num_users=sizes["num_users"],
        num_items=sizes["num_items"],
        variant=getattr(config.generator, "variant", "prefix"),
        config_hash=config_hash,
        platforms=platforms or None,
        extra_metadata={"source": source},
        item_features=table,
    )


def main() -> None:
    """The command line. Flags are defined here, not on import, so that the library functions
    can be imported next to other absl programs (``--workdir`` is also goalrank_jax.main's)."""
    workdir = flags.DEFINE_string(
        "workdir",
        None,
        "Workdir of a finished run of goalrank_jax.main: its config.json and the generator "
        "checkpoints under <workdir>/generator are read.",
    )
    output = flags.DEFINE_string(
        "output",
        None,
        "Directory to write ranker.bin and ranker.json into (created if missing; existing "
        "files are replaced atomically).",
    )
    platforms = flags.DEFINE_list(
        "platforms",
        [],
        "Platforms to lower the ranker for (cpu, cuda, rocm, tpu); several give one artifact "
        "that runs on each. Empty = the default backend of this machine.",
    )
    flags.mark_flags_as_required(["workdir", "output"])

    def export_command(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        logging.set_verbosity(logging.ERROR)
        start = time.time()
        try:
            metadata = export_run(workdir.value, output.value, platforms.value)
        except ExportError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        print(
            f"exported the {metadata['generator_variant']} generator of "
            f"{metadata['source']['checkpoint']} (N={metadata['num_candidates']}, "
            f"L={metadata['list_len']}, H={metadata['history_len']}, {metadata['decoding']}, "
            f"{','.join(metadata['platforms'])}) -> "
            f"{os.path.join(output.value, rank.ARTIFACT_FILE)} "
            f"({metadata['artifact_bytes']:,} bytes) in {time.time() - start:.1f}s",
            flush=True,
        )

    app.run(export_command)


if __name__ == "__main__":
    main()

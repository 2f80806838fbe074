"""Latency and throughput of the exported greedy ranker, per generator variant; prints JSON.

    python benchmarks/serving_latency.py [--variants=prefix,fast] [--embed_dim=128]

For each variant a freshly initialised generator (the weights do not change the cost) at the
paper's size (N=50, L=6, H=50, D=128, 2 layers, 2 heads, FF 128) is exported with
``goalrank_jax.serving.export.export_ranker``, loaded back with
``goalrank_jax.serving.rank.load_ranker`` (the deserialized artifact, exactly as the ranking
command runs it) and timed numpy-in, numpy-out:
the latency of single requests (p50 / p99 / mean over ``--latency_calls`` calls after
``--warmup_calls``) and the throughput at ``--throughput_batch`` requests per call (the median
of ``--throughput_repeats`` calls). Export time, artifact size and the first call of each batch
size (its compilation) are reported too. A variant that ``make_generator`` does not offer is
skipped with a note.
"""

import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging

from goalrank_jax import configs, policies
from goalrank_jax.models import make_generator
from goalrank_jax.serving import export, rank

_VARIANTS = flags.DEFINE_list("variants", ["prefix", "fast"], "Generator variants to time.")
_NUM_CANDIDATES = flags.DEFINE_integer("num_candidates", 50, "N: candidates per request.")
_LIST_LEN = flags.DEFINE_integer("list_len", 6, "L: length of the ranked list.")
_HISTORY_LEN = flags.DEFINE_integer("history_len", 50, "H: history length.")
_EMBED_DIM = flags.DEFINE_integer("embed_dim", 128, "D: generator width.")
_NUM_LAYERS = flags.DEFINE_integer("num_layers", 2, "Transformer layers over the candidates.")
_NUM_HEADS = flags.DEFINE_integer("num_heads", 2, "Attention heads.")
_FF_DIM = flags.DEFINE_integer("ff_dim", 128, "Feed-forward width.")
_NUM_USERS = flags.DEFINE_integer("num_users", 1000, "User vocabulary size.")
_NUM_ITEMS = flags.DEFINE_integer("num_items", 2000, "Item vocabulary size.")
_WARMUP_CALLS = flags.DEFINE_integer("warmup_calls", 20, "Untimed batch-1 calls first.")
_LATENCY_CALLS = flags.DEFINE_integer("latency_calls", 500, "Timed batch-1 calls.")
_THROUGHPUT_BATCH = flags.DEFINE_integer("throughput_batch", 1024, "Requests per call.")
_THROUGHPUT_REPEATS = flags.DEFINE_integer("throughput_repeats", 5, "Timed large-batch calls.")
_ARTIFACT_DIR = flags.DEFINE_string(
    "artifact_dir", "", "Keep the exported rankers under this directory ('' = a temporary one)."
)


def random_requests(batch_size, num_candidates, history_len, num_users, num_items, rng):
    """[B, ...] ranker inputs of random requests with full histories and N distinct candidates
    (padding would not change the cost: every slot is computed)."""
    cands = np.argsort(rng.random((batch_size, num_items)), axis=-1)[:, :num_candidates]
    history = rng.integers(0, num_items, (batch_size, history_len))
    return {
        "user_id": rng.integers(0, num_users, batch_size).astype(np.int32),
        "history_items": history.astype(np.int32),
        "history_labels": rng.integers(0, 2, (batch_size, history_len)).astype(np.int32),
        "history_mask": np.ones((batch_size, history_len), bool),
        "cand_items": cands.astype(np.int32),
        "cand_mask": np.ones((batch_size, num_candidates), bool),
    }


def _generator(variant):
    """make_generator's module for ``variant``; ValueError if this checkout lacks it."""
    sizes = dict(
        embed_dim=_EMBED_DIM.value,
        num_layers=_NUM_LAYERS.value,
        num_heads=_NUM_HEADS.value,
        ff_dim=_FF_DIM.value,
        dropout=0.0,
    )
    if "variant" in {field.name for field in dataclasses.fields(configs.ModelConfig)}:
        sizes["variant"] = variant
    elif variant != "prefix":
        raise ValueError("configs.ModelConfig has no 'variant' field in this checkout")
    model_config = configs.ModelConfig(**sizes)
    model_config.validate()
    return make_generator(model_config, _NUM_USERS.value, _NUM_ITEMS.value)


def _time_calls(fn, calls):
    times = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def bench_variant(variant, requests, artifact_root):
    try:
        generator = _generator(variant)
    except ValueError as err:
        return {"variant": variant, "skipped": f"not available: {err}"}
    params = jax.jit(generator.init)(jax.random.key(0), {k: v[:2] for k, v in requests.items()})
    policy = policies.GeneratorPolicy(generator, _LIST_LEN.value)
    model_dir = os.path.join(artifact_root, variant)
    start = time.perf_counter()
    metadata = export.export_ranker(policy, params, requests, model_dir, variant=variant)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    ranker = rank.load_ranker(model_dir)
    load_s = time.perf_counter() - start

    batch_size = len(requests["user_id"])
    singles = [{k: v[i : i + 1] for k, v in requests.items()} for i in range(batch_size)]
    compile_1 = _time_calls(lambda i: ranker(singles[0]), 1)[0]
    _time_calls(lambda i: ranker(singles[i % batch_size]), _WARMUP_CALLS.value)
    latency = _time_calls(lambda i: ranker(singles[i % batch_size]), _LATENCY_CALLS.value)
    compile_big = _time_calls(lambda i: ranker(requests), 1)[0]
    big = _time_calls(lambda i: ranker(requests), _THROUGHPUT_REPEATS.value)
    big_s = statistics.median(big.tolist())
    ms = 1e3 * latency
    return {
        "variant": variant,
        "parameters": int(sum(x.size for x in jax.tree_util.tree_leaves(params))),
        "artifact_bytes": metadata["artifact_bytes"],
        "export_s": round(export_s, 3),
        "load_s": round(load_s, 4),
        "first_call_batch_1_s": round(float(compile_1), 3),
        "latency_batch_1_ms": {
            "p50": round(float(np.percentile(ms, 50)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3),
            "mean": round(float(ms.mean()), 3),
            "calls": len(ms),
        },
        f"first_call_batch_{batch_size}_s": round(float(compile_big), 3),
        f"batch_{batch_size}_call_s_median": round(big_s, 4),
        "throughput_requests_per_s": round(batch_size / big_s, 1),
        f"batch_{batch_size}_call_s_all": [round(t, 4) for t in big.tolist()],
    }


def main(_):
    logging.set_verbosity(logging.WARNING)
    rng = np.random.default_rng(0)
    requests = random_requests(
        _THROUGHPUT_BATCH.value,
        _NUM_CANDIDATES.value,
        _HISTORY_LEN.value,
        _NUM_USERS.value,
        _NUM_ITEMS.value,
        rng,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = _ARTIFACT_DIR.value or tmp
        results = [bench_variant(variant, requests, root) for variant in _VARIANTS.value]
    print(
        json.dumps(
            {
                "benchmark": "serving_latency",
                "backend": jax.default_backend(),
                "devices": jax.device_count(),
                "machine": platform.machine(),
                "cpu_count": os.cpu_count(),
                "jax_version": jax.__version__,
                "num_candidates": _NUM_CANDIDATES.value,
                "list_len": _LIST_LEN.value,
                "history_len": _HISTORY_LEN.value,
                "embed_dim": _EMBED_DIM.value,
                "num_layers": _NUM_LAYERS.value,
                "num_heads": _NUM_HEADS.value,
                "ff_dim": _FF_DIM.value,
                "num_users": _NUM_USERS.value,
                "num_items": _NUM_ITEMS.value,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    app.run(main)

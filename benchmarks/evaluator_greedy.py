"""Cost of the list-aware evaluator's greedy list and of the mixed group that contains it; JSON.

    python benchmarks/evaluator_greedy.py [--batch_sizes=32,256] [--config=...]

The list-aware reward model's greedy list (``policies.Evaluator.greedy``) scores, at each of the
L steps, every candidate appended to the chosen prefix. Three forms are timed on the same
randomly perturbed parameters and random requests (the weights do not change the cost; the
perturbation keeps argmax ties away so that the lists can be compared):

* ``appended``: the library's form, step t is one pass over the prefix and the N candidates
  after it (``ListAwareRewardModel.appended_logits``), t + N positions;
* ``prefix_trials``: the form it replaced, kept here as a reference: step t scores N trial
  lists of length t + 1, N (t + 1) positions;
* ``full_length_trials``: the form before that: one scanned step that scores N trial lists of
  the full length L at every t (the positions after t are filled with the candidate, which the
  causal model's logit at t does not see), N L positions.

Each record gives the median milliseconds per call over ``--repeats`` windows of ``--calls``
calls (after one untimed call that compiles the form and returns its lists), the speedups of the
library's form over both references and whether all three return the same lists. With
``--train_step`` the GoalRank train step of the config is timed too, with mixed groups (whose
auxiliary lists include this greedy list) and with on-policy groups, so that the greedy list's
share of a mixed step is visible.
"""

import dataclasses
import json
import platform
import statistics
import time

import bench_common
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from goalrank_jax import configs, policies, sampling, sharding
from goalrank_jax.models import make_reward_model

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/goalrank.py:evaluator=list_aware", "Experiment config (list-aware)."
)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["32", "256"], "Requests per call.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed windows (the median is reported).")
_CALLS = flags.DEFINE_integer("calls", 5, "Calls per timed window.")
_TRAIN_STEP = flags.DEFINE_bool("train_step", True, "Also time mixed and on-policy train steps.")


def full_length_trials(evaluator: policies.Evaluator, params, batch, list_len: int):
    """The reference form: a scan over t whose trials are N lists of the full length L."""
    mask = batch["cand_mask"]
    batch_size, num_candidates = mask.shape
    candidates = jnp.arange(num_candidates, dtype=jnp.int32)

    def step(carry, t):
        prefix, chosen = carry
        trial = jnp.where(jnp.arange(list_len) < t, prefix[:, None, :], candidates[None, :, None])
        logits = evaluator.module.apply(params, batch, trial)[..., t]
        item = jnp.argmax(sampling.mask_logits(logits, mask, chosen), -1).astype(jnp.int32)
        return (prefix.at[:, t].set(item), chosen + jax.nn.one_hot(item, num_candidates)), None

    init = (jnp.zeros((batch_size, list_len), jnp.int32), jnp.zeros((batch_size, num_candidates)))
    (lists, _), _ = jax.lax.scan(step, init, jnp.arange(list_len))
    return lists


def prefix_trials(evaluator: policies.Evaluator, params, batch, list_len: int):
    """A reference form: step t scores the N trial lists of length t + 1 (L steps unrolled)."""
    mask = batch["cand_mask"]
    batch_size, num_candidates = mask.shape
    candidates = policies.candidate_lists(mask)  # [B, N, 1]: the last position of each trial
    prefix = jnp.zeros((batch_size, 0), jnp.int32)
    chosen = jnp.zeros((batch_size, num_candidates))
    for t in range(list_len):
        above = jnp.broadcast_to(prefix[:, None, :], (batch_size, num_candidates, t))
        logits = evaluator.module.apply(params, batch, jnp.concatenate([above, candidates], -1))
        item = jnp.argmax(sampling.mask_logits(logits[..., t], mask, chosen), -1)
        prefix = jnp.concatenate([prefix, item[:, None].astype(jnp.int32)], axis=-1)
        chosen = chosen + jax.nn.one_hot(item, num_candidates)
    return prefix


def median_ms(fn, *args) -> float:
    """Median milliseconds per call of an already compiled ``fn``."""
    windows = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        for _ in range(_CALLS.value):
            out = fn(*args)
        jax.block_until_ready(out)
        windows.append(1000 * (time.perf_counter() - start) / _CALLS.value)
    return statistics.median(windows)


def perturbed(params, key):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )


def main(_):
    config = configs.from_config_dict(_CONFIG.value, jax.device_count())
    if config.reward_model.kind != "list_aware":
        raise ValueError(
            f"reward_model.kind={config.reward_model.kind!r}: this benchmark times the list-aware "
            "evaluator's greedy list (the pointwise one is a top-L sort)"
        )
    data = config.data
    module = make_reward_model(
        "list_aware",
        config.reward_model.model,
        bench_common.NUM_USERS,
        bench_common.NUM_ITEMS,
        data.list_len,
    )
    evaluator = policies.Evaluator(module, "list_aware")
    forms = {
        "appended": jax.jit(lambda p, b: evaluator.greedy(p, b, data.list_len)),
        "prefix_trials": jax.jit(lambda p, b: prefix_trials(evaluator, p, b, data.list_len)),
        "full_length_trials": jax.jit(
            lambda p, b: full_length_trials(evaluator, p, b, data.list_len)
        ),
    }
    common = {"backend": jax.default_backend(), "machine": platform.machine()}
    common.update(num_candidates=data.num_candidates, list_len=data.list_len)
    for batch_size in map(int, _BATCH_SIZES.value):
        batch = bench_common.random_batch(
            batch_size, data.num_candidates, data.list_len, data.history_len
        )
        params = evaluator.init(jax.random.key(0), batch, data.list_len)
        params = perturbed(params, jax.random.key(1))
        lists = {name: np.asarray(fn(params, batch)) for name, fn in forms.items()}
        timings = {name: median_ms(fn, params, batch) for name, fn in forms.items()}
        record = {"benchmark": "list_aware_greedy", "batch_size": batch_size, **common}
        record.update({f"{name}_ms": round(ms, 3) for name, ms in timings.items()})
        for reference in ("prefix_trials", "full_length_trials"):
            speedup = timings[reference] / timings["appended"]
            record[f"speedup_over_{reference}"] = round(speedup, 3)
        record["same_lists"] = all(bool((lists["appended"] == lists[name]).all()) for name in lists)
        print(json.dumps(record), flush=True)
    if not _TRAIN_STEP.value:
        return
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        for construction in ("mixed", "on_policy"):
            gro = dataclasses.replace(config.gro, group_construction=construction)
            step_config = bench_common.resize(
                dataclasses.replace(config, gro=gro), size="default", variant=None, batch_size=0
            )
            bench = bench_common.build(step_config, mesh)
            bench.run(1)
            step_s, _ = bench.median_step_s(_REPEATS.value, _CALLS.value)
            record = {"benchmark": "list_aware_train_step", "group_construction": construction}
            record.update(batch_size=step_config.train.batch_size, group_size=gro.group_size)
            record.update(generator=step_config.generator.variant, **common)
            record["step_ms"] = round(1000 * step_s, 3)
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    app.run(main)

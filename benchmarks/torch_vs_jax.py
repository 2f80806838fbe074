"""GoalRank train step: JAX (one compiled step) vs a PyTorch eager mirror; prints JSON per size.

    pip install -r requirements-bench.txt
    python benchmarks/torch_vs_jax.py --config=experiments/goalrank.py --size=both

Sizes (``--size``): ``default`` = the config's B, N, L, K and generator / reward-model sizes;
``paper`` = the paper's generator (D=128, 2 layers, 2 heads, FF 128) at N=50, L=6, K=20, with the
reward model on the same backbone. ``both`` runs default, then paper. B is ``--batch_size``: 0
means the config's train batch size (32 in experiments/goalrank.py) for both sizes; the paper's
own batch is 512.

The JAX step is the one of benchmarks/train_step_throughput.py (``bench_common.resize`` and
``bench_common.build``: random requests, the step compiled with donated state on a mesh of all
devices), always the paper-faithful "prefix" generator in float32; the torch step
(benchmarks/torch_goalrank.py) starts from the same parameters on the same requests. Both get the
same CPU cores: ``--threads`` (0 = every core this process may run on) restricts the process
affinity before XLA starts its thread pool and sets ``torch.set_num_threads``. After compilation
(JAX) and warm-up steps (both), ``--repeats`` windows of ``--steps`` steps are timed, alternating
JAX and torch windows so that a change of machine load hits both; the medians give requests per
second. Torch's OpenMP threads stall badly when another process occupies one of the cores (every
parallel region waits for a descheduled thread), so time on an otherwise idle machine; the
1-minute load average before and after the timing is reported.

Agreement check (per size, exits nonzero if it fails): with the JAX parameters copied into torch,
lists sampled by JAX passed to torch and dropout off, both compute the list log-probs, the rewards,
the first-step logits, the loss ``w_R * L_GRO + w_G * L_sup`` and its gradients. The loss must
agree to a relative ``--loss_rtol``; the other maxima of absolute differences are reported.
"""

import functools
import json
import os
import platform
import statistics
import sys
import time

import bench_common
import jax
import numpy as np
import torch
import torch_goalrank as tg
from absl import app, flags
from ml_collections import config_flags

from goalrank_jax import configs, losses, policies, sharding
from goalrank_jax.models import make_generator, make_reward_model

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/goalrank.py", "Experiment config.")
_SIZE = flags.DEFINE_enum("size", "both", ["paper", "default", "both"], "Model / group sizes.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Requests per step; 0 = the config's.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed windows per framework.")
_STEPS = flags.DEFINE_integer("steps", 3, "Steps per timed window.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed torch steps before timing.")
_THREADS = flags.DEFINE_integer("threads", 0, "CPU cores for both frameworks; 0 = all.")
_LOSS_RTOL = flags.DEFINE_float("loss_rtol", 1e-4, "Relative loss tolerance of the agreement.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of torch's sampling and dropout.")
NUM_USERS, NUM_ITEMS = bench_common.NUM_USERS, bench_common.NUM_ITEMS


def use_cores(threads: int) -> int:
    """Restricts this process to its first ``threads`` allowed cores (0 = all); returns the count.

    Must run before the XLA CPU backend starts: its thread pool is sized by the allowed cores.
    """
    allowed = sorted(os.sched_getaffinity(0))
    if 0 < threads < len(allowed):
        os.sched_setaffinity(0, allowed[:threads])
    count = len(os.sched_getaffinity(0))
    torch.set_num_threads(count)
    return count


def experiment_config(cfg, size: str, batch_size: int) -> configs.ExperimentConfig:
    """The paper-faithful float32 generator step at ``size`` (see bench_common.resize)."""
    config = bench_common.resize(
        configs.from_config_dict(cfg, jax.device_count()),
        size=size,
        variant="prefix",
        dtype="float32",
        batch_size=batch_size,
    )
    if config.gro.group_construction != "on_policy" or config.reward_model.kind != "pointwise":
        raise ValueError("The torch mirror covers on-policy groups and the pointwise reward model.")
    return config


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def agreement(config, policy, evaluator, params, reward_params, batch, placed, torch_models, key):
    """Loss, log-probs, rewards, first-step logits and gradients of both, dropout off."""
    gro = config.gro
    lists = jax.jit(functools.partial(policy.sample, group_size=gro.group_size))(
        params, placed, key
    )

    def jax_loss(params, batch, lists):
        log_probs, first_logits = policy.log_prob_and_first_logits(params, batch, lists)
        rewards = evaluator.list_rewards(reward_params, batch, lists)
        targets = losses.group_relative_targets(rewards, gro.tau_ref)
        total = gro.reward_weight * losses.gro_loss(log_probs, targets, loss_form=gro.loss_form)
        total += gro.supervised_weight * losses.supervised_bce(
            first_logits, batch["cand_labels"], batch["cand_mask"]
        )
        return total, (log_probs, rewards, first_logits)

    grad_fn = jax.jit(jax.value_and_grad(jax_loss, has_aux=True))
    (loss, (log_probs, rewards, first)), grads = jax.device_get(grad_fn(params, placed, lists))

    generator, reward_model = torch_models
    tg.load_flax_params(generator, jax.device_get(params))
    tg.load_flax_params(reward_model, jax.device_get(reward_params))
    generator.eval()
    generator.zero_grad(set_to_none=True)
    torch_lists = torch.from_numpy(np.asarray(lists, np.int64))
    torch_loss, parts = tg.goalrank_loss(
        generator, reward_model, tg.batch_to_torch(batch), torch_lists, gro
    )
    torch_loss.backward()
    jax_grads = tg.flax_to_torch_state(grads)
    grad_diff = max(
        max_abs_diff(p.grad, jax_grads[name]) for name, p in generator.named_parameters()
    )
    torch_loss = torch_loss.item()
    loss_rel = abs(float(loss) - torch_loss) / max(abs(float(loss)), 1e-12)
    return {
        "loss_jax": float(loss),
        "loss_torch": torch_loss,
        "loss_rel_diff": loss_rel,
        "loss_rtol": _LOSS_RTOL.value,
        "log_prob_max_abs_diff": max_abs_diff(parts["log_probs"].detach(), log_probs),
        "reward_max_abs_diff": max_abs_diff(parts["rewards"], rewards),
        "first_logits_max_abs_diff": max_abs_diff(parts["first_logits"].detach(), first),
        "grad_max_abs_diff": grad_diff,
        "grad_max_abs": max(float(g.abs().max()) for g in jax_grads.values()),
        "passed": loss_rel <= _LOSS_RTOL.value,
    }


def benchmark(config: configs.ExperimentConfig, size: str, cores: int) -> dict:
    data, gro = config.data, config.gro
    batch_size = config.train.batch_size
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        bench = bench_common.build(config, mesh)
        params, reward_params = jax.device_get((bench.state.params, bench.state.reward_params))
        batch = jax.device_get(bench.batch)
        model_sizes = [
            tg.Sizes.from_model_config(model, NUM_USERS, NUM_ITEMS, data.num_candidates)
            for model in (config.generator, config.reward_model.model)
        ]
        torch.manual_seed(_SEED.value)
        torch_models = (tg.PrefixGenerator(model_sizes[0]), tg.PointwiseRewardModel(model_sizes[1]))
        tg.load_flax_params(torch_models[0], params)
        tg.load_flax_params(torch_models[1], reward_params)
        torch_step = tg.GoalRankStep(
            *torch_models,
            list_len=data.list_len,
            gro=gro,
            optim=config.train.optim,
            rng=torch.Generator().manual_seed(_SEED.value),
        )
        torch_batch = tg.batch_to_torch(batch)

        jax_first_s = bench.run(1)
        start = time.perf_counter()
        for _ in range(_WARMUP.value):
            torch_step(torch_batch)
        torch_warmup_s = time.perf_counter() - start

        load_before = os.getloadavg()[0]
        jax_times, torch_times = [], []
        for _ in range(_REPEATS.value):
            jax_times.append(bench.run(_STEPS.value))
            start = time.perf_counter()
            for _ in range(_STEPS.value):
                torch_step(torch_batch)
            torch_times.append((time.perf_counter() - start) / _STEPS.value)
        load_after = os.getloadavg()[0]

        generator = make_generator(config.generator, NUM_USERS, NUM_ITEMS)
        reward = make_reward_model(
            config.reward_model.kind, config.reward_model.model, NUM_USERS, NUM_ITEMS, data.list_len
        )
        check = agreement(
            config,
            policies.GeneratorPolicy(generator, data.list_len),
            policies.Evaluator(reward, config.reward_model.kind),
            bench.state.params,
            bench.state.reward_params,
            batch,
            bench.batch,
            torch_models,
            jax.random.fold_in(bench.key, 1),
        )
    jax_s, torch_s = statistics.median(jax_times), statistics.median(torch_times)
    model = config.generator
    return {
        "benchmark": "goalrank_torch_vs_jax",
        "size": size,
        "machine": platform.machine(),
        "jax_backend": jax.default_backend(),
        "jax_devices": jax.device_count(),
        "jax_version": jax.__version__,
        "torch_version": torch.__version__,
        "xla_cpu_cores": cores,
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        "batch_size": batch_size,
        "num_candidates": data.num_candidates,
        "list_len": data.list_len,
        "group_size": gro.group_size,
        "embed_dim": model.embed_dim,
        "num_layers": model.num_layers,
        "num_heads": model.num_heads,
        "ff_dim": model.ff_dim,
        "dropout": model.dropout,
        "reward_embed_dim": config.reward_model.model.embed_dim,
        "reward_ff_dim": config.reward_model.model.ff_dim,
        "generator_params": bench.generator_params,
        "torch_generator_params": sum(p.numel() for p in torch_models[0].parameters()),
        "prng_impl": config.prng_impl,
        "jax_compile_s": round(bench.compile_s, 3),
        "jax_first_step_s": round(jax_first_s, 3),
        "torch_warmup_steps_s": round(torch_warmup_s, 3),
        "jax_step_s_median": round(jax_s, 4),
        "torch_step_s_median": round(torch_s, 4),
        "jax_requests_per_second": round(batch_size / jax_s, 2),
        "torch_requests_per_second": round(batch_size / torch_s, 2),
        "jax_over_torch": round(torch_s / jax_s, 3),
        "jax_step_s_all": [round(t, 4) for t in jax_times],
        "torch_step_s_all": [round(t, 4) for t in torch_times],
        "agreement": check,
    }


def main(_):
    cores = use_cores(_THREADS.value)
    sizes = ["default", "paper"] if _SIZE.value == "both" else [_SIZE.value]
    passed = True
    for size in sizes:
        result = benchmark(experiment_config(_CONFIG.value, size, _BATCH_SIZE.value), size, cores)
        print(json.dumps(result), flush=True)
        passed = passed and result["agreement"]["passed"]
    if not passed:
        sys.exit("Agreement check failed: the torch and JAX losses differ beyond --loss_rtol.")


if __name__ == "__main__":
    app.run(main)

"""The PyTorch benchmark mirror (benchmarks/torch_goalrank.py) computes what the JAX code does.

Expected values come from the JAX implementation, an independent implementation of the same
model: generator logits at non-empty prefixes, reward-model scores, list log-probabilities, list
rewards, the GoalRank loss and its gradients, on tiny sizes (D=16, N=8, L=3, K=4, B=3) with
padded candidates and history, dropout off. The lists are fixed random ones (the benchmark's own
agreement check uses lists sampled by JAX); torch's sampler is checked for validity only.
"""

import importlib.util
import os
import sys

import jax
import numpy as np
import pytest
from step_fixtures import NUM_ITEMS, NUM_USERS, random_batch

from goalrank_jax import configs, losses, policies
from goalrank_jax.models import make_generator, make_reward_model

torch = pytest.importorskip("torch")

MIRROR = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "torch_goalrank.py")
N, L, K, B = 8, 3, 4, 3
MODEL = configs.ModelConfig(embed_dim=16, num_layers=2, num_heads=2, ff_dim=24, dropout=0.1)
GRO = configs.GROConfig(group_size=K)
TOL = dict(rtol=1e-5, atol=1e-5)


def _mirror():
    spec = importlib.util.spec_from_file_location("torch_goalrank", MIRROR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


tg = _mirror()


def _random_params(module, batch, seed):
    """Random values for every leaf (init would leave item biases at zero and LayerNorm at the
    identity, hiding a swapped or mistransposed parameter); shapes from eval_shape, no compile."""
    rng = np.random.default_rng(seed)

    def leaf(path, spec):
        noise = rng.standard_normal(spec.shape).astype(np.float32)
        name = path[-1].key
        if name == "kernel":
            return noise / np.sqrt(
                np.prod(spec.shape[:-1]) if path[-2].key == "out" else spec.shape[0]
            )
        return 1.0 + 0.2 * noise if name == "scale" else 0.5 * noise

    abstract = jax.eval_shape(module.init, jax.random.key(0), batch)
    return jax.tree_util.tree_map_with_path(leaf, abstract)


def _random_lists(cand_mask, seed=3):
    """[B, K, L] lists of distinct valid candidates, uniformly at random."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [[rng.permutation(np.flatnonzero(valid))[:L] for _ in range(K)] for valid in cand_mask]
    ).astype(np.int32)


def _chosen_prefixes():
    """[B, 2, N]: candidates {0, 3} chosen, then candidate {5} chosen."""
    chosen = np.zeros((B, 2, N), np.float32)
    chosen[:, 0, [0, 3]] = 1.0
    chosen[:, 1, 5] = 1.0
    return chosen


@pytest.fixture(scope="module")
def expected():
    """Everything the torch mirror is checked against, from one jitted JAX computation."""
    batch = random_batch(batch_size=B, num_candidates=N, list_len=L)
    generator = make_generator(MODEL, NUM_USERS, NUM_ITEMS)
    reward = make_reward_model("pointwise", MODEL, NUM_USERS, NUM_ITEMS)
    policy = policies.GeneratorPolicy(generator, L)
    evaluator = policies.Evaluator(reward, "pointwise")
    params = _random_params(generator, batch, 1)
    reward_params = _random_params(reward, batch, 2)

    def loss_fn(params, lists):
        log_probs, first_logits = policy.log_prob_and_first_logits(params, batch, lists)
        rewards = evaluator.list_rewards(reward_params, batch, lists)
        targets = losses.group_relative_targets(rewards, GRO.tau_ref)
        gro = losses.gro_loss(log_probs, targets, loss_form=GRO.loss_form)
        sup = losses.supervised_bce(first_logits, batch["cand_labels"], batch["cand_mask"])
        return GRO.reward_weight * gro + GRO.supervised_weight * sup, (log_probs, rewards)

    @jax.jit
    def reference(params, lists):
        context = generator.apply(params, batch, method="encode")
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (log_probs, rewards)), grads = grad_fn(params, lists)
        return {
            "step_logits": generator.apply(
                params, context, _chosen_prefixes(), method="step_logits"
            ),
            "scores": evaluator.candidate_scores(reward_params, batch),
            "lists": lists,
            "log_probs": log_probs,
            "rewards": rewards,
            "loss": loss,
            "grads": grads,
        }

    return {
        "batch": batch,
        "params": params,
        "reward_params": reward_params,
        **jax.device_get(reference(params, _random_lists(batch["cand_mask"]))),
    }


@pytest.fixture(scope="module")
def mirror(expected):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; avoids OpenMP stalls when the cores are busy
    sizes = tg.Sizes.from_model_config(MODEL, NUM_USERS, NUM_ITEMS, N)
    generator, reward = tg.PrefixGenerator(sizes), tg.PointwiseRewardModel(sizes)
    tg.load_flax_params(generator, expected["params"])
    tg.load_flax_params(reward, expected["reward_params"])
    yield generator.eval(), reward.eval(), tg.batch_to_torch(expected["batch"])
    torch.set_num_threads(threads)


def _numpy(tensor):
    return tensor.detach().numpy()


def test_step_logits_at_non_empty_prefix(expected, mirror):
    generator, _, batch = mirror
    with torch.no_grad():
        context = generator.encode(batch)
        logits = generator.step_logits(context, torch.from_numpy(_chosen_prefixes()))
        first = generator(batch)
    np.testing.assert_allclose(_numpy(logits), expected["step_logits"], **TOL)
    assert np.abs(_numpy(logits)[:, 0] - _numpy(first)).max() > 1e-3  # the prefix matters


def test_reward_model_scores(expected, mirror):
    _, reward, batch = mirror
    with torch.no_grad():
        np.testing.assert_allclose(_numpy(reward(batch)), expected["scores"], **TOL)


def test_log_probs_rewards_loss_and_gradients(expected, mirror):
    generator, reward, batch = mirror
    generator.zero_grad(set_to_none=True)
    lists = torch.from_numpy(np.asarray(expected["lists"], np.int64))
    loss, parts = tg.goalrank_loss(generator, reward, batch, lists, GRO)
    loss.backward()
    np.testing.assert_allclose(_numpy(parts["log_probs"]), expected["log_probs"], **TOL)
    np.testing.assert_allclose(_numpy(parts["rewards"]), expected["rewards"], **TOL)
    np.testing.assert_allclose(loss.item(), expected["loss"], **TOL)
    grads = tg.flax_to_torch_state(expected["grads"])
    for name, param in generator.named_parameters():
        np.testing.assert_allclose(_numpy(param.grad), grads[name], err_msg=name, **TOL)


def test_torch_sampling_and_step(expected, mirror):
    _, reward, batch = mirror
    generator = tg.PrefixGenerator(tg.Sizes.from_model_config(MODEL, NUM_USERS, NUM_ITEMS, N))
    tg.load_flax_params(generator, expected["params"])
    lists = tg.sample_group(generator, batch, L, K, rng=torch.Generator().manual_seed(0))
    assert lists.shape == (B, K, L)
    for row, valid in zip(lists.numpy(), expected["batch"]["cand_mask"], strict=True):
        for sampled in row:
            assert len(set(sampled)) == L and valid[sampled].all()
    before = [p.detach().clone() for p in generator.parameters()]
    step = tg.GoalRankStep(generator, reward, L, GRO, configs.OptimConfig())
    assert np.isfinite(step(batch)["loss"].item())
    assert any(not torch.equal(b, p) for b, p in zip(before, generator.parameters(), strict=True))

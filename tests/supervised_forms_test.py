"""The forms of the supervised term L_sup (GROConfig.supervised_form).

The losses are checked against plain-numpy loops over requests and steps; the train step is
checked against a recomputation of its parts for every form, generator variant and the
Plackett-Luce policy.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goalrank_jax import configs, losses, policies
from goalrank_jax import train_step as ts
from goalrank_jax.models import make_generator
from tests import step_fixtures

LIST_LEN = 3
NEW_FORMS = ("every_step_bce", "logged_nll")


def _np_bce(z, y):
    return np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))


def _np_logsumexp(x):
    top = x.max()
    return top + np.log(np.exp(x - top).sum())


def np_every_step_bce(logits, lists, labels, mask, weights=None):
    """Loop reference: mean over steps of the BCE averaged over the still-available candidates."""
    batch, length, _ = logits.shape
    per_request = np.zeros(batch)
    for b in range(batch):
        steps = []
        for t in range(length):
            shown = set(lists[b, :t].tolist())
            avail = [n for n in range(logits.shape[-1]) if mask[b, n] and n not in shown]
            values = [_np_bce(logits[b, t, n], labels[b, n]) for n in avail]
            steps.append(np.mean(values) if values else 0.0)
        per_request[b] = np.mean(steps)
    weights = np.ones(batch) if weights is None else np.asarray(weights, np.float64)
    return (per_request * weights).sum() / max(weights.sum(), 1.0)


def np_every_step_softmax(logits, lists, labels, mask, weights=None):
    """Loop reference: per step, -mean log-softmax (over the available candidates) of the
    positives still available; per request the mean over steps that have one; requests
    without a positive left out of the mean."""
    batch, length, num = logits.shape
    per_request, has = np.zeros(batch), np.zeros(batch)
    for b in range(batch):
        steps = []
        for t in range(length):
            shown = set(lists[b, :t].tolist())
            avail = [n for n in range(num) if mask[b, n] and n not in shown]
            positives = [n for n in avail if labels[b, n] > 0]
            if not positives:
                continue
            norm = _np_logsumexp(np.array([logits[b, t, n] for n in avail]))
            steps.append(-np.mean([logits[b, t, n] - norm for n in positives]))
        if steps:
            per_request[b], has[b] = np.mean(steps), 1.0
    weights = has if weights is None else has * np.asarray(weights, np.float64)
    return (per_request * weights).sum() / max(weights.sum(), 1.0)


def np_positives_first(logged, labels, mask):
    out = []
    for b in range(logged.shape[0]):
        items = logged[b].tolist()
        pos = [i for i in items if mask[b, i] and labels[b, i] > 0]
        out.append(pos + [i for i in items if i not in pos])
    return np.array(out)


def np_logged_nll(logits, logged, labels, mask, weights=None):
    """Loop reference: -log-likelihood of the logged positives in shown order, teacher-forced on
    positives first, per positive; requests without positives left out of the mean."""
    batch = logits.shape[0]
    weights = np.ones(batch) if weights is None else np.asarray(weights, np.float64)
    total, norm = 0.0, 0.0
    for b in range(batch):
        pos = [i for i in logged[b].tolist() if mask[b, i] and labels[b, i] > 0]
        if not pos:
            continue
        nll = 0.0
        for t, item in enumerate(pos):
            avail = [n for n in range(logits.shape[-1]) if mask[b, n] and n not in pos[:t]]
            nll -= logits[b, t, item] - _np_logsumexp(logits[b, t, avail])
        total += weights[b] * nll / len(pos)
        norm += weights[b]
    return total / max(norm, 1.0)


def _random_problem(seed=0, batch=6, length=4, num_candidates=9):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, num_candidates), bool)
    mask[0, -3:] = False  # padded candidates
    mask[2, :2] = False
    lists = np.stack(
        [rng.permutation(np.flatnonzero(mask[b]))[:length] for b in range(batch)]
    ).astype(np.int32)
    labels = (rng.random((batch, num_candidates)) < 0.4).astype(np.float32)
    labels[1] = 0.0  # a request with no positive at all
    labels[3, lists[3]] = 0.0  # positives only outside the list
    labels[4, lists[4, 0]] = 0.0
    labels[4, lists[4, 1:]] = 1.0  # first logged item negative, the others positive
    labels[~mask] = 1.0  # labels of padded candidates must never count
    logits = (3.0 * rng.normal(size=(batch, length, num_candidates))).astype(np.float32)
    return logits, lists, labels, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_every_step_bce_matches_numpy_loop(seed, weighted):
    logits, lists, labels, mask = _random_problem(seed)
    weights = np.array([1, 1, 0, 1, 1, 1], np.float32) if weighted else None
    got = losses.every_step_bce(logits, lists, labels, mask, weights)
    np.testing.assert_allclose(
        got, np_every_step_bce(logits, lists, labels, mask, weights), rtol=1e-5
    )


def test_every_step_bce_step_zero_is_first_step_bce():
    logits, lists, labels, mask = _random_problem(3, length=1)
    np.testing.assert_allclose(
        losses.every_step_bce(logits, lists, labels, mask),
        losses.supervised_bce(logits[:, 0], labels, mask),
        rtol=1e-6,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_positives_first_matches_numpy(seed):
    _, lists, labels, mask = _random_problem(seed)
    np.testing.assert_array_equal(
        losses.positives_first(lists, labels, mask), np_positives_first(lists, labels, mask)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_logged_nll_matches_numpy_loop(seed, weighted):
    logits, lists, labels, mask = _random_problem(seed)
    weights = np.array([1, 1, 1, 0, 1, 1], np.float32) if weighted else None
    teacher = losses.positives_first(lists, labels, mask)
    got = losses.logged_nll(logits, teacher, labels, mask, weights)
    np.testing.assert_allclose(got, np_logged_nll(logits, lists, labels, mask, weights), rtol=1e-5)


def test_logged_nll_closed_form():
    """One request, N=3, L=2, logged [2, 0] with only item 0 positive: teacher [0, 2] and the
    loss is -log softmax(z_0)[0] over all three candidates."""
    logits = np.array([[[1.0, 2.0, 0.5], [9.0, 9.0, 9.0]]], np.float32)
    lists = np.array([[2, 0]], np.int32)
    labels = np.array([[1.0, 0.0, 0.0]], np.float32)
    mask = np.ones((1, 3), bool)
    teacher = losses.positives_first(lists, labels, mask)
    np.testing.assert_array_equal(teacher, [[0, 2]])
    expected = -(1.0 - np.log(np.exp([1.0, 2.0, 0.5]).sum()))
    np.testing.assert_allclose(losses.logged_nll(logits, teacher, labels, mask), expected, 1e-6)


@pytest.mark.parametrize("form", NEW_FORMS)
def test_degenerate_inputs_give_finite_values_and_gradients(form):
    logits, lists, labels, mask = _random_problem(4)
    logits = np.where(np.arange(logits.shape[-1]) % 2, 1e4, -1e4).astype(np.float32)
    logits = np.broadcast_to(logits, lists.shape + (mask.shape[-1],))
    loss_fn = getattr(losses, form)
    teacher = losses.positives_first(lists, labels, mask) if form == "logged_nll" else lists
    for case_labels in (labels, np.zeros_like(labels)):  # the second: no request has a positive
        value, grad = jax.value_and_grad(loss_fn)(jnp.asarray(logits), teacher, case_labels, mask)
        assert np.isfinite(float(value))
        assert np.all(np.isfinite(np.asarray(grad)))
    if form == "logged_nll":
        value, grad = jax.value_and_grad(loss_fn)(
            jnp.asarray(logits), teacher, np.zeros_like(labels), mask
        )
        assert float(value) == 0.0
        assert float(jnp.abs(grad).max()) == 0.0


def test_padded_candidates_do_not_change_the_losses():
    logits, lists, labels, mask = _random_problem(5)
    shifted = np.where(mask[:, None, :], logits, 50.0).astype(np.float32)
    flipped = np.where(mask, labels, 1.0 - labels).astype(np.float32)
    teacher = losses.positives_first(lists, labels, mask)
    for fn, tl in ((losses.every_step_bce, lists), (losses.logged_nll, teacher)):
        np.testing.assert_allclose(
            fn(logits, tl, labels, mask), fn(shifted, tl, flipped, mask), rtol=1e-6
        )


def test_unknown_supervised_form_is_rejected():
    for form in configs.SUPERVISED_FORMS:
        configs.GROConfig(supervised_form=form).validate()
    assert configs.GROConfig().supervised_form == "first_step_bce"
    with pytest.raises(ValueError, match=r"GROConfig\.supervised_form"):
        configs.GROConfig(supervised_form="all_steps").validate()


def _generator(variant, dropout):
    model = configs.ModelConfig(
        embed_dim=8, num_layers=1, num_heads=2, ff_dim=8, dropout=dropout, variant=variant
    )
    return make_generator(model, step_fixtures.NUM_USERS, step_fixtures.NUM_ITEMS)


def _setup(variant="prefix", plackett_luce=False, form="first_step_bce", dropout=0.0):
    generator = _generator(variant, dropout)
    _, reward_module = step_fixtures.tiny_models(dropout)
    batch = step_fixtures.random_batch(list_len=LIST_LEN)
    key = jax.random.key(0)
    gen_params = generator.init(jax.random.fold_in(key, 1), batch)
    rm_params = reward_module.init(jax.random.fold_in(key, 2), batch)
    optimizer = ts.make_optimizer(configs.OptimConfig(learning_rate=1e-2))
    construction = "plackett_luce" if plackett_luce else "on_policy"
    gro = configs.GROConfig(group_size=4, group_construction=construction, supervised_form=form)
    gro.validate()
    policy = policies.GeneratorPolicy(generator, LIST_LEN, plackett_luce=plackett_luce)
    evaluator = policies.Evaluator(reward_module, "pointwise")
    step = functools.partial(
        ts.goalrank_train_step, policy=policy, evaluator=evaluator, optimizer=optimizer, gro=gro
    )
    return ts.create_state(gen_params, optimizer, rm_params), batch, jax.jit(step), policy


def _np_logged(batch):
    """[B, L] the logged list in shown order, from cand_logged_pos (-1 = not logged)."""
    pos = batch["cand_logged_pos"]
    return np.argsort(np.where(pos >= 0, pos, pos.shape[-1]), axis=1)[:, :LIST_LEN]


def _np_step_logits(policy, params, batch, teacher):
    """[B, L, N] the step logits along ``teacher`` [B, L] from a pass of its own."""
    if policy.plackett_luce:
        first = np.asarray(policy.first_step_logits(params, batch))
        return np.repeat(first[:, None, :], LIST_LEN, axis=1)
    return np.asarray(
        policy.module.apply(params, batch, jnp.asarray(teacher)[:, None], method="list_logits")
    )[:, 0]


def _np_expected_sup(form, policy, params, batch):
    """The form's loss on the logged list's teacher-forced logits from a pass of its own."""
    logged = _np_logged(batch)
    labels, mask = batch["cand_labels"], batch["cand_mask"]
    teacher = np_positives_first(logged, labels, mask) if form == "logged_nll" else logged
    step_logits = _np_step_logits(policy, params, batch, teacher)
    if form == "every_step_bce":
        return np_every_step_bce(step_logits, logged, labels, mask)
    return np_logged_nll(step_logits, logged, labels, mask)


POLICIES = [("prefix", False), ("fast", False), ("prefix", True)]


def _random_group(batch, group_size=4, seed=0):
    """[B, K, L] random lists of distinct valid candidates."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            [rng.permutation(np.flatnonzero(row))[:LIST_LEN] for _ in range(group_size)]
            for row in batch["cand_mask"]
        ]
    ).astype(np.int32)


@pytest.mark.parametrize("variant,plackett_luce", POLICIES)
@pytest.mark.parametrize("sampled_from,auxiliary", [(0, ()), (2, ()), (2, (1,))])
def test_group_step_bce_is_every_step_bce_along_each_sampled_list(
    variant, plackett_luce, sampled_from, auxiliary
):
    """group_step_bce from the group's pass equals the mean over the sampled lists (those from
    ``sampled_from`` on; a mixed group's auxiliary lists come first) of the numpy every-step
    BCE of each list's separately computed logits."""
    _, batch, _, policy = _setup(variant, plackett_luce, "group_step_bce")
    params = policy.module.init(jax.random.key(1), batch)
    lists = _random_group(batch, seed=3)
    labels, mask = batch["cand_labels"], batch["cand_mask"]
    _, sup, _ = jax.jit(
        lambda p: ts.policy_terms(
            "group_step_bce",
            policy,
            p,
            batch,
            lists,
            sampled_from=sampled_from,
            auxiliary_supervised=auxiliary,
        )
    )(params)
    expected = np.mean(
        [
            np_every_step_bce(
                _np_step_logits(policy, params, batch, lists[:, k]), lists[:, k], labels, mask
            )
            for k in [*auxiliary, *range(sampled_from, lists.shape[1])]
        ]
    )
    np.testing.assert_allclose(sup, expected, rtol=1e-4)
    # It is not the loss along the logged list.
    assert abs(float(sup) - _np_expected_sup("every_step_bce", policy, params, batch)) > 1e-4


def test_every_step_softmax_matches_numpy_loop():
    rng = np.random.default_rng(4)
    batch, length, num = 5, 3, 7
    logits = rng.normal(size=(batch, length, num)).astype(np.float32)
    mask = rng.random((batch, num)) < 0.85
    mask[:, :length] = True
    labels = (rng.random((batch, num)) < 0.3).astype(np.float32)
    labels[0] = 0.0  # a request without a positive carries no loss
    labels[1] = 0.0
    labels[1, 2] = 1.0  # the only positive, chosen at step 0 below: no later step has one
    lists = np.stack([rng.permutation(np.flatnonzero(m))[:length] for m in mask]).astype(np.int32)
    lists[1, 0] = 2
    lists[1, 1:] = [n for n in np.flatnonzero(mask[1]) if n != 2][: length - 1]
    weights = np.array([1.0, 1.0, 0.0, 2.0, 1.0], np.float32)
    for w in (None, weights):
        got = losses.every_step_softmax(logits, lists, labels, mask, w)
        np.testing.assert_allclose(got, np_every_step_softmax(logits, lists, labels, mask, w), 1e-5)


@pytest.mark.parametrize("variant,plackett_luce", POLICIES)
def test_group_step_softmax_is_every_step_softmax_along_each_sampled_list(variant, plackett_luce):
    _, batch, _, policy = _setup(variant, plackett_luce, "group_step_softmax")
    params = policy.module.init(jax.random.key(1), batch)
    lists = _random_group(batch, seed=5)
    labels, mask = batch["cand_labels"], batch["cand_mask"]
    _, sup, _ = jax.jit(
        lambda p: ts.policy_terms("group_step_softmax", policy, p, batch, lists, sampled_from=1)
    )(params)
    expected = np.mean(
        [
            np_every_step_softmax(
                _np_step_logits(policy, params, batch, lists[:, k]), lists[:, k], labels, mask
            )
            for k in range(1, lists.shape[1])
        ]
    )
    np.testing.assert_allclose(sup, expected, rtol=1e-4)


@pytest.mark.parametrize("variant,plackett_luce", POLICIES)
@pytest.mark.parametrize("form", NEW_FORMS)
def test_supervised_loss_matches_recomputation(variant, plackett_luce, form):
    """Dropout off: L_sup from the shared pass equals the numpy loss of the logged list's
    separately computed logits, and the group's log-probabilities are those of the policy's own
    teacher-forced pass (the extra list K+1 does not disturb them)."""
    _, batch, _, policy = _setup(variant, plackett_luce, form)
    params = policy.module.init(jax.random.key(1), batch)
    lists = _random_group(batch)
    log_probs, sup, _ = jax.jit(lambda p: ts.policy_terms(form, policy, p, batch, lists))(params)
    np.testing.assert_allclose(sup, _np_expected_sup(form, policy, params, batch), rtol=1e-4)
    expected_log_probs, _ = policy.log_prob_and_first_logits(params, batch, lists)
    np.testing.assert_allclose(log_probs, expected_log_probs, rtol=1e-5, atol=1e-5)


def test_train_step_wires_the_form():
    """Dropout off, every_step_bce through the whole step: sup_loss and loss recomputed."""
    state, batch, step, policy = _setup(form="every_step_bce")
    _, metrics = step(state, batch, jax.random.key(3))
    expected = _np_expected_sup("every_step_bce", policy, state.params, batch)
    np.testing.assert_allclose(metrics["sup_loss"], expected, rtol=1e-4)
    np.testing.assert_allclose(
        metrics["loss"], 0.01 * metrics["gro_loss"] + metrics["sup_loss"], rtol=1e-5
    )
    first = policy.first_step_logits(state.params, batch)
    first_step = losses.supervised_bce(first, batch["cand_labels"], batch["cand_mask"])
    assert abs(float(metrics["sup_loss"]) - float(first_step)) > 1e-3


def test_first_step_bce_is_unchanged():
    """The default form with dropout on: exactly the pre-existing loss, BCE of the first-step
    logits of the GRO pass (same dropout key) plus w_R * L_GRO."""
    state, batch, step, policy = _setup(dropout=0.1)
    key = jax.random.key(5)
    _, metrics = step(state, batch, key)
    sample_key, dropout_key, _ = jax.random.split(jax.random.fold_in(key, 0), 3)

    @jax.jit
    def old_losses(params):
        lists = policy.sample(params, batch, sample_key, 4)
        log_probs, first = policy.log_prob_and_first_logits(params, batch, lists, dropout_key)
        sup = losses.supervised_bce(first, batch["cand_labels"], batch["cand_mask"])
        return log_probs, sup

    log_probs, sup = old_losses(state.params)
    np.testing.assert_allclose(metrics["sup_loss"], sup, rtol=1e-6)
    np.testing.assert_allclose(metrics["sample_log_prob"], log_probs.mean(), rtol=1e-6)


@pytest.mark.parametrize(
    "variant,plackett_luce,form",
    [
        ("prefix", False, "logged_nll"),
        ("fast", False, "every_step_bce"),
        ("prefix", True, "logged_nll"),
    ],
)
def test_train_step_without_positives_is_finite(variant, plackett_luce, form):
    """Dropout on, no positive label anywhere: finite loss and gradients, the update applied."""
    state, batch, step, _ = _setup(variant, plackett_luce, form, dropout=0.1)
    batch = dict(batch, cand_labels=np.zeros_like(batch["cand_labels"]))
    new_state, metrics = step(state, batch, jax.random.key(1))
    assert float(metrics["skipped"]) == 0.0
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
    if form == "logged_nll":
        assert float(metrics["sup_loss"]) == 0.0
    leaves = jax.tree_util.tree_leaves(new_state.params)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)


def test_label_free_auxiliary_slots_leave_out_the_logged_list():
    gro = configs.GROConfig(
        group_construction="mixed",
        auxiliary=("logged", "retriever", "reward_model_greedy", "random"),
        supervise_auxiliary="label_free",
    )
    assert ts.supervised_auxiliary_slots(gro) == (1, 2, 3)
    gro = configs.GROConfig(auxiliary=("random", "logged"), supervise_auxiliary="label_free")
    assert ts.supervised_auxiliary_slots(gro) == (0,)
    assert ts.supervised_auxiliary_slots(configs.GROConfig()) == ()
    with pytest.raises(ValueError, match="supervise_auxiliary"):
        configs.GROConfig(supervise_auxiliary="all").validate()

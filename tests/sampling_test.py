"""Tests of goalrank_jax.sampling against brute-force enumeration and plain numpy references.

Two policies are used: a hand-written prefix-dependent policy
``logits = base[b] + chosen @ interaction[b]`` and a tiny real :class:`PrefixGenerator`. The
expected probabilities are computed in float64 numpy by looping over the steps of each list
(masked softmax of the policy's logits given the prefix), never by the functions under test.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from goalrank_jax import sampling
from goalrank_jax.models import PrefixGenerator

# Goodness-of-fit tolerances of the empirical-frequency tests: the chi-square p-value must exceed
# P_MIN, and every list's frequency must lie within MAX_SE standard errors of its probability.
# The samples come from fixed keys, so the tests are deterministic; with a correct sampler a
# failure at these levels would happen by chance with probability ~1e-4 per test.
P_MIN = 1e-4
MAX_SE = 5.0
NUM_SAMPLES = 20000


# ----------------------------------------------------------------------------------------------
# Policies and numpy references.
# ----------------------------------------------------------------------------------------------


def make_mask(num_candidates, masked_per_row):
    """[B, N] bool mask; masked_per_row[b] lists the invalid candidates of row b."""
    mask = np.ones((len(masked_per_row), num_candidates), dtype=bool)
    for b, masked in enumerate(masked_per_row):
        mask[b, list(masked)] = False
    return mask


class Policy:
    """A step function for the library and a numpy view of the same logits.

    ``np_logits(chosen)`` maps a numpy [B, N] multi-hot to numpy float64 [B, N] logits.
    """

    def __init__(self, step, np_logits):
        self.step = step
        self.np_logits = np_logits


def interaction_policy(mask, seed, base_shift=None, diag_shift=0.0):
    """logits[b] = base[b] + sum of interaction[b, i] over chosen items i (computed in numpy
    independently of the jnp step)."""
    batch_size, num_candidates = mask.shape
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(batch_size, num_candidates))
    if base_shift is not None:
        base = base + base_shift
    interaction = rng.normal(size=(batch_size, num_candidates, num_candidates))
    interaction = interaction + diag_shift * np.eye(num_candidates)[None]
    base32 = jnp.asarray(base, jnp.float32)
    interaction32 = jnp.asarray(interaction, jnp.float32)

    def step(chosen):
        extra = chosen.ndim - 2
        expanded = base32.reshape(base32.shape[:1] + (1,) * extra + base32.shape[1:])
        bag = jnp.einsum("b...n,bnm->b...m", chosen.astype(jnp.float32), interaction32)
        return expanded + bag

    def np_logits(chosen):
        out = np.empty((batch_size, num_candidates))
        for b in range(batch_size):
            out[b] = base[b].copy()
            for i in range(num_candidates):
                if chosen[b, i]:
                    out[b] += interaction[b, i]
        return out

    return Policy(step, np_logits)


def make_generator_batch(mask, seed, num_users=5, num_items=20, history_len=3):
    rng = np.random.default_rng(seed)
    batch_size, num_candidates = mask.shape
    hist_len = rng.integers(1, history_len + 1, size=batch_size)
    hist_mask = np.arange(history_len)[None, :] < hist_len[:, None]
    hist_items = np.where(hist_mask, rng.integers(0, num_items, (batch_size, history_len)), -1)
    return {
        "user_id": jnp.asarray(rng.integers(0, num_users, batch_size), jnp.int32),
        "history_items": jnp.asarray(hist_items, jnp.int32),
        "history_labels": jnp.asarray(
            rng.integers(0, 2, (batch_size, history_len)) * hist_mask, jnp.int32
        ),
        "history_mask": jnp.asarray(hist_mask),
        "cand_items": jnp.asarray(rng.integers(0, num_items, mask.shape), jnp.int32),
        "cand_mask": jnp.asarray(mask),
    }


GENERATOR = PrefixGenerator(
    num_users=5, num_items=20, embed_dim=8, num_layers=1, num_heads=2, ff_dim=8, dropout=0.0
)


# Module-level jitted helpers are compiled once per shape and shared by all tests (eager Flax
# init/apply compiles every primitive separately and is slow).
generator_init = jax.jit(GENERATOR.init)
generator_encode = jax.jit(lambda params, batch: GENERATOR.apply(params, batch, method="encode"))


@jax.jit
def generator_logits(params, batch, chosen):
    """Step logits of GENERATOR for a [B, N] prefix."""
    ctx = GENERATOR.apply(params, batch, method="encode")
    return GENERATOR.apply(params, ctx, chosen, True, method="step_logits")


def generator_policy(mask, seed):
    """The real PrefixGenerator (tiny, no dropout) on a random batch."""
    batch = make_generator_batch(mask, seed)
    params = generator_init(jax.random.key(seed), batch)
    ctx = generator_encode(params, batch)
    step = lambda chosen: GENERATOR.apply(params, ctx, chosen, True, method="step_logits")

    def np_logits(chosen):
        logits = generator_logits(params, batch, jnp.asarray(chosen, jnp.float32))
        return np.asarray(logits, np.float64)

    return Policy(step, np_logits)


POLICIES = {"interaction": interaction_policy, "generator": generator_policy}


def np_log_softmax_at(logits, allowed, index):
    """log of the masked softmax of logits (float64) at index; -inf if index not allowed."""
    if not allowed[index]:
        return -np.inf
    z = logits[allowed]
    top = z.max()
    return logits[index] - (top + np.log(np.exp(z - top).sum()))


def np_list_log_probs(policy, mask, lists, temperature=1.0):
    """Teacher-forced log-probabilities of lists [B, M, L] by an explicit loop over steps."""
    batch_size, num_lists, list_len = lists.shape
    out = np.zeros((batch_size, num_lists))
    for m in range(num_lists):
        chosen = np.zeros(mask.shape)
        for t in range(list_len):
            logits = policy.np_logits(chosen) / temperature
            for b in range(batch_size):
                allowed = mask[b] & (chosen[b] == 0)
                out[b, m] += np_log_softmax_at(logits[b], allowed, lists[b, m, t])
            chosen[np.arange(batch_size), lists[:, m, t]] = 1.0
    return out


def all_lists(num_candidates, list_len):
    """All ordered lists of distinct candidates: [P, L] int32."""
    perms = itertools.permutations(range(num_candidates), list_len)
    return np.array(list(perms), dtype=np.int32)


def np_all_list_probs(policy, mask, list_len, temperature=1.0):
    """dict per row: tuple(list) -> probability, over all ordered lists of valid candidates,
    computed by a recursion over prefixes with the policy's numpy logits."""
    batch_size, num_candidates = mask.shape
    probs = [dict() for _ in range(batch_size)]

    def recurse(prefixes, log_p, depth):
        # prefixes: one prefix (tuple) per row, all of length depth.
        if depth == list_len:
            for b in range(batch_size):
                probs[b][prefixes[b]] = float(np.exp(log_p[b]))
            return
        chosen = np.zeros(mask.shape)
        for b, prefix in enumerate(prefixes):
            chosen[b, list(prefix)] = 1.0
        logits = policy.np_logits(chosen) / temperature
        options = [
            [i for i in range(num_candidates) if mask[b, i] and i not in prefixes[b]]
            for b in range(batch_size)
        ]
        width = max(len(o) for o in options)
        for j in range(width):
            # Rows with fewer options repeat their last one; duplicates overwrite identically.
            nxt = [o[min(j, len(o) - 1)] for o in options]
            new_log_p = log_p.copy()
            for b in range(batch_size):
                allowed = mask[b] & (chosen[b] == 0)
                new_log_p[b] += np_log_softmax_at(logits[b], allowed, nxt[b])
            recurse([prefixes[b] + (nxt[b],) for b in range(batch_size)], new_log_p, depth + 1)

    recurse([() for _ in range(batch_size)], np.zeros(batch_size), 0)
    return probs


def random_valid_lists(mask, list_len, num_lists, seed):
    """[B, M, L] random lists of distinct valid candidates."""
    rng = np.random.default_rng(seed)
    out = np.empty((mask.shape[0], num_lists, list_len), np.int32)
    for b in range(mask.shape[0]):
        valid = np.flatnonzero(mask[b])
        for m in range(num_lists):
            out[b, m] = rng.permutation(valid)[:list_len]
    return out


def assert_frequencies_match(lists, probs):
    """lists [B, K, L] samples; probs per row dict tuple -> probability (sums to 1)."""
    for b, row_probs in enumerate(probs):
        keys = sorted(row_probs)
        index = {k: i for i, k in enumerate(keys)}
        counts = np.zeros(len(keys))
        for sample in lists[b]:
            key = tuple(int(i) for i in sample)
            assert key in index, f"row {b}: sampled list {key} has zero probability"
            counts[index[key]] += 1
        n = counts.sum()
        p = np.array([row_probs[k] for k in keys])
        assert abs(p.sum() - 1.0) < 1e-9
        expected = n * p / p.sum()
        assert expected.min() >= 5.0, "too few expected counts for a chi-square test"
        assert stats.chisquare(counts, expected).pvalue > P_MIN
        se = np.sqrt(p * (1.0 - p) / n)
        assert np.all(np.abs(counts / n - p) <= MAX_SE * se)


def assert_distinct_and_valid(lists, mask):
    """lists [B, ..., L]: every list has L distinct valid candidates."""
    lists = np.asarray(lists)
    list_len = lists.shape[-1]
    for b in range(mask.shape[0]):
        row = lists[b].reshape(-1, list_len)
        assert row.min() >= 0 and row.max() < mask.shape[1]
        assert mask[b][row].all(), f"row {b}: a masked candidate was selected"
        ordered = np.sort(row, axis=-1)
        assert np.all(ordered[:, 1:] != ordered[:, :-1]), f"row {b}: duplicate candidate"


# ----------------------------------------------------------------------------------------------
# 1. Exhaustive enumeration: probabilities of all lists sum to one.
# ----------------------------------------------------------------------------------------------

ENUM_CASES = [
    (5, 3, [(), (1, 3)]),  # row 1 has exactly L valid candidates
    (4, 4, [(), ()]),
    (6, 4, [(5,), (0, 4)]),
]


# The generator skips the N = L = 4 case to keep its compilations few.
@pytest.mark.parametrize(
    "policy_name,case",
    [("interaction", case) for case in ENUM_CASES]
    + [("generator", case) for case in ENUM_CASES if case[0] != 4],
)
def test_enumerated_probabilities_sum_to_one(policy_name, case):
    num_candidates, list_len, masked = case
    mask = make_mask(num_candidates, masked)
    policy = POLICIES[policy_name](mask, seed=num_candidates)
    perms = all_lists(num_candidates, list_len)
    lists = np.broadcast_to(perms[None], (mask.shape[0],) + perms.shape)
    log_p = jax.jit(lambda x: sampling.list_log_prob(policy.step, jnp.asarray(mask), x))(
        jnp.asarray(lists)
    )
    probs = np.exp(np.asarray(log_p, np.float64))
    for b in range(mask.shape[0]):
        has_masked = ~mask[b][perms].all(-1)
        np.testing.assert_allclose(probs[b][~has_masked].sum(), 1.0, atol=1e-5)
        assert np.all(probs[b][has_masked] < 1e-30)
        # The distribution is not uniform (the test would be weak otherwise).
        assert probs[b][~has_masked].std() > 1e-3


def test_policies_depend_on_prefix():
    # Guard for the tests above: the step logits of both policies change with the prefix.
    mask = make_mask(4, [(), ()])
    for make in POLICIES.values():
        policy = make(mask, seed=1)
        empty = policy.np_logits(np.zeros(mask.shape))
        one = policy.np_logits(np.eye(4)[[0, 1]])
        centred = lambda x: x - x.mean(-1, keepdims=True)
        assert np.abs(centred(empty) - centred(one)).max() > 1e-2


# ----------------------------------------------------------------------------------------------
# 2. list_log_prob against a numpy loop over steps.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_list_log_prob_matches_numpy(policy_name):
    mask = make_mask(7, [(), (2, 5), (0, 1, 6)])
    policy = POLICIES[policy_name](mask, seed=3)
    lists = random_valid_lists(mask, 3, 6, seed=4)
    log_prob_fn = jax.jit(lambda x: sampling.list_log_prob(policy.step, jnp.asarray(mask), x))
    got = np.asarray(log_prob_fn(jnp.asarray(lists)))
    expected = np_list_log_probs(policy, mask, lists)
    assert got.shape == (3, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    if policy_name == "interaction":
        # A single list per request ([B, L] lists) gives [B].
        got_single = log_prob_fn(jnp.asarray(lists[:, 0]))
        np.testing.assert_allclose(np.asarray(got_single), expected[:, 0], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# 3. Empirical frequencies of sampled lists.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_sample_group_frequencies(policy_name):
    mask = make_mask(4, [(), (2,)])
    policy = POLICIES[policy_name](mask, seed=5)
    sample = jax.jit(
        lambda key: sampling.sample_group(policy.step, jnp.asarray(mask), 2, key, NUM_SAMPLES)
    )
    lists = np.asarray(sample(jax.random.key(6)))
    assert lists.shape == (2, NUM_SAMPLES, 2) and lists.dtype == np.int32
    assert_frequencies_match(lists, np_all_list_probs(policy, mask, 2))


def test_sample_group_frequencies_with_temperature():
    mask = make_mask(5, [(), (0,)])
    policy = interaction_policy(mask, seed=7)
    temperature = 0.6
    sample = jax.jit(
        lambda key: sampling.sample_group(
            policy.step, jnp.asarray(mask), 2, key, NUM_SAMPLES, temperature
        )
    )
    lists = np.asarray(sample(jax.random.key(8)))
    assert_frequencies_match(lists, np_all_list_probs(policy, mask, 2, temperature))


# ----------------------------------------------------------------------------------------------
# 4. No duplicates and no masked candidate.
# ----------------------------------------------------------------------------------------------

# Row 2 has exactly L = 4 valid candidates.
ADVERSARIAL_MASK = make_mask(8, [(), (1, 4, 6), (0, 2, 5, 7), (3, 5)])


def adversarial_policy():
    """Masked candidates get +20 and already chosen items +20 on every later step, so that a
    sampler that failed to mask either would almost surely pick them."""
    base_shift = 20.0 * (~ADVERSARIAL_MASK)
    return interaction_policy(ADVERSARIAL_MASK, seed=9, base_shift=base_shift, diag_shift=20.0)


def test_sample_list_distinct_and_valid():
    policy = adversarial_policy()
    mask = jnp.asarray(ADVERSARIAL_MASK)
    sample = jax.jit(
        jax.vmap(lambda key, temp: sampling.sample_list(policy.step, mask, 4, key, temp))
    )
    temperatures = jnp.asarray(np.tile([0.3, 1.0, 3.0], 200), jnp.float32)
    lists = np.asarray(sample(jax.random.split(jax.random.key(10), 600), temperatures))
    assert lists.shape == (600, 4, 4)  # [draws, B, L]
    assert_distinct_and_valid(np.swapaxes(lists, 0, 1), ADVERSARIAL_MASK)
    # The row with exactly L valid candidates yields permutations of them.
    assert {tuple(sorted(x)) for x in lists[:, 2]} == {(1, 3, 4, 6)}


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_sample_group_and_greedy_distinct_and_valid(policy_name):
    if policy_name == "interaction":
        policy = adversarial_policy()
    else:
        policy = generator_policy(ADVERSARIAL_MASK, seed=12)
    mask = jnp.asarray(ADVERSARIAL_MASK)
    sample = jax.jit(lambda key: sampling.sample_group(policy.step, mask, 4, key, 300))
    lists = sample(jax.random.key(13))
    assert lists.shape == (4, 300, 4)
    assert_distinct_and_valid(lists, ADVERSARIAL_MASK)
    greedy = jax.jit(lambda: sampling.greedy_list(policy.step, mask, 4))()
    assert greedy.shape == (4, 4) and greedy.dtype == jnp.int32
    assert_distinct_and_valid(greedy, ADVERSARIAL_MASK)


def test_gumbel_top_k_distinct_and_valid():
    rng = np.random.default_rng(14)
    scores = rng.normal(size=ADVERSARIAL_MASK.shape) + 30.0 * (~ADVERSARIAL_MASK)
    lists = sampling.gumbel_top_k(
        jnp.asarray(scores, jnp.float32), jnp.asarray(ADVERSARIAL_MASK), 4, jax.random.key(15), 2000
    )
    assert lists.shape == (4, 2000, 4) and lists.dtype == jnp.int32
    assert_distinct_and_valid(lists, ADVERSARIAL_MASK)


# ----------------------------------------------------------------------------------------------
# 5. vmap == loop, jit == eager.
# ----------------------------------------------------------------------------------------------


def test_sample_group_equals_loop_of_sample_list_and_jit_equals_eager():
    # The hand-written policy only: this is a property of the key handling, and compiling and
    # running the generator eagerly is slow.
    mask_np = make_mask(6, [(), (1, 2), (0, 3, 5)])
    policy = interaction_policy(mask_np, seed=16)
    mask = jnp.asarray(mask_np)
    key, group_size, list_len = jax.random.key(17), 5, 3
    group_fn = lambda k: sampling.sample_group(policy.step, mask, list_len, k, group_size)
    group = np.asarray(jax.jit(group_fn)(key))
    assert group.shape == (3, group_size, list_len) and group.dtype == np.int32
    # sample_group splits its key into K keys and samples one list per key.
    single = jax.jit(lambda k: sampling.sample_list(policy.step, mask, list_len, k))
    looped = np.stack([np.asarray(single(k)) for k in jax.random.split(key, group_size)], axis=1)
    np.testing.assert_array_equal(group, looped)
    # Different members of the group are not all identical (the keys are really split).
    assert len({tuple(x) for x in group[0]}) > 1
    # jit == eager.
    np.testing.assert_array_equal(np.asarray(group_fn(key)), group)


def test_jit_equals_eager():
    # sample_group is checked in the test above; here greedy_list and list_log_prob.
    mask_np = make_mask(6, [(), (1, 2), (0, 3, 5)])
    policy = interaction_policy(mask_np, seed=18)
    mask = jnp.asarray(mask_np)

    greedy_fn = lambda: sampling.greedy_list(policy.step, mask, 3)
    np.testing.assert_array_equal(np.asarray(greedy_fn()), np.asarray(jax.jit(greedy_fn)()))

    lists = jnp.asarray(random_valid_lists(mask_np, 3, 4, seed=20))
    log_prob_fn = lambda x: sampling.list_log_prob(policy.step, mask, x)
    np.testing.assert_allclose(
        np.asarray(log_prob_fn(lists)), np.asarray(jax.jit(log_prob_fn)(lists)), atol=1e-5
    )


# ----------------------------------------------------------------------------------------------
# 6. Greedy decoding.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_greedy_list_is_stepwise_argmax(policy_name):
    mask = make_mask(7, [(), (0, 6), (1, 2, 3)])
    policy = POLICIES[policy_name](mask, seed=21)
    list_len = 4
    expected = np.zeros((3, list_len), np.int32)
    chosen = np.zeros(mask.shape)
    for t in range(list_len):
        logits = policy.np_logits(chosen)
        for b in range(3):
            allowed = mask[b] & (chosen[b] == 0)
            best = max(np.flatnonzero(allowed), key=lambda i, b=b: logits[b, i])
            expected[b, t] = best
            chosen[b, best] = 1.0
    got = sampling.greedy_list(policy.step, jnp.asarray(mask), list_len)
    np.testing.assert_array_equal(np.asarray(got), expected)


# ----------------------------------------------------------------------------------------------
# 7. Plackett-Luce.
# ----------------------------------------------------------------------------------------------


def np_plackett_luce_log_prob(scores, mask, ordered):
    """Closed form: sum_t s(l_t) - log sum_{j valid, j not in l_<t} exp(s_j)."""
    total = 0.0
    used = set()
    for item in ordered:
        if not mask[item]:
            return -np.inf
        rest = [j for j in range(len(scores)) if mask[j] and j not in used]
        total += scores[item] - np.log(np.sum(np.exp(scores[rest])))
        used.add(int(item))
    return total


def test_plackett_luce_log_prob_closed_form():
    mask = make_mask(7, [(), (3,), (0, 2, 4)])
    rng = np.random.default_rng(22)
    scores = rng.normal(size=mask.shape).astype(np.float32)
    lists = random_valid_lists(mask, 4, 5, seed=23)
    got = sampling.plackett_luce_log_prob(
        jnp.asarray(scores), jnp.asarray(mask), jnp.asarray(lists)
    )
    expected = np.array(
        [
            [
                np_plackett_luce_log_prob(scores[b].astype(np.float64), mask[b], lists[b, m])
                for m in range(lists.shape[1])
            ]
            for b in range(lists.shape[0])
        ]
    )
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
    # [B, L] lists -> [B].
    got_single = sampling.plackett_luce_log_prob(
        jnp.asarray(scores), jnp.asarray(mask), jnp.asarray(lists[:, 0])
    )
    np.testing.assert_allclose(np.asarray(got_single), expected[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_candidates,list_len,masked", ENUM_CASES)
def test_plackett_luce_probabilities_sum_to_one(num_candidates, list_len, masked):
    mask = make_mask(num_candidates, masked)
    scores = np.random.default_rng(24).normal(size=mask.shape).astype(np.float32)
    perms = all_lists(num_candidates, list_len)
    lists = np.broadcast_to(perms[None], (mask.shape[0],) + perms.shape)
    log_p = sampling.plackett_luce_log_prob(
        jnp.asarray(scores), jnp.asarray(mask), jnp.asarray(lists)
    )
    probs = np.exp(np.asarray(log_p, np.float64))
    for b in range(mask.shape[0]):
        has_masked = ~mask[b][perms].all(-1)
        np.testing.assert_allclose(probs[b][~has_masked].sum(), 1.0, atol=1e-5)
        assert np.all(probs[b][has_masked] < 1e-30)


def test_gumbel_top_k_frequencies():
    mask = make_mask(5, [(), (1,)])
    scores = np.random.default_rng(25).normal(size=mask.shape).astype(np.float32)
    lists = np.asarray(
        sampling.gumbel_top_k(
            jnp.asarray(scores), jnp.asarray(mask), 2, jax.random.key(26), NUM_SAMPLES
        )
    )
    assert lists.shape == (2, NUM_SAMPLES, 2)
    probs = []
    for b in range(mask.shape[0]):
        row = {}
        for perm in itertools.permutations(np.flatnonzero(mask[b]).tolist(), 2):
            row[perm] = float(
                np.exp(np_plackett_luce_log_prob(scores[b].astype(np.float64), mask[b], perm))
            )
        probs.append(row)
    assert_frequencies_match(lists, probs)


# ----------------------------------------------------------------------------------------------
# 8. mask_logits.
# ----------------------------------------------------------------------------------------------


def test_mask_logits_values_with_extra_axes():
    rng = np.random.default_rng(27)
    mask = make_mask(5, [(), (0, 3)])
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    chosen = (rng.random((2, 3, 5)) < 0.4).astype(np.float32)
    got = np.asarray(sampling.mask_logits(jnp.asarray(logits), jnp.asarray(mask), chosen))
    for b in range(2):
        for m in range(3):
            for n in range(5):
                if mask[b, n] and not chosen[b, m, n]:
                    assert got[b, m, n] == logits[b, m, n]
                else:
                    assert got[b, m, n] <= -1e8


def test_mask_logits_gradients_finite_for_fully_masked_row():
    mask = jnp.asarray(make_mask(4, [(), (0, 1, 2, 3)]))
    lists = jnp.asarray([[2, 0], [1, 3]], jnp.int32)
    logits = jnp.asarray(np.random.default_rng(28).normal(size=(2, 2, 4)), jnp.float32)

    def log_prob(raw):
        chosen = sampling.prefix_multi_hot(lists, 4)
        return sampling.log_prob_from_logits(sampling.mask_logits(raw, mask, chosen), lists)

    value = log_prob(logits)
    assert np.all(np.isfinite(np.asarray(value)))
    # Fully masked row: every step is a uniform softmax over N = 4 constants.
    np.testing.assert_allclose(float(value[1]), -2.0 * np.log(4.0), rtol=1e-6)
    grad = np.asarray(jax.grad(lambda x: log_prob(x).sum())(logits))
    assert np.all(np.isfinite(grad))
    # No gradient flows into masked entries: all of row 1, and for row 0 the item chosen at
    # step 0 when looking at step 1.
    np.testing.assert_array_equal(grad[1], 0.0)
    assert grad[0, 1, 2] == 0.0
    assert np.abs(grad[0]).max() > 0.0

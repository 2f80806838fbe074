"""The diagnosis command's measures against plain numpy: the list-aware model's response to the
item above (``rm_list_effects``) and the within-request rank correlation."""

import types

import jax.numpy as jnp
import numpy as np
from scipy import stats

from goalrank_jax import diagnose
from goalrank_jax.env.true_model import TrueModelParams

B, N = 3, 5


class _PairTable:
    """A stand-in list-aware module: the logit of c at position 2 below a is table[b, a, c]."""

    def __init__(self, table):
        self.table = jnp.asarray(table, jnp.float32)

    def apply(self, params, batch, lists):
        del params, batch
        above, below = lists[..., 0], lists[..., 1]
        rows = jnp.arange(lists.shape[0])[:, None]
        second = self.table[rows, above, below]
        return jnp.stack([jnp.zeros_like(second), second], -1)


def _numpy_effects(table, category, partner, mask, params):
    """Loop version of diagnose.pair_effects summed over the batch, then the ratios."""
    cross = truth_sq = 0.0
    kinds = {"same": [], "same_true": [], "partner": [], "partner_true": []}
    for b in range(table.shape[0]):
        valid = [i for i in range(N) if mask[b, i]]
        for c in valid:
            above = [a for a in valid if a != c]
            truth = {
                a: -params.redundancy_penalty * (category[b, a] == category[b, c])
                + params.complement_bonus * (category[b, a] == partner[b, c])
                for a in above
            }
            mean_model = np.mean([table[b, a, c] for a in above])
            mean_truth = np.mean([truth[a] for a in above])
            for a in above:
                m, t = table[b, a, c] - mean_model, truth[a] - mean_truth
                cross += m * t
                truth_sq += t * t
                if category[b, a] == category[b, c]:
                    kinds["same"].append(m)
                    kinds["same_true"].append(t)
                elif category[b, a] == partner[b, c]:
                    kinds["partner"].append(m)
                    kinds["partner_true"].append(t)
    return {
        "slope": cross / truth_sq,
        "same_category": np.mean(kinds["same"]),
        "true_same_category": np.mean(kinds["same_true"]),
        "partner_category": np.mean(kinds["partner"]),
        "true_partner_category": np.mean(kinds["partner_true"]),
        "pairs_same_category": len(kinds["same"]),
        "pairs_partner_category": len(kinds["partner"]),
    }


def _batch(rng):
    mask = np.ones((B, N), bool)
    mask[2, 4] = False  # a padded candidate
    return {
        "cand_mask": jnp.asarray(mask),
        "cand_category": jnp.asarray(rng.integers(0, 3, (B, N)), jnp.int32),
        "cand_partner": jnp.asarray(rng.integers(0, 3, (B, N)), jnp.int32),
    }


def _summed(table, batch, params):
    evaluator = types.SimpleNamespace(module=_PairTable(table))
    sums = diagnose.pair_effects(evaluator, None, batch, params)
    return diagnose.effect_ratios({k: float(np.sum(v)) for k, v in sums.items()})


def test_pair_effects_match_a_numpy_loop():
    rng = np.random.default_rng(0)
    batch = _batch(rng)
    params = TrueModelParams(redundancy_penalty=2.0, complement_bonus=1.5)
    table = rng.normal(size=(B, N, N))
    got = _summed(table, batch, params)
    want = _numpy_effects(
        table,
        np.asarray(batch["cand_category"]),
        np.asarray(batch["cand_partner"]),
        np.asarray(batch["cand_mask"]),
        params,
    )
    assert got["pairs_same_category"] == want["pairs_same_category"] > 0
    assert got["pairs_partner_category"] == want["pairs_partner_category"] > 0
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_pair_effects_slope_of_a_scaled_true_term():
    """A model whose logit is half the true term plus anything that depends on c alone has
    slope 0.5: the per-c centring removes the c terms."""
    rng = np.random.default_rng(1)
    batch = _batch(rng)
    params = TrueModelParams()
    category = np.asarray(batch["cand_category"])
    partner = np.asarray(batch["cand_partner"])
    same = category[:, :, None] == category[:, None, :]
    completes = category[:, :, None] == partner[:, None, :]
    truth = -params.redundancy_penalty * same + params.complement_bonus * completes
    table = 0.5 * truth + rng.normal(size=(B, 1, N)) * 3.0
    got = _summed(table, batch, params)
    np.testing.assert_allclose(got["slope"], 0.5, rtol=1e-5)
    np.testing.assert_allclose(got["same_category"], 0.5 * got["true_same_category"], rtol=1e-5)


def test_rank_correlation_is_scipy_spearman_per_request():
    rng = np.random.default_rng(2)
    scores, truth = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    keep = np.ones((4, 6), bool)
    keep[1, :4] = False  # two kept: left out
    keep[2, 5] = False
    want = np.mean([stats.spearmanr(scores[i][keep[i]], truth[i][keep[i]])[0] for i in (0, 2, 3)])
    np.testing.assert_allclose(diagnose.rank_correlation(scores, truth, keep), want, rtol=1e-6)


def test_importing_the_measures_defines_no_flags():
    # The measures are a library: a process that also imports goalrank_jax.main (which defines
    # --workdir) must be able to import them.
    from absl import flags

    from goalrank_jax import main  # noqa: F401

    assert "list_effect_requests" not in flags.FLAGS
    assert "workdir" in flags.FLAGS


def test_command_on_a_workdir_without_a_run_exits_2(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "goalrank_jax.diagnose", f"--workdir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "holds no goalrank_jax run" in done.stderr
    assert done.stdout == ""


def test_paired_difference_against_the_paired_t_statistic():
    rng = np.random.default_rng(4)
    a = rng.normal(0.3, 0.2, 400)
    b = a - rng.normal(0.01, 0.05, 400)
    a_with_gaps = np.where(np.arange(400) % 50 == 0, np.nan, a)
    out = diagnose.paired_difference(a_with_gaps, b)
    keep = np.arange(400) % 50 != 0
    t = stats.ttest_rel(a[keep], b[keep]).statistic
    assert out["requests"] == keep.sum()
    np.testing.assert_allclose(out["mean"] / out["stderr"], t, rtol=1e-9)
    np.testing.assert_allclose(out["mean"], np.mean(a[keep] - b[keep]), rtol=1e-12)
    assert np.isnan(diagnose.paired_difference(a[:1], b[:1])["stderr"])


def test_remaining_auc_counts_ordered_pairs_among_the_remaining_candidates():
    rng = np.random.default_rng(2)
    batch, steps, num = 4, 3, 9
    scores = np.round(rng.normal(size=(batch, steps, num)), 1).astype(np.float32)  # some ties
    labels = (rng.random((batch, num)) < 0.4).astype(np.int8)
    labels[0] = 0  # no positive: NaN at every step
    remaining = rng.random((batch, steps, num)) < 0.7
    got = np.asarray(diagnose.remaining_auc(jnp.asarray(scores), labels, jnp.asarray(remaining)))
    for b in range(batch):
        for t in range(steps):
            pos = [n for n in range(num) if remaining[b, t, n] and labels[b, n] > 0]
            neg = [n for n in range(num) if remaining[b, t, n] and labels[b, n] <= 0]
            if not pos or not neg:
                assert np.isnan(got[b, t])
                continue
            # Mann-Whitney U of the positives' scores over the negatives', normalised.
            u = stats.mannwhitneyu(scores[b, t, pos], scores[b, t, neg]).statistic
            np.testing.assert_allclose(got[b, t], u / (len(pos) * len(neg)), rtol=1e-6)

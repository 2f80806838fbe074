import math

import jax
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from goalrank_jax import metrics

B, N, L = 64, 12, 4
KEYS = [f"H@{L}", f"N@{L}", f"M@{L}", f"F1@{L}", "AUC"]


def make_batch(seed, batch=B, num_candidates=N, length=L):
    rng = np.random.default_rng(seed)
    num_valid = rng.integers(length, num_candidates + 1, size=batch)
    cand_mask = np.arange(num_candidates)[None, :] < num_valid[:, None]
    labels = (rng.random((batch, num_candidates)) < 0.3).astype(np.float32)
    labels[0:6] = 0.0
    labels[6:12] = 1.0
    labels[12] = 0.0
    labels[12, 0] = 1.0
    labels = labels * cand_mask
    ranked = np.stack([rng.permutation(n)[:length] for n in num_valid]).astype(np.int32)
    scores = rng.integers(0, 4, size=(batch, num_candidates)).astype(np.float32)
    example_mask = rng.random(batch) < 0.8
    example_mask[[0, 6, 12]] = True
    return ranked, labels, cand_mask, example_mask, scores


def reference_sums(ranked, labels, cand_mask, example_mask, scores=None):
    length = ranked.shape[1]
    sums = {k: [0.0, 0.0] for k in KEYS}
    for b in range(ranked.shape[0]):
        if not example_mask[b]:
            continue
        valid = np.flatnonzero(cand_mask[b])
        positives = {int(c) for c in valid if labels[b, c] == 1}
        num_pos = len(positives)
        if scores is None:
            row_scores = np.zeros(labels.shape[1])
            for t, c in enumerate(ranked[b], start=1):
                row_scores[c] = 1.0 / t
        else:
            row_scores = scores[b]
        y = [1 if int(c) in positives else 0 for c in valid]
        if 0 < sum(y) < len(y):
            sums["AUC"][0] += roc_auc_score(y, row_scores[valid])
            sums["AUC"][1] += 1
        if num_pos == 0:
            continue
        rel = [1 if int(c) in positives else 0 for c in ranked[b]]
        hits = sum(rel)
        hit_ratio = hits / num_pos
        dcg = sum(r / math.log2(t + 1) for t, r in enumerate(rel, start=1))
        idcg = sum(1 / math.log2(t + 1) for t in range(1, min(num_pos, length) + 1))
        ap = 0.0
        for t in range(1, length + 1):
            if rel[t - 1]:
                ap += sum(rel[:t]) / t
        ap /= min(num_pos, length)
        precision = hits / length
        f1 = 0.0 if hits == 0 else 2 * precision * hit_ratio / (precision + hit_ratio)
        for key, value in zip(KEYS[:4], [hit_ratio, dcg / idcg, ap, f1], strict=True):
            sums[key][0] += value
            sums[key][1] += 1
    return sums


def as_numpy(sums):
    return {k: (float(s), float(c)) for k, (s, c) in sums.items()}


@pytest.mark.parametrize("use_scores", [True, False])
def test_random_batch_matches_reference(use_scores):
    ranked, labels, cand_mask, example_mask, scores = make_batch(0)
    scores = scores if use_scores else None
    got = as_numpy(metrics.ranking_metric_sums(ranked, labels, cand_mask, example_mask, scores))
    want = reference_sums(ranked, labels, cand_mask, example_mask, scores)
    assert sorted(got) == sorted(KEYS)
    for key in KEYS:
        assert got[key][1] == want[key][1], key
        np.testing.assert_allclose(got[key][0], want[key][0], rtol=1e-5, atol=1e-5, err_msg=key)
    assert 0 < got["AUC"][1] < got[f"H@{L}"][1] < example_mask.sum()


def test_int_labels_match_float_labels():
    ranked, labels, cand_mask, example_mask, scores = make_batch(1)
    as_float = metrics.ranking_metric_sums(ranked, labels, cand_mask, example_mask, scores)
    as_int = metrics.ranking_metric_sums(
        ranked, labels.astype(np.int32), cand_mask, example_mask, scores
    )
    assert as_numpy(as_float) == as_numpy(as_int)


def test_jit_matches_eager():
    ranked, labels, cand_mask, example_mask, scores = make_batch(2)
    eager = as_numpy(metrics.ranking_metric_sums(ranked, labels, cand_mask, example_mask, scores))
    jitted = as_numpy(
        jax.jit(metrics.ranking_metric_sums)(ranked, labels, cand_mask, example_mask, scores)
    )
    for key in KEYS:
        np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-6, atol=1e-6, err_msg=key)
    eager_list = as_numpy(metrics.ranking_metric_sums(ranked, labels, cand_mask, example_mask))
    jitted_list = as_numpy(
        jax.jit(metrics.ranking_metric_sums)(ranked, labels, cand_mask, example_mask)
    )
    for key in KEYS:
        np.testing.assert_allclose(jitted_list[key], eager_list[key], rtol=1e-6, atol=1e-6)


def test_padded_rows_change_nothing():
    ranked, labels, cand_mask, example_mask, scores = make_batch(3)
    ones = np.ones(B, bool)
    base = as_numpy(metrics.ranking_metric_sums(ranked, labels, cand_mask, ones, scores))
    pad_ranked, pad_labels, pad_cand, _, pad_scores = make_batch(4, batch=16)
    padded = as_numpy(
        metrics.ranking_metric_sums(
            np.concatenate([ranked, pad_ranked]),
            np.concatenate([labels, pad_labels]),
            np.concatenate([cand_mask, pad_cand]),
            np.concatenate([ones, np.zeros(16, bool)]),
            np.concatenate([scores, pad_scores]),
        )
    )
    for key in KEYS:
        np.testing.assert_allclose(padded[key], base[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_list_to_scores():
    ranked = np.array([[3, 0, 4], [1, 2, 0]], np.int32)
    want = np.array([[1 / 2, 0, 0, 1, 1 / 3], [1 / 3, 1, 1 / 2, 0, 0]], np.float32)
    got = metrics.list_to_scores(ranked, 5)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)


def single_request(ranked, positives, num_candidates=6, num_valid=None, scores=None):
    labels = np.zeros((1, num_candidates), np.float32)
    labels[0, positives] = 1.0
    cand_mask = np.arange(num_candidates)[None, :] < (num_valid or num_candidates)
    sums = metrics.ranking_metric_sums(
        np.array([ranked], np.int32), labels, cand_mask, np.ones(1, bool), scores
    )
    return metrics.reduce_metric_sums(sums)


def test_perfect_list_all_positives_retrieved():
    got = single_request([4, 1, 3], [1, 3, 4])
    for key in ["H@3", "N@3", "M@3", "F1@3"]:
        assert got[key] == pytest.approx(1.0)
    assert got["AUC"] == pytest.approx(1.0)


def test_perfect_list_fewer_positives_than_length():
    got = single_request([3, 1, 0], [1, 3])
    assert got["H@3"] == pytest.approx(1.0)
    assert got["N@3"] == pytest.approx(1.0)
    assert got["M@3"] == pytest.approx(1.0)
    assert got["F1@3"] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))


def test_single_positive_at_position_two():
    got = single_request([0, 2, 4], [2])
    assert got["H@3"] == pytest.approx(1.0)
    assert got["N@3"] == pytest.approx(1 / math.log2(3))
    assert got["M@3"] == pytest.approx(1 / 2)
    assert got["F1@3"] == pytest.approx(0.5)
    assert got["AUC"] == pytest.approx(4 / 5)


def test_more_positives_than_length():
    got = single_request([0, 5, 1], [0, 1, 2, 3])
    assert got["H@3"] == pytest.approx(0.5)
    assert got["N@3"] == pytest.approx((1 + 1 / 2) / (1 + 1 / math.log2(3) + 1 / 2))
    assert got["M@3"] == pytest.approx((1 + 2 / 3) / 3)
    assert got["F1@3"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))


def test_no_hits_gives_zero():
    got = single_request([0, 1, 2], [4])
    for key in ["H@3", "N@3", "M@3", "F1@3"]:
        assert got[key] == 0.0


def test_auc_ties_count_half():
    scores = np.array([[1.0, 1.0, 0.0, 2.0, 9.0]], np.float32)
    got = single_request([0, 1, 2], [0, 3], num_candidates=5, num_valid=4, scores=scores)
    assert got["AUC"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)


def test_ineligible_requests_are_excluded():
    no_positive = single_request([0, 1, 2], [])
    assert all(math.isnan(value) for value in no_positive.values())
    assert len(no_positive) == 5
    all_positive = single_request([0, 1, 2], [0, 1, 2], num_valid=3)
    assert all_positive["H@3"] == pytest.approx(1.0)
    assert math.isnan(all_positive["AUC"])


def test_reduce_metric_sums_accumulates_batches():
    batches = [
        {"H@2": (np.float32(1.5), np.float32(2.0)), "AUC": (np.float32(0.0), np.float32(0.0))},
        {"H@2": (np.float32(0.5), np.float32(2.0)), "AUC": (np.float32(0.0), np.float32(0.0))},
    ]
    got = metrics.reduce_metric_sums(batches)
    assert got["H@2"] == pytest.approx(0.5)
    assert math.isnan(got["AUC"])

"""Embedded synthetic environment: the generated world and the logging policy.

The environment has three parts:

* a *world* (users, items, categories, popularity), generated on the host with numpy from a seed
  (this module);
* a *true response model* in closed form, whose expected reward of a list is the expected number
  of clicks (goalrank_jax/env/true_model.py), with an oracle beam search for the best list
  (goalrank_jax/env/oracle.py);
* a *logging policy* (a noisy relevance ranker) whose lists receive Bernoulli feedback sampled
  from the true model (this module).

Axis names in shapes: B batch, L list length, I items, U users, C categories,
M an arbitrary number of items per row, R logged requests, d latent dimension.
"""

import dataclasses
import math

import numpy as np

from goalrank_jax.env.true_model import TrueModelParams, click_probabilities

# Re-exported: goalrank_jax/evaluate.py calls synthetic.list_reward_from_candidates.
from goalrank_jax.env.true_model import list_reward_from_candidates as list_reward_from_candidates


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Sizes and parameters of the synthetic world, its logging policy and its true model."""

    # Seed of every host-side random draw (world and logs).
    seed: int = 0
    # Number of users U.
    num_users: int = 2000
    # Number of items I.
    num_items: int = 4000
    # Number of item categories C (at least 2, so that each category has a distinct partner).
    num_categories: int = 20
    # Dimension d of the user and item latent vectors.
    latent_dim: int = 16
    # Logged requests per user; R = num_users * requests_per_user.
    requests_per_user: int = 30
    # Length L of every logged list.
    list_len: int = 6
    # Weight of the user-item affinity <u, v_i> / sqrt(d) in the relevance logit.
    relevance_scale: float = 0.75
    # Weight of the standardised log-popularity of the item in the relevance logit.
    popularity_weight: float = 0.3
    # Dirichlet concentration of each user's category preferences (small: few liked categories).
    category_preference_concentration: float = 0.1
    # Mixing weight of the uniform distribution into each user's category preferences, so that
    # the category term log(C * pref) is bounded below by log(category_pref_smoothing).
    category_pref_smoothing: float = 0.1
    # Weight of the category term log(C * pref[u, c_i]) in the relevance logit.
    category_weight: float = 1.0
    # Constant offset of every relevance logit.
    base_logit: float = -1.5
    # Temperature of the logging policy: it ranks by relevance_logit / T + Gumbel noise.
    logging_temperature: float = 1.0
    # M: candidates the world's own stage-1 retrieval draws per request, from which the logging
    # ranker shows L (as real systems log the list their ranker chose from what they retrieved).
    # 0 = no retrieval: the ranker ranks every item the user has not been shown.
    impression_size: int = 50
    # Temperature of that retrieval: it draws the M items by relevance_logit / T + Gumbel, so a
    # large T retrieves broadly and the ranker's choice among them carries the relevance.
    retrieval_temperature: float = 3.0
    # Share of the user-item affinity term that retrieval sees (1 = the full relevance; 0 = the
    # coarse signals only: category preference and popularity). The ranker always sees it all.
    retrieval_affinity: float = 1.0
    # Exponent of the Zipf law of the raw item popularity (1 / rank ** exponent).
    popularity_zipf_exponent: float = 1.0
    # Parameters of the true list-wise response model.
    true_model: TrueModelParams = dataclasses.field(default_factory=TrueModelParams)

    def validate(self) -> None:
        """Raises ValueError naming the first field with an impossible value."""
        positive_ints = ("num_users", "num_items", "latent_dim", "requests_per_user", "list_len")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_categories, int) or self.num_categories < 2:
            raise ValueError(f"num_categories must be an integer >= 2, got {self.num_categories!r}")
        if self.list_len > self.num_items:
            raise ValueError(
                f"list_len ({self.list_len}) must not exceed num_items ({self.num_items})"
            )
        if self.requests_per_user * self.list_len > self.num_items:
            raise ValueError(
                f"requests_per_user * list_len ({self.requests_per_user * self.list_len}) must not"
                f" exceed num_items ({self.num_items}): a user never sees an item twice"
            )
        if not isinstance(self.impression_size, int) or self.impression_size < 0:
            raise ValueError(
                f"impression_size must be a non-negative integer, got {self.impression_size!r}"
            )
        unseen_at_last = self.num_items - (self.requests_per_user - 1) * self.list_len
        if self.impression_size and not self.list_len <= self.impression_size <= unseen_at_last:
            raise ValueError(
                f"impression_size ({self.impression_size}) must be 0 or between list_len "
                f"({self.list_len}) and the items a user has not been shown at the last request "
                f"({unseen_at_last})"
            )
        floats = {
            "relevance_scale": self.relevance_scale,
            "popularity_weight": self.popularity_weight,
            "category_weight": self.category_weight,
            "base_logit": self.base_logit,
            "true_model.examination_power": self.true_model.examination_power,
            "true_model.redundancy_penalty": self.true_model.redundancy_penalty,
            "true_model.complement_bonus": self.true_model.complement_bonus,
        }
        for name, value in floats.items():
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        strictly_positive = {
            "category_preference_concentration": self.category_preference_concentration,
            "logging_temperature": self.logging_temperature,
            "retrieval_temperature": self.retrieval_temperature,
        }
        for name, value in strictly_positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        non_negative = {
            "popularity_zipf_exponent": self.popularity_zipf_exponent,
            "true_model.examination_power": self.true_model.examination_power,
            "true_model.redundancy_penalty": self.true_model.redundancy_penalty,
            "true_model.complement_bonus": self.true_model.complement_bonus,
        }
        for name, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if not 0 <= self.retrieval_affinity <= 1:
            raise ValueError(
                f"retrieval_affinity must be in [0, 1], got {self.retrieval_affinity!r}"
            )
        if not 0 < self.category_pref_smoothing <= 1:
            raise ValueError(
                f"category_pref_smoothing must be in (0, 1], got {self.category_pref_smoothing!r}"
            )


@dataclasses.dataclass(frozen=True, eq=False)
class World:
    """The generated users and items (host-side numpy arrays).

    Attributes:
        user_latent: [U, d] float32 user preference vectors.
        item_latent: [I, d] float32 item vectors.
        item_category: [I] int32 category of each item, in [0, C).
        category_partner: [C] int32 partner of each category, never the category itself; an item
            of category c is complemented by an item of category category_partner[c] above it.
        item_popularity: [I] float32 standardised log-popularity (Zipf over a random ranking).
        user_category_pref: [U, C] float32 category preferences, rows sum to 1 (Dirichlet draw
            mixed with the uniform distribution).
    """

    user_latent: np.ndarray
    item_latent: np.ndarray
    item_category: np.ndarray
    category_partner: np.ndarray
    item_popularity: np.ndarray
    user_category_pref: np.ndarray


def make_world(cfg: EnvConfig) -> World:
    """Generates the world, deterministically from cfg.seed.

    Args:
        cfg: the environment configuration (validated here).

    Returns:
        The World with U = cfg.num_users users, I = cfg.num_items items, C = cfg.num_categories.
    """
    cfg.validate()
    rng = np.random.default_rng([cfg.seed, 0])
    num_users, num_items, num_cats = cfg.num_users, cfg.num_items, cfg.num_categories
    user_latent = rng.standard_normal((num_users, cfg.latent_dim)).astype(np.float32)
    item_latent = rng.standard_normal((num_items, cfg.latent_dim)).astype(np.float32)
    item_category = rng.integers(0, num_cats, size=num_items).astype(np.int32)
    order = rng.permutation(num_cats)
    category_partner = np.empty(num_cats, dtype=np.int32)
    category_partner[order] = np.roll(order, -1)
    popularity_rank = rng.permutation(num_items) + 1
    log_popularity = -cfg.popularity_zipf_exponent * np.log(popularity_rank)
    spread = log_popularity.std()
    item_popularity = (log_popularity - log_popularity.mean()) / (spread if spread > 0 else 1.0)
    dirichlet = rng.dirichlet(np.full(num_cats, cfg.category_preference_concentration), num_users)
    smoothing = cfg.category_pref_smoothing
    user_category_pref = (1.0 - smoothing) * dirichlet + smoothing / num_cats
    return World(
        user_latent=user_latent,
        item_latent=item_latent,
        item_category=item_category,
        category_partner=category_partner,
        item_popularity=item_popularity.astype(np.float32),
        user_category_pref=user_category_pref.astype(np.float32),
    )


def relevance_logits(
    world: World, cfg: EnvConfig, users: np.ndarray, items: np.ndarray, affinity_share=1.0
) -> np.ndarray:
    """True relevance logits of items for users (host side).

    rel[u, i] = base_logit + relevance_scale * <u, v_i> / sqrt(d)
                + popularity_weight * pop_i + category_weight * log(C * pref[u, c_i]).

    The category term is 0 for a user with uniform preferences, positive for liked categories
    and at least log(category_pref_smoothing) for disliked ones.

    Args:
        world: the generated world.
        cfg: the configuration the world was made from.
        users: [B] int user ids.
        items: [B, M] int item ids.
        affinity_share: weight of the affinity term (1 = the true relevance; the retrieval of
            the logging system sees ``retrieval_affinity``).

    Returns:
        [B, M] float32 relevance logits.
    """
    users = np.asarray(users)
    items = np.asarray(items)
    user_vec = world.user_latent[users]
    item_vec = world.item_latent[items]
    affinity = np.einsum("bd,bmd->bm", user_vec, item_vec) / np.sqrt(cfg.latent_dim)
    pref = world.user_category_pref[users[:, None], world.item_category[items]]
    logits = (
        cfg.base_logit
        + affinity_share * cfg.relevance_scale * affinity
        + cfg.popularity_weight * world.item_popularity[items]
        + cfg.category_weight * np.log(cfg.num_categories * pref)
    )
    return logits.astype(np.float32)


def _top_by_noisy_score(
    logit: np.ndarray, temperature: float, allowed: np.ndarray, count: int, rng
) -> np.ndarray:
    """[B, count] indices of the largest logit / T + Gumbel among ``allowed`` [B, M] entries,
    best first: a Plackett-Luce sample of softmax(logit / T) without replacement."""
    score = logit / temperature + rng.gumbel(size=logit.shape).astype(np.float32)
    score[~allowed] = -np.inf
    top = np.argpartition(-score, count - 1, axis=1)[:, :count]
    order = np.argsort(-np.take_along_axis(score, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def simulate_logs(world: World, cfg: EnvConfig) -> dict[str, np.ndarray]:
    """Logs of the logging system with feedback from the true model.

    For each user, requests_per_user chronological requests are generated. Without an impression
    (``impression_size`` 0) the logging ranker ranks every item the user has not been shown by
    relevance_logit / T + Gumbel noise and shows the top L in score order (a Plackett-Luce sample
    of softmax(relevance / T) without replacement). With ``impression_size`` M > 0 a stage-1
    retrieval first draws M unseen items the same way at ``retrieval_temperature`` (seeing
    ``retrieval_affinity`` of the affinity term), and the
    ranker shows the top L of those M; the M - L it did not show are returned too. Labels are
    Bernoulli draws of the true click probabilities of the list as shown. Rows are ordered by
    user, then by request index. Deterministic from cfg.seed.

    Args:
        world: the generated world.
        cfg: the configuration the world was made from.

    Returns:
        user: [R] int32; request_index: [R] int32 (chronological, 0-based per user);
        items: [R, L] int32 logged lists; labels: [R, L] int8 clicks;
        rel_logit: [R, L] float32 true relevance logits of the logged items;
        unshown: [R, M - L] int32 the retrieved items the ranker did not show, in retrieval
        order ([R, 0] without an impression).
    """
    cfg.validate()
    rng = np.random.default_rng([cfg.seed, 1])
    num_users, num_items, list_len = cfg.num_users, cfg.num_items, cfg.list_len
    num_requests, size = cfg.requests_per_user, cfg.impression_size
    users = np.arange(num_users)
    all_items = np.broadcast_to(np.arange(num_items), (num_users, num_items))
    rel = relevance_logits(world, cfg, users, all_items)
    coarse = rel
    if size and cfg.retrieval_affinity != 1.0:
        coarse = relevance_logits(world, cfg, users, all_items, cfg.retrieval_affinity)
    seen = np.zeros((num_users, num_items), dtype=bool)
    shown = np.empty((num_users, num_requests, list_len), dtype=np.int32)
    unshown = np.empty((num_users, num_requests, max(size - list_len, 0)), dtype=np.int32)
    for request in range(num_requests):
        if size:
            pool = _top_by_noisy_score(coarse, cfg.retrieval_temperature, ~seen, size, rng)
            pool_rel = np.take_along_axis(rel, pool, axis=1)
            picked = _top_by_noisy_score(
                pool_rel, cfg.logging_temperature, np.ones(pool.shape, bool), list_len, rng
            )
            ordered = np.take_along_axis(pool, picked, axis=1)
            rest = np.ones(pool.shape, bool)
            np.put_along_axis(rest, picked, False, axis=1)
            unshown[:, request] = pool[rest].reshape(num_users, size - list_len)
        else:
            ordered = _top_by_noisy_score(rel, cfg.logging_temperature, ~seen, list_len, rng)
        shown[:, request] = ordered
        seen[users[:, None], ordered] = True
    items = shown.reshape(-1, list_len)
    user = np.repeat(users, num_requests).astype(np.int32)
    rel_logit = rel[user[:, None], items]
    category = world.item_category[items]
    partner = world.category_partner[category]
    probs = np.asarray(click_probabilities(rel_logit, category, partner, cfg.true_model))
    labels = (rng.random(probs.shape) < probs).astype(np.int8)
    return {
        "user": user,
        "request_index": np.tile(np.arange(num_requests, dtype=np.int32), num_users),
        "items": items,
        "labels": labels,
        "rel_logit": rel_logit.astype(np.float32),
        "unshown": unshown.reshape(len(user), -1),
    }

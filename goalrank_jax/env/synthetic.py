"""Embedded synthetic environment with a known, list-wise true user model.

The environment has three parts:

* a *world* (users, items, categories, popularity), generated on the host with numpy from a seed;
* a *true response model* in closed form: for the item at position t (0-based) of a list,

      p_t = exam_t * sigmoid(rel_t - redundancy_penalty * n_same_t + complement_bonus * comp_t),
      exam_t = (1 / (t + 1)) ** examination_power,

  where n_same_t counts the items above t that share its category and comp_t is 1 when some item
  above t has the *partner* category of t's category. The expected reward of a list is the
  expected number of clicks, sum_t p_t. Because p_t depends only on the prefix and the item at t,
  the reward is a sum of incremental terms, which the oracle beam search exploits;
* a *logging policy* (a noisy relevance ranker) whose lists receive Bernoulli feedback sampled
  from the true model.

Axis names in shapes: B batch, N candidates, L list length, I items, U users, C categories,
M an arbitrary number of items per row, R logged requests, W beam width, d latent dimension.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_BEAM_WIDTH = 50
"""Beam width of the oracle used by the project; reports must state the width they used."""


@dataclasses.dataclass(frozen=True)
class TrueModelParams:
    """Scalars of the true list-wise response model."""

    # eta: examination at 0-based position t is (1 / (t + 1)) ** eta.
    examination_power: float = 1.0
    # Logit penalty per item above with the same category.
    redundancy_penalty: float = 2.0
    # Logit bonus when some item above has the partner category of this item's category.
    complement_bonus: float = 2.0


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Sizes and parameters of the synthetic world, its logging policy and its true model."""

    # Seed of every host-side random draw (world and logs).
    seed: int = 0
    # Number of users U.
    num_users: int = 1000
    # Number of items I.
    num_items: int = 2000
    # Number of item categories C (at least 2, so that each category has a distinct partner).
    num_categories: int = 20
    # Dimension d of the user and item latent vectors.
    latent_dim: int = 16
    # Logged requests per user; R = num_users * requests_per_user.
    requests_per_user: int = 60
    # Length L of every logged list.
    list_len: int = 6
    # Weight of the user-item affinity <u, v_i> / sqrt(d) in the relevance logit.
    relevance_scale: float = 1.5
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
    base_logit: float = -2.0
    # Temperature of the logging policy: it ranks by relevance_logit / T + Gumbel noise.
    logging_temperature: float = 1.0
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
    world: World, cfg: EnvConfig, users: np.ndarray, items: np.ndarray
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
        + cfg.relevance_scale * affinity
        + cfg.popularity_weight * world.item_popularity[items]
        + cfg.category_weight * np.log(cfg.num_categories * pref)
    )
    return logits.astype(np.float32)


def click_probabilities(
    rel_logit: jax.Array,
    category: jax.Array,
    partner: jax.Array,
    params: TrueModelParams,
) -> jax.Array:
    """Click probability of every position of lists under the true model.

    Args:
        rel_logit: [..., L] true relevance logits of the listed items, in list order.
        category: [..., L] int category of each listed item.
        partner: [..., L] int partner category of each listed item's category.
        params: the true-model scalars.

    Returns:
        [..., L] float32 click probabilities p_t.
    """
    rel_logit = jnp.asarray(rel_logit, jnp.float32)
    category = jnp.asarray(category)
    partner = jnp.asarray(partner)
    list_len = rel_logit.shape[-1]
    above = jnp.tril(jnp.ones((list_len, list_len), dtype=bool), k=-1)
    same = category[..., :, None] == category[..., None, :]
    completes = partner[..., :, None] == category[..., None, :]
    n_same = jnp.sum(same & above, axis=-1).astype(jnp.float32)
    comp = jnp.any(completes & above, axis=-1).astype(jnp.float32)
    positions = jnp.arange(list_len, dtype=jnp.float32)
    exam = (positions + 1.0) ** (-params.examination_power)
    logit = rel_logit - params.redundancy_penalty * n_same + params.complement_bonus * comp
    return exam * jax.nn.sigmoid(logit)


def expected_list_reward(
    rel_logit: jax.Array,
    category: jax.Array,
    partner: jax.Array,
    params: TrueModelParams,
) -> jax.Array:
    """Expected number of clicks of lists under the true model.

    Args:
        rel_logit: [..., L] true relevance logits of the listed items, in list order.
        category: [..., L] int category of each listed item.
        partner: [..., L] int partner category of each listed item's category.
        params: the true-model scalars.

    Returns:
        [...] float32 expected rewards sum_t p_t.
    """
    return jnp.sum(click_probabilities(rel_logit, category, partner, params), axis=-1)


def list_reward_from_candidates(
    cand_rel_logit: jax.Array,
    cand_category: jax.Array,
    cand_partner: jax.Array,
    lists: jax.Array,
    params: TrueModelParams,
) -> jax.Array:
    """Expected reward of lists given as indices into per-request candidate sets.

    Args:
        cand_rel_logit: [B, N] true relevance logits of the candidates.
        cand_category: [B, N] int candidate categories.
        cand_partner: [B, N] int partner category of each candidate's category.
        lists: [B, ..., L] int indices into the N candidates, any number of extra list axes.
        params: the true-model scalars.

    Returns:
        [B, ...] float32 expected rewards.
    """
    lists = jnp.asarray(lists)
    batch = lists.shape[0]
    flat = lists.reshape(batch, -1)

    def gather(values: jax.Array) -> jax.Array:
        return jnp.take_along_axis(jnp.asarray(values), flat, axis=1).reshape(lists.shape)

    return expected_list_reward(
        gather(cand_rel_logit), gather(cand_category), gather(cand_partner), params
    )


@functools.partial(jax.jit, static_argnames=("list_len", "beam_width", "params"))
def oracle_beam_search(
    cand_rel_logit: jax.Array,
    cand_category: jax.Array,
    cand_partner: jax.Array,
    cand_mask: jax.Array,
    list_len: int,
    beam_width: int = DEFAULT_BEAM_WIDTH,
    params: TrueModelParams = TrueModelParams(),
) -> tuple[jax.Array, jax.Array]:
    """Beam search for the best list under the true model.

    At each position every beam is extended by every unused valid candidate; the incremental
    reward p_t of the new item depends only on the beam's prefix. The W best extensions are kept.
    Beams are distinct ordered prefixes: at the first position only one (empty) beam is live, and
    later extensions of distinct prefixes are distinct. Each row needs at least L valid candidates.

    Args:
        cand_rel_logit: [B, N] true relevance logits of the candidates.
        cand_category: [B, N] int candidate categories.
        cand_partner: [B, N] int partner category of each candidate's category.
        cand_mask: [B, N] bool, True for valid candidates.
        list_len: L, static.
        beam_width: W, static (the project's oracle uses DEFAULT_BEAM_WIDTH = 50).
        params: the true-model scalars, static.

    Returns:
        lists: [B, L] int32 indices into N of the best list found.
        rewards: [B] float32 its expected reward.
    """
    rel = jnp.asarray(cand_rel_logit, jnp.float32)
    category = jnp.asarray(cand_category)
    partner = jnp.asarray(cand_partner)
    mask = jnp.asarray(cand_mask, bool)
    batch, num_cands = rel.shape
    # same_category[b, k, j]: candidates k and j share a category.
    same_category = category[:, :, None] == category[:, None, :]
    # completes[b, k, j]: candidate k placed above candidate j complements it.
    completes = category[:, :, None] == partner[:, None, :]

    scores = jnp.full((batch, beam_width), -jnp.inf, jnp.float32).at[:, 0].set(0.0)
    beam_lists = jnp.zeros((batch, beam_width, list_len), jnp.int32)
    used = jnp.zeros((batch, beam_width, num_cands), bool)
    n_same = jnp.zeros((batch, beam_width, num_cands), jnp.float32)
    comp = jnp.zeros((batch, beam_width, num_cands), bool)

    def step(t, state):
        scores, beam_lists, used, n_same, comp = state
        exam = (t + 1.0) ** (-params.examination_power)
        logit = (
            rel[:, None, :]
            - params.redundancy_penalty * n_same
            + params.complement_bonus * comp.astype(jnp.float32)
        )
        valid = mask[:, None, :] & ~used & jnp.isfinite(scores)[:, :, None]
        extended = jnp.where(valid, scores[:, :, None] + exam * jax.nn.sigmoid(logit), -jnp.inf)
        top_scores, top_index = jax.lax.top_k(extended.reshape(batch, -1), beam_width)
        parent = top_index // num_cands
        item = (top_index % num_cands).astype(jnp.int32)

        def from_parent(values: jax.Array) -> jax.Array:
            return jnp.take_along_axis(values, parent[:, :, None], axis=1)

        def rows_of_item(pairwise: jax.Array) -> jax.Array:
            return jnp.take_along_axis(pairwise, item[:, :, None], axis=1)

        beam_lists = from_parent(beam_lists).at[:, :, t].set(item)
        used = from_parent(used) | jax.nn.one_hot(item, num_cands, dtype=bool)
        n_same = from_parent(n_same) + rows_of_item(same_category).astype(jnp.float32)
        comp = from_parent(comp) | rows_of_item(completes)
        return top_scores, beam_lists, used, n_same, comp

    scores, beam_lists, *_ = jax.lax.fori_loop(
        0, list_len, step, (scores, beam_lists, used, n_same, comp)
    )
    best = jnp.argmax(scores, axis=1)
    lists = jnp.take_along_axis(beam_lists, best[:, None, None], axis=1)[:, 0]
    rewards = jnp.take_along_axis(scores, best[:, None], axis=1)[:, 0]
    return lists, rewards


def greedy_true(
    cand_rel_logit: jax.Array,
    cand_category: jax.Array,
    cand_partner: jax.Array,
    cand_mask: jax.Array,
    list_len: int,
    params: TrueModelParams = TrueModelParams(),
) -> tuple[jax.Array, jax.Array]:
    """Greedy list under the true model (beam search of width 1).

    Args:
        cand_rel_logit: [B, N] true relevance logits of the candidates.
        cand_category: [B, N] int candidate categories.
        cand_partner: [B, N] int partner category of each candidate's category.
        cand_mask: [B, N] bool, True for valid candidates.
        list_len: L.
        params: the true-model scalars.

    Returns:
        lists: [B, L] int32 indices into N; rewards: [B] float32 expected rewards.
    """
    return oracle_beam_search(
        cand_rel_logit, cand_category, cand_partner, cand_mask, list_len, 1, params
    )


@functools.partial(jax.jit, static_argnames=("list_len",))
def relevance_sort_lists(
    cand_rel_logit: jax.Array, cand_mask: jax.Array, list_len: int
) -> jax.Array:
    """Top-L valid candidates by true relevance logit, in decreasing order.

    Args:
        cand_rel_logit: [B, N] true relevance logits of the candidates.
        cand_mask: [B, N] bool, True for valid candidates.
        list_len: L, static.

    Returns:
        [B, L] int32 indices into N.
    """
    masked = jnp.where(cand_mask, jnp.asarray(cand_rel_logit, jnp.float32), -jnp.inf)
    return jax.lax.top_k(masked, list_len)[1].astype(jnp.int32)


def simulate_logs(world: World, cfg: EnvConfig) -> dict[str, np.ndarray]:
    """Logs of the noisy-relevance logging policy with feedback from the true model.

    For each user, requests_per_user chronological requests are generated. In each request the
    policy ranks the items the user has not been shown yet by relevance_logit / T + Gumbel noise
    and shows the top L in score order (a Plackett-Luce sample of softmax(relevance / T) without
    replacement). Labels are Bernoulli draws of the true click probabilities of the list as shown.
    Rows are ordered by user, then by request index. Deterministic from cfg.seed.

    Args:
        world: the generated world.
        cfg: the configuration the world was made from.

    Returns:
        user: [R] int32; request_index: [R] int32 (chronological, 0-based per user);
        items: [R, L] int32 logged lists; labels: [R, L] int8 clicks;
        rel_logit: [R, L] float32 true relevance logits of the logged items.
    """
    cfg.validate()
    rng = np.random.default_rng([cfg.seed, 1])
    num_users, num_items, list_len = cfg.num_users, cfg.num_items, cfg.list_len
    num_requests = cfg.requests_per_user
    users = np.arange(num_users)
    all_items = np.broadcast_to(np.arange(num_items), (num_users, num_items))
    rel = relevance_logits(world, cfg, users, all_items)
    policy_logit = rel / cfg.logging_temperature
    seen = np.zeros((num_users, num_items), dtype=bool)
    shown = np.empty((num_users, num_requests, list_len), dtype=np.int32)
    for request in range(num_requests):
        score = policy_logit + rng.gumbel(size=(num_users, num_items)).astype(np.float32)
        score[seen] = -np.inf
        top = np.argpartition(-score, list_len - 1, axis=1)[:, :list_len]
        top_score = np.take_along_axis(score, top, axis=1)
        ordered = np.take_along_axis(top, np.argsort(-top_score, axis=1), axis=1)
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
    }

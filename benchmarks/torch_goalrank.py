"""PyTorch eager mirror of the paper-faithful GoalRank generator step, for benchmarking only.

Layer for layer the same computation as the Flax modules in ``goalrank_jax.models``
(:class:`PrefixGenerator`, :class:`PointwiseRewardModel`) and the same on-policy train step as
``goalrank_jax.train_step.goalrank_train_step``: K lists of L per request sampled without
replacement by L sequential steps (each a full re-encoding of the N candidates conditioned on the
bag of chosen items, no dropout), DCG list rewards from the frozen reward model, z-normalised
group advantages -> softmax reference policy, ``w_R * L_GRO + w_G * L_sup`` with dropout,
backward, global-norm clipping and AdamW. :func:`load_flax_params` copies a Flax params pytree
into the torch modules, so the two implementations can be checked against each other
(``benchmarks/torch_vs_jax.py``, ``tests/torch_agreement_test.py``).

Flax conventions reproduced here: LayerNorm epsilon 1e-6; ``nn.gelu`` is the tanh approximation;
attention kernels [D, H, Dh] (query, key, value) and [H, Dh, D] (out); masked attention logits set
to the most negative float; attention-weight dropout with one mask shared by all sequences and
heads (Flax's ``broadcast_dropout``). Dropout follows the torch idiom: ``module.train()`` enables
it, ``module.eval()`` disables it.

Scope: the on-policy group construction, the pointwise reward model, float32. Benchmark code, not
part of the library, which needs no torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6
GROUP_STD_EPS = 1e-6
_NEG = -1e9


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block x + Attn(LN(x)), then x + FF(LN(x)); x [M, S, D], mask [M, S] bool."""

    def __init__(self, dim: int, num_heads: int, ff_dim: int, dropout: float, causal: bool):
        super().__init__()
        self.num_heads, self.dropout, self.causal = num_heads, dropout, causal
        self.attn_norm = _layer_norm(dim)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.ff_norm = _layer_norm(dim)
        self.ff_in = nn.Linear(dim, ff_dim)
        self.ff_out = nn.Linear(ff_dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # [M, H, S, Dh]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        seq_len = x.shape[1]
        allowed = (mask[:, :, None] & mask[:, None, :])[:, None]  # [M, 1, S, S]
        if self.causal:
            allowed = allowed & torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
        h = self.attn_norm(x)
        query = self._heads(self.query(h))
        query = query / math.sqrt(query.shape[-1])
        key, value = self._heads(self.key(h)), self._heads(self.value(h))
        logits = query @ key.transpose(-1, -2)
        logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
        weights = logits.softmax(-1)
        if self.training and self.dropout > 0:
            keep = torch.rand(seq_len, seq_len, device=x.device) >= self.dropout
            weights = weights * (keep.to(weights.dtype) / (1.0 - self.dropout))
        attended = (weights @ value).transpose(1, 2).flatten(-2)  # [M, S, H * Dh]
        x = x + F.dropout(self.out(attended), self.dropout, self.training)
        h = self.ff_out(_gelu(self.ff_in(self.ff_norm(x))))
        return x + F.dropout(h, self.dropout, self.training)


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerBlock` and a final LayerNorm over x [..., S, D]."""

    def __init__(self, dim, num_layers, num_heads, ff_dim, dropout, causal):
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, ff_dim, dropout, causal) for _ in range(num_layers)
        )
        self.final_norm = _layer_norm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-2]
        x = x.reshape((-1,) + x.shape[-2:])
        mask = mask.expand(lead + mask.shape[-1:]).reshape(x.shape[:2])
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x).reshape(lead + x.shape[-2:])


class RequestEncoder(nn.Module):
    """User state U [B, D] and candidate inputs MLP(LN(W_u U) + LN(W_i x_i)) + slot_i [B, N, D]."""

    def __init__(self, num_users, num_items, num_candidates, dim, use_user_id, item_bias):
        super().__init__()
        self.item_embed = nn.Embedding(num_items, dim)
        self.label_embed = nn.Embedding(2, dim)
        self.user_embed = nn.Embedding(num_users, dim) if use_user_id else None
        self.user_mlp_in = nn.Linear((3 if use_user_id else 2) * dim, dim)
        self.user_mlp_out = nn.Linear(dim, dim)
        self.user_proj = nn.Linear(dim, dim)
        self.user_norm = _layer_norm(dim)
        self.item_proj = nn.Linear(dim, dim)
        self.item_norm = _layer_norm(dim)
        self.cand_mlp_in = nn.Linear(dim, dim)
        self.cand_mlp_out = nn.Linear(dim, dim)
        self.slot_embed = nn.Embedding(num_candidates, dim)
        self.item_bias = nn.Embedding(num_items, 1) if item_bias else None

    def forward(self, batch: dict[str, torch.Tensor]):
        """Returns (user [B, D], candidate_inputs [B, N, D], items [B, N, D], item_bias [B, N])."""
        hist_mask = batch["history_mask"]
        hist_labels = torch.where(hist_mask, batch["history_labels"], 0)
        hist = self.item_embed(torch.where(hist_mask, batch["history_items"], 0))
        hist = hist + self.label_embed(hist_labels)
        weights = hist_mask.to(hist.dtype)[..., None]
        pooled = (hist * weights).sum(-2) / weights.sum(-2).clamp_min(1.0)
        positive = weights * (hist_labels[..., None] > 0)
        pooled_pos = (hist * positive).sum(-2) / positive.sum(-2).clamp_min(1.0)
        parts = [pooled, pooled_pos]
        if self.user_embed is not None:
            parts.append(self.user_embed(batch["user_id"]))
        user = self.user_mlp_out(_gelu(self.user_mlp_in(torch.cat(parts, -1))))

        cand_mask = batch["cand_mask"]
        cand_items = torch.where(cand_mask, batch["cand_items"], 0)
        items = self.item_embed(cand_items)
        h = self.user_norm(self.user_proj(user))[:, None, :] + self.item_norm(self.item_proj(items))
        h = self.cand_mlp_out(_gelu(self.cand_mlp_in(h)))
        if self.item_bias is None:
            bias = torch.zeros(cand_mask.shape, dtype=items.dtype)
        else:
            bias = self.item_bias(cand_items)[..., 0]
        return user, h + self.slot_embed.weight, items, bias


class AffinityHead(nn.Module):
    """logit_i = Dense(h_i) + b_i + <W_a U, x_i> / sqrt(D) (the last term optional)."""

    def __init__(self, dim: int, bilinear: bool):
        super().__init__()
        self.linear = nn.Linear(dim, 1)
        self.user_query = nn.Linear(dim, dim) if bilinear else None

    def forward(self, hidden, user, items, item_bias):
        """hidden [B, M..., N, D], user [B, D], items [B, N, D], bias [B, N] -> [B, M..., N]."""
        logits = self.linear(hidden)[..., 0]
        affinity = item_bias
        if self.user_query is not None:
            query = self.user_query(user)
            affinity = affinity + (query[:, None, :] * items).sum(-1) / math.sqrt(items.shape[-1])
        extra = logits.dim() - affinity.dim()
        return logits + affinity.reshape(affinity.shape[:1] + (1,) * extra + affinity.shape[1:])


class GeneratorContext(NamedTuple):
    candidate_inputs: torch.Tensor
    chosen_proj: torch.Tensor
    cand_mask: torch.Tensor
    user: torch.Tensor
    items: torch.Tensor
    item_bias: torch.Tensor


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The constructor arguments shared by both models (those of ``configs.ModelConfig``)."""

    num_users: int
    num_items: int
    num_candidates: int
    embed_dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    ff_dim: int = 128
    dropout: float = 0.1
    causal: bool = False
    use_user_id: bool = True
    bilinear_head: bool = True
    item_bias: bool = True

    @classmethod
    def from_model_config(cls, model, num_users, num_items, num_candidates) -> Sizes:
        fields = {f.name for f in dataclasses.fields(cls)} - {"num_users", "num_items"}
        values = {name: getattr(model, name) for name in fields - {"num_candidates"}}
        return cls(num_users, num_items, num_candidates, **values)


def _backbone(s: Sizes) -> tuple[RequestEncoder, TransformerEncoder, AffinityHead]:
    dim = s.embed_dim
    return (
        RequestEncoder(s.num_users, s.num_items, s.num_candidates, dim, s.use_user_id, s.item_bias),
        TransformerEncoder(dim, s.num_layers, s.num_heads, s.ff_dim, s.dropout, s.causal),
        AffinityHead(dim, s.bilinear_head),
    )


class PrefixGenerator(nn.Module):
    """Mirror of ``goalrank_jax.models.PrefixGenerator``."""

    def __init__(self, sizes: Sizes):
        super().__init__()
        self.request_encoder, self.encoder, self.head = _backbone(sizes)
        self.chosen_proj = nn.Linear(sizes.embed_dim, sizes.embed_dim)
        self.chosen_norm = _layer_norm(sizes.embed_dim)

    def encode(self, batch: dict[str, torch.Tensor]) -> GeneratorContext:
        user, inputs, items, bias = self.request_encoder(batch)
        return GeneratorContext(
            inputs, self.chosen_proj(items), batch["cand_mask"], user, items, bias
        )

    def step_logits(self, context: GeneratorContext, chosen: torch.Tensor) -> torch.Tensor:
        """chosen [B, M..., N] multi-hot prefix -> unmasked next-item logits [B, M..., N]."""
        lead = chosen.shape[:-1]
        flat = chosen.reshape(chosen.shape[0], -1, chosen.shape[-1]).to(context.chosen_proj.dtype)
        bag = self.chosen_norm(flat @ context.chosen_proj).reshape(lead + (1, -1))
        expand = (slice(None),) + (None,) * (chosen.dim() - 2)
        inputs = context.candidate_inputs[expand] + bag
        hidden = self.encoder(inputs, context.cand_mask[expand])
        return self.head(hidden, context.user, context.items, context.item_bias)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """First-step logits [B, N] (empty prefix)."""
        context = self.encode(batch)
        return self.step_logits(context, torch.zeros(batch["cand_mask"].shape))


class PointwiseRewardModel(nn.Module):
    """Mirror of ``goalrank_jax.models.PointwiseRewardModel``: candidate logits [B, N]."""

    def __init__(self, sizes: Sizes):
        super().__init__()
        self.request_encoder, self.encoder, self.head = _backbone(sizes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        user, inputs, items, bias = self.request_encoder(batch)
        return self.head(self.encoder(inputs, batch["cand_mask"]), user, items, bias)


_SCOPES = {
    "RequestEncoder_0": "request_encoder",
    "TransformerEncoder_0": "encoder",
    "Dense_0": "ff_in",
    "Dense_1": "ff_out",
    "LayerNorm_1": "ff_norm",
}


def _torch_name(path: tuple[str, ...]) -> str:
    names = []
    for i, scope in enumerate(path[:-1]):
        if scope.startswith("TransformerBlock_"):
            names += ["blocks", scope.split("_")[-1]]
        elif scope == "LayerNorm_0":
            names.append(
                "attn_norm" if path[i - 1].startswith("TransformerBlock_") else "final_norm"
            )
        elif scope == "MultiHeadDotProductAttention_0":
            continue  # query / key / value / out are attributes of the block itself
        else:
            names.append(_SCOPES.get(scope, scope))
    names.append(
        {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(path[-1], path[-1])
    )
    return ".".join(names)


def _torch_value(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel":
        # Dense [in, out]; attention in-projections [D, H, Dh]; attention out [H, Dh, D].
        matrix = (
            value.reshape(-1, value.shape[-1])
            if path[-2] == "out"
            else value.reshape(value.shape[0], -1)
        )
        return matrix.T
    if path[-1] == "bias":
        return value.reshape(-1)
    return value


def flax_to_torch_state(params) -> dict[str, torch.Tensor]:
    """Flax params pytree (``{'params': ...}`` or its inside, numpy-convertible leaves) -> a
    torch ``state_dict`` of the mirror module. Also maps gradient pytrees."""
    tree = params.get("params", params)
    state = {}

    def visit(node, path):
        if isinstance(node, Mapping):
            for name, child in node.items():
                visit(child, path + (name,))
        else:
            value = _torch_value(path, np.asarray(node, dtype=np.float32))
            state[_torch_name(path)] = torch.tensor(value)

    visit(tree, ())
    return state


def load_flax_params(module: nn.Module, params) -> None:
    """Copies Flax params into ``module``; every torch parameter must be matched exactly."""
    module.load_state_dict(flax_to_torch_state(params), strict=True)


def batch_to_torch(batch: dict) -> dict[str, torch.Tensor]:
    """numpy / jax arrays -> torch tensors (integers as int64 for embedding lookups)."""
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.integer):
            value = value.astype(np.int64)
        out[name] = torch.tensor(value)
    return out


def mask_logits(logits, cand_mask, chosen):
    """Sets invalid (cand_mask [B, N] False) or already chosen candidates to -1e9.

    logits, chosen: [B, M..., N]. -1e9 rather than -inf, as in ``sampling.mask_logits``.
    """
    valid = cand_mask.reshape(cand_mask.shape[:1] + (1,) * (logits.dim() - 2) + cand_mask.shape[1:])
    return torch.where(valid & ~chosen.bool(), logits, _NEG)


@torch.no_grad()
def sample_group(generator, batch, list_len, group_size, temperature=1.0, rng=None):
    """[B, K, L] int64 lists: L sequential steps over chosen [B, K, N], without dropout."""
    was_training = generator.training
    generator.eval()
    context = generator.encode(batch)
    mask = batch["cand_mask"]
    chosen = torch.zeros(mask.shape[0], group_size, mask.shape[1])
    items = []
    for _ in range(list_len):
        logits = mask_logits(generator.step_logits(context, chosen) / temperature, mask, chosen)
        probs = logits.softmax(-1).reshape(-1, mask.shape[1])
        item = torch.multinomial(probs, 1, generator=rng).reshape(chosen.shape[:2])
        chosen.scatter_(-1, item[..., None], 1.0)
        items.append(item)
    generator.train(was_training)
    return torch.stack(items, -1)


def prefix_multi_hot(lists, num_candidates):
    """lists [..., L] -> [..., L, N]: row t is the multi-hot of lists[..., :t]."""
    one_hot = F.one_hot(lists, num_candidates).to(torch.float32)
    return one_hot.cumsum(-2) - one_hot


def log_prob_and_first_logits(generator, batch, lists):
    """(log pi(lists) [B, K], first-step logits [B, N]) from one teacher-forced pass."""
    mask = batch["cand_mask"]
    chosen = prefix_multi_hot(lists, mask.shape[-1])
    logits = generator.step_logits(generator.encode(batch), chosen)
    log_probs = mask_logits(logits, mask, chosen).log_softmax(-1)
    log_prob = log_probs.gather(-1, lists[..., None])[..., 0].sum(-1)
    return log_prob, logits.reshape(logits.shape[0], -1, logits.shape[-1])[:, 0]


def dcg_list_reward(scores, lists):
    """scores [B, N] logits, lists [B, K, L] -> sum_t sigmoid(s(l_t)) / log2(t + 1) [B, K]."""
    picked = scores.gather(1, lists.reshape(lists.shape[0], -1)).reshape(lists.shape)
    discounts = 1.0 / torch.log2(torch.arange(2, lists.shape[-1] + 2, dtype=scores.dtype))
    return (picked.sigmoid() * discounts).sum(-1)


def group_relative_targets(rewards, tau_ref=1.0):
    """rewards [B, K] -> softmax_k(A_k / tau_ref), A = z-score with ddof=1; flat groups A = 0."""
    centred = rewards - rewards.mean(-1, keepdim=True)
    std = ((centred**2).sum(-1, keepdim=True) / (rewards.shape[-1] - 1)).sqrt()
    flat = rewards.amax(-1, keepdim=True) == rewards.amin(-1, keepdim=True)
    advantages = torch.where(flat, 0.0, centred / (std + GROUP_STD_EPS))
    return (advantages / tau_ref).softmax(-1)


def gro_loss(log_probs, targets, loss_form="log_prob"):
    per_list = log_probs if loss_form == "log_prob" else log_probs.exp()
    return -(targets * per_list).sum(-1).mean()


def supervised_bce(logits, labels, cand_mask):
    per_cand = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    mask = cand_mask.to(logits.dtype)
    return ((per_cand * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)).mean()


def goalrank_loss(generator, reward_model, batch, lists, gro):
    """(total, parts) of w_R * L_GRO + w_G * L_sup on fixed lists; dropout as the modules' mode."""
    with torch.no_grad():
        rewards = dcg_list_reward(reward_model(batch), lists)
        targets = group_relative_targets(rewards, gro.tau_ref)
    log_probs, first_logits = log_prob_and_first_logits(generator, batch, lists)
    gro_part = gro_loss(log_probs, targets, gro.loss_form)
    sup_part = supervised_bce(first_logits, batch["cand_labels"], batch["cand_mask"])
    total = gro.reward_weight * gro_part + gro.supervised_weight * sup_part
    parts = {"gro_loss": gro_part, "sup_loss": sup_part, "log_probs": log_probs}
    return total, {**parts, "rewards": rewards, "first_logits": first_logits}


def make_optimizer(params, optim):
    """AdamW (decoupled decay, as optax.adamw) and an optional staircase step decay."""
    optimizer = torch.optim.AdamW(
        params,
        lr=optim.learning_rate,
        betas=(optim.b1, optim.b2),
        eps=optim.eps,
        weight_decay=optim.weight_decay,
        fused=True,
    )
    scheduler = None
    if optim.decay_every:
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, optim.decay_every, optim.decay_factor
        )
    return optimizer, scheduler


@dataclasses.dataclass
class GoalRankStep:
    """One on-policy GoalRank update: sample (no dropout), reward, loss (dropout), clip, AdamW.

    Updates with a non-finite gradient norm are skipped, as in the JAX step.
    """

    generator: PrefixGenerator
    reward_model: PointwiseRewardModel
    list_len: int
    gro: object
    optim: object
    rng: torch.Generator | None = None

    def __post_init__(self):
        self.reward_model.eval().requires_grad_(False)
        self.optimizer, self.scheduler = make_optimizer(self.generator.parameters(), self.optim)

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        gro = self.gro
        lists = sample_group(
            self.generator, batch, self.list_len, gro.group_size, gro.sample_temperature, self.rng
        )
        self.generator.train()
        loss, parts = goalrank_loss(self.generator, self.reward_model, batch, lists, gro)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.generator.parameters(), self.optim.clip_norm)
        if torch.isfinite(grad_norm):
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return {"loss": loss.detach(), "grad_norm": grad_norm, "rewards": parts["rewards"]}

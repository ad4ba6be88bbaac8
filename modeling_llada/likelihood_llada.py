"""LLaDA's conditional log-likelihood bound (arXiv 2502.09992, eq. 6; REFERENCE.md section 6).

    log p(answer | prompt) >= E_{l ~ U{1..L}} [ (L / l) * E_{l of the L answer tokens masked} sum_masked log p ]

The prompt is never masked. `exact=True` enumerates every mask subset (short answers); otherwise a Monte-Carlo
estimate over `mc_num` masked copies with two variance reductions over the reference estimator: the mask counts l are
stratified over all `mc_num` samples (not per batch), and samples with (nearly) the same l mask the arcs of one
random cyclic order of the answer, so that every answer position is masked equally often. Each sample remains an
unbiased draw, so the estimate is unbiased. The noise of a pair depends only on (seed, prompt, answer): batching
pairs of different lengths gives the values of one pair at a time.

This file travels with every checkpoint (trust_remote_code): it imports only torch and its siblings.
"""

import math
import numbers
from dataclasses import dataclass
from itertools import combinations

import torch

from .generation_llada import counter_uniform, mix32

_U32 = 0xFFFFFFFF
MAX_EXACT_ANSWER_LENGTH = 12  # 2**12 - 1 = 4095 forward rows per pair


@dataclass
class LikelihoodEstimate:
    """An estimate of log p(answer | prompt) (a lower bound, in nats) and its standard error (0 when exact)."""

    log_likelihood: float
    std_error: float
    answer_length: int

    @property
    def nll_per_token(self) -> float:
        return -self.log_likelihood / max(self.answer_length, 1)


def _as_list(ids, name: str) -> list[int]:
    """Token ids as a list of ints; floats, booleans and other non-integers are refused, never truncated."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"Pass 1-D token id sequences (one prompt, one answer), got {name} of shape "
                             f"{tuple(ids.shape)}.")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer token ids, got a tensor of dtype {ids.dtype}; pass the "
                             "tokenizer's ids (torch.long).")
        return ids.tolist()
    values = list(ids)
    bad = [value for value in values if not isinstance(value, numbers.Integral) or isinstance(value, bool)]
    if bad:
        raise ValueError(f"{name} must hold integer token ids, got {bad[:4]!r}; pass the tokenizer's ids.")
    return [int(value) for value in values]


def _pair_seed(seed: int, prompt: list[int], answer: list[int]) -> int:
    return hash((seed, len(prompt), *prompt, -1, *answer)) & _U32


def monte_carlo_masks(answer_length: int, mc_num: int, seed: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The `mc_num` answer masks of one pair: (mc_num, L) bool, and the mask counts l (mc_num,).

    l_i are evenly spaced over [1, L] from a random offset (stratified over all samples); consecutive samples share a
    random cyclic order of the answer positions and mask its arcs starting at successive offsets.
    """
    length = answer_length
    seeds = torch.tensor([seed], dtype=torch.long, device=device)
    offset = counter_uniform(seeds, 0, torch.zeros(1, 1, dtype=torch.long, device=device))[0, 0]
    # stratified counts: (offset + i * L / n) mod L, mapped to 1..L
    counts = (torch.floor(offset * length + torch.arange(mc_num, device=device) * (length / mc_num)) % length + 1)
    counts = counts.long().sort().values
    # one random cyclic order per group of L consecutive samples, arcs starting at successive shifts
    groups = torch.arange(mc_num, device=device) // length
    group_seeds = mix32((groups + seed * 0x9E37) & _U32)
    positions = torch.arange(length, device=device)[None].expand(mc_num, -1)
    order = counter_uniform(group_seeds, 1, positions).argsort(dim=-1)  # (n, L) a permutation per group
    shift = torch.arange(mc_num, device=device) % length
    rank_in_arc = (torch.arange(length, device=device)[None] - shift[:, None]) % length  # rank of slot in the arc
    masked_slots = rank_in_arc < counts[:, None]
    masks = torch.zeros(mc_num, length, dtype=torch.bool, device=device).scatter(1, order, masked_slots)
    return masks, counts


def exact_masks(answer_length: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every non-empty subset of the answer positions, (2**L - 1, L) bool, and each subset's weight
    1 / (l * C(L, l)) so that sum(weight * sum_masked log p) is the bound exactly."""
    if answer_length > MAX_EXACT_ANSWER_LENGTH:
        raise ValueError(
            f"exact=True enumerates 2**L - 1 mask subsets; L={answer_length} exceeds {MAX_EXACT_ANSWER_LENGTH}. "
            "Use the Monte-Carlo estimate (exact=False)."
        )
    rows, weights = [], []
    for count in range(1, answer_length + 1):
        weight = 1.0 / (count * math.comb(answer_length, count))
        for subset in combinations(range(answer_length), count):
            row = [False] * answer_length
            for index in subset:
                row[index] = True
            rows.append(row)
            weights.append(weight)
    return torch.tensor(rows, dtype=torch.bool, device=device), torch.tensor(weights, dtype=torch.float64, device=device)


def _standard_error(samples: torch.Tensor, group_size: int) -> float:
    """Standard error of the mean of `samples` under the stratified, balanced design.

    The units are the groups of `group_size` consecutive samples (one cyclic order each); groups are sorted by mask
    count, so the variance is estimated from successive differences of group means (as for systematic samples),
    which leaves out the between-strata spread that the design removes. The plain formula would overstate it.
    """
    groups = samples.numel() // group_size
    if groups >= 3:
        means = samples[: groups * group_size].view(groups, group_size).mean(-1)
        variance = means.diff().pow(2).mean() / 2
        return float(torch.sqrt(variance / groups))
    return float(samples.std() / math.sqrt(samples.numel())) if samples.numel() > 1 else float("nan")


class LLaDALikelihoodMixin:
    """`log_likelihood` and `perplexity` for LLaDA models."""

    @torch.no_grad()
    def log_likelihood(
        self,
        prompt_ids,
        answer_ids=None,
        *,
        mc_num: int = 128,
        batch_size: int = 32,
        cfg_scale: float = 0.0,
        exact: bool = False,
        seed: int = 0,
    ) -> LikelihoodEstimate | list[LikelihoodEstimate]:
        """Lower bound on log p(answer | prompt) in nats, with its standard error.

        Args:
            prompt_ids, answer_ids: 1-D id sequences (lists or tensors) for one pair, or `prompt_ids` a list of
                (prompt, answer) pairs and `answer_ids` None; pairs of different lengths are batched together.
                An empty prompt gives the unconditional bound of the answer.
            mc_num: Monte-Carlo samples per pair (the reference uses 128; 1 suffices for one-token answers, which
                are then exact).
            batch_size: rows per forward pass.
            cfg_scale: classifier-free guidance weight, as in generation (prompt masked in the unconditional rows).
            exact: enumerate every mask subset (answers up to 12 tokens); the standard error is then 0.
            seed: the estimate of a pair depends only on (seed, prompt, answer).
        Returns:
            A [`LikelihoodEstimate`] for one pair, a list for a list of pairs.
        """
        single = answer_ids is not None
        pairs = [(prompt_ids, answer_ids)] if single else list(prompt_ids)
        pairs = [(_as_list(p, "prompt_ids"), _as_list(a, "answer_ids")) for p, a in pairs]
        if mc_num < 1 or batch_size < 1:
            raise ValueError(f"mc_num and batch_size must be >= 1, got {mc_num} and {batch_size}.")
        if not math.isfinite(cfg_scale) or cfg_scale < 0:
            raise ValueError(f"cfg_scale must be a finite number >= 0, got {cfg_scale}.")
        if self.config.mask_token_id is None:
            raise ValueError("The model config has no `mask_token_id`; set it to the id of the [MASK] token "
                             "(model.config.mask_token_id = ...) before estimating likelihoods.")
        vocab = self.get_input_embeddings().weight.shape[0]
        limit = getattr(self.config, "max_sequence_length", None)
        for prompt, answer in pairs:
            if not answer:
                raise ValueError("Every answer needs at least one token.")
            if self.config.mask_token_id in answer or self.config.mask_token_id in prompt:
                raise ValueError(f"Prompt and answer must not contain the mask token id ({self.config.mask_token_id}).")
            outside = sorted({i for i in prompt + answer if not 0 <= i < vocab})
            if outside:
                raise ValueError(
                    f"Token ids {outside[:8]} are outside the model's vocabulary [0, {vocab}); check that the "
                    "tokenizer matches this model."
                )
            if limit is not None and len(prompt) + len(answer) > limit:
                raise ValueError(
                    f"A prompt of {len(prompt)} and an answer of {len(answer)} tokens make {len(prompt) + len(answer)} "
                    f"tokens, more than the model's max_sequence_length ({limit}); shorten the prompt (keep its end)."
                )
        device = self.get_input_embeddings().weight.device

        # Rows of (sequence, answer mask, weight, pair index) for every pair; then one pass in chunks.
        sequences, masks, weights, owners, prompt_lengths = [], [], [], [], []
        for index, (prompt, answer) in enumerate(pairs):
            if exact or len(answer) == 1:
                answer_masks, subset_weights = exact_masks(len(answer), device)
            else:
                answer_masks, counts = monte_carlo_masks(len(answer), mc_num, _pair_seed(seed, prompt, answer), device)
                subset_weights = (len(answer) / counts.double()) / mc_num
            rows = answer_masks.shape[0]
            sequences.append(torch.tensor(prompt + answer, device=device).expand(rows, -1))
            masks.append(torch.cat([answer_masks.new_zeros(rows, len(prompt)), answer_masks], dim=1))
            weights.append(subset_weights)
            owners.append(torch.full((rows,), index, device=device))
            prompt_lengths.append(torch.full((rows,), len(prompt), device=device))
        total_rows = sum(s.shape[0] for s in sequences)
        longest = max(s.shape[1] for s in sequences)
        pad = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        ids = torch.full((total_rows, longest), pad, dtype=torch.long, device=device)
        masked = torch.zeros(total_rows, longest, dtype=torch.bool, device=device)
        attention = torch.zeros(total_rows, longest, dtype=torch.long, device=device)
        start = 0
        for sequence, mask in zip(sequences, masks):  # per pair, not per row or token
            rows, length = sequence.shape
            ids[start : start + rows, :length] = sequence
            masked[start : start + rows, :length] = mask
            attention[start : start + rows, :length] = 1
            start += rows
        weights = torch.cat(weights)
        owners = torch.cat(owners)
        prompt_lengths = torch.cat(prompt_lengths)

        row_log_probs = torch.empty(total_rows, dtype=torch.float64, device=device)
        for chunk in range(0, total_rows, batch_size):
            part = slice(chunk, chunk + batch_size)
            row_log_probs[part] = self._masked_log_probs(
                ids[part], masked[part], attention[part], prompt_lengths[part], cfg_scale
            )
        contributions = row_log_probs * weights  # sums to the estimate per pair
        estimates = torch.zeros(len(pairs), dtype=torch.float64, device=device).index_add_(0, owners, contributions)
        results = []
        for index, (prompt, answer) in enumerate(pairs):
            rows = owners == index
            if exact or len(answer) == 1:
                error = 0.0
            else:
                samples = row_log_probs[rows] * weights[rows] * mc_num  # each sample's (L / l) * sum log p
                error = _standard_error(samples, len(answer))
            results.append(LikelihoodEstimate(float(estimates[index]), error, len(answer)))
        return results[0] if single else results

    def _masked_log_probs(
        self,
        ids: torch.Tensor,
        masked: torch.Tensor,
        attention: torch.Tensor,
        prompt_lengths: torch.Tensor,
        cfg_scale: float,
    ) -> torch.Tensor:
        """Per row, the sum of log p(clean token) over its masked positions, from one forward pass (float64)."""
        mask_id = self.config.mask_token_id
        noisy = ids.masked_fill(masked, mask_id)
        attention_mask = None if bool(attention.all()) else attention
        if cfg_scale > 0:
            prompt = torch.arange(ids.shape[1], device=ids.device)[None] < prompt_lengths[:, None]
            unconditional = noisy.masked_fill(prompt, mask_id)
            both_mask = torch.cat([attention_mask, attention_mask]) if attention_mask is not None else None
            logits = self(torch.cat([noisy, unconditional]), attention_mask=both_mask,
                          logits_to_keep=torch.cat([masked, masked]), validate_inputs=False, return_dict=True).logits
            cond, uncond = logits.float().chunk(2)
            logits = uncond + (cfg_scale + 1) * (cond - uncond)
        else:
            logits = self(noisy, attention_mask=attention_mask, logits_to_keep=masked, validate_inputs=False,
                          return_dict=True).logits
        log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[masked][:, None]).squeeze(-1)
        rows = masked.nonzero()[:, 0]
        return torch.zeros(ids.shape[0], dtype=torch.float64, device=ids.device).index_add_(0, rows, log_probs.double())

    @torch.no_grad()
    def perplexity(self, ids, *, mc_num: int = 128, batch_size: int = 32, seed: int = 0) -> float:
        """exp of the per-token bound on the negative log-likelihood of a text (the unconditional case): an upper
        bound on the model's perplexity of `ids` (1-D ids, or a list of them: one value over all their tokens)."""
        texts = [ids] if isinstance(ids, torch.Tensor) and ids.dim() == 1 or (ids and isinstance(ids[0], int)) else ids
        estimates = self.log_likelihood([([], text) for text in texts], mc_num=mc_num, batch_size=batch_size,
                                        seed=seed)
        total = sum(e.log_likelihood for e in estimates)
        tokens = sum(e.answer_length for e in estimates)
        return math.exp(-total / tokens)


__all__ = ["LLaDALikelihoodMixin", "LikelihoodEstimate", "exact_masks", "monte_carlo_masks"]

"""LLaDA's conditional log-likelihood bound (arXiv 2502.09992, eq. 6; REFERENCE.md section 6).

    log p(answer | prompt) >= E_{l ~ U{1..L}} [ (L / l) * E_{l of the L answer tokens masked} sum_masked log p ]

The prompt is never masked. `exact=True` enumerates every mask subset (short answers); otherwise a Monte-Carlo
estimate over `mc_num` masked copies with two variance reductions over the reference estimator: the mask counts l are
stratified over all `mc_num` samples (not per batch), and samples with (nearly) the same l mask the arcs of one
random cyclic order of the answer, so that every answer position is masked equally often. Each sample remains an
unbiased draw, so the estimate is unbiased. The noise of a pair depends only on (seed, prompt, answer): batching
pairs of different lengths gives the values of one pair at a time.

Block diffusion (LLaDA 2, or any `block_length`): the sequence prompt + answer is cut into blocks of `block_length`
counted from the first prompt token (the grid of LLaDA 2's `generate` and of its block-diffusion training), and

    log p(answer | prompt) = sum_k log p(A_k | prompt, A_<k)
                          >= sum_k E_{l ~ U{1..n_k}} [ (n_k / l) * E_{l of the n_k masked} sum_masked log p ]

where A_k are the n_k answer tokens of block k, masked inside their block while the prompt and the earlier blocks
stay clean, under the block-causal mask (block k sees itself and the blocks before it). Each block has its own masks
(exact subsets, or its own stratified Monte-Carlo draws); all blocks of one sample are scored by one forward pass over
[noisy answer blocks; clean context]: the noisy copy holds the blocks with answer tokens (from the block holding the
prompt's end, whose prompt tokens stay clean), the clean copy the tokens before the last answer block, both at their
own positions, under a boolean 4-D mask (a noisy token sees its own noisy block and the clean blocks before it, a
clean token the clean blocks up to its own). That is the training layout of `trainers/objectives.py` without the
columns no score depends on, so a short answer after a long prompt costs one pass over prompt + answer.

This file travels with every checkpoint (trust_remote_code): it imports only torch and its siblings.
"""

import math
import numbers
from dataclasses import dataclass
from itertools import combinations

import torch

from .draws_llada import U32, counter_uniform, mix32

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
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{name} must be token ids (a list or 1-D tensor of ints), got a string {ids[:20]!r}; "
                        "tokenize it first.")
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
    return hash((seed, len(prompt), *prompt, -1, *answer)) & U32


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
    group_seeds = mix32((groups + seed * 0x9E37) & U32)
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
        block_length: int | None = None,
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
            exact: enumerate every mask subset (answers up to 12 tokens; with blocks, up to 12 answer tokens per
                block); the standard error is then 0.
            seed: the estimate of a pair depends only on (seed, prompt, answer) (and the block length).
            block_length: score by block diffusion with blocks of this many tokens counted from the first prompt
                token (see the module docstring): each block's answer tokens are masked and predicted given the clean
                prompt, the clean earlier blocks and their own noisy block, under the block-causal mask. None (the
                default) asks the model (`_likelihood_block_length`): LLaDA 2 uses the block length of its `generate`
                (`generation_config.block_length`, 32 by default), LLaDA and LLaDA-MoE the bidirectional bound (one
                pass over prompt + answer, no blocks). A block length of at least len(prompt) + len(answer) puts
                everything in one block, which is the bidirectional bound again.
        Returns:
            A [`LikelihoodEstimate`] for one pair, a list for a list of pairs.
        """
        single = answer_ids is not None
        pairs = [(prompt_ids, answer_ids)] if single else list(prompt_ids)
        pairs = [(_as_list(p, "prompt_ids"), _as_list(a, "answer_ids")) for p, a in pairs]
        for name, value in (("mc_num", mc_num), ("batch_size", batch_size)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise TypeError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__}).")
        if mc_num < 1 or batch_size < 1:
            raise ValueError(f"mc_num and batch_size must be >= 1, got {mc_num} and {batch_size}.")
        if not math.isfinite(cfg_scale) or cfg_scale < 0:
            raise ValueError(f"cfg_scale must be a finite number >= 0, got {cfg_scale}.")
        if block_length is None:
            block_length = self._likelihood_block_length()
        if block_length is not None and (
            not isinstance(block_length, numbers.Integral) or isinstance(block_length, bool) or block_length < 1
        ):
            raise ValueError(f"block_length must be a positive integer (tokens per block) or None for the model's "
                             f"default, got {block_length!r}.")
        if self.config.mask_token_id is None:
            raise ValueError("The model config has no `mask_token_id`; set it to the id of the [MASK] token "
                             "(model.config.mask_token_id = ...) before estimating likelihoods.")
        vocab = self.get_input_embeddings().weight.shape[0]
        limit = getattr(self.config, "max_sequence_length", None)
        for index, (prompt, answer) in enumerate(pairs):
            if not answer:
                raise ValueError(f"answer_ids{'' if single else f' of pair {index}'} is empty; every answer needs at "
                                 "least one token.")
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
        if block_length is not None:
            return self._block_log_likelihood(pairs, single, int(block_length), mc_num, batch_size, cfg_scale, exact,
                                              seed, device)

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

    def _likelihood_block_length(self) -> int | None:
        """The block length `log_likelihood` uses when given none: None here (LLaDA, LLaDA-MoE: the bidirectional
        masked-diffusion bound). Block-diffusion models (LLaDA 2) override it with the block length they are
        sampled and trained with."""
        return None

    def _block_log_likelihood(self, pairs, single, block, mc_num, batch_size, cfg_scale, exact, seed, device):
        """`log_likelihood` by block diffusion (module docstring): per pair, masks and weights per answer block, then
        one forward pass per row over all its blocks."""
        sequences, masks, weights, owners, prompt_lengths, block_sizes = [], [], [], [], [], []
        num_blocks = max((len(p) + len(a) - 1) // block - len(p) // block + 1 for p, a in pairs)
        for index, (prompt, answer) in enumerate(pairs):
            first, end = len(prompt) // block, len(prompt) + len(answer)
            edges = [max(len(prompt), k * block) for k in range(first, (end - 1) // block + 1)] + [end]
            sizes = [b - a for a, b in zip(edges[:-1], edges[1:])]  # n_k: answer tokens per block
            pair_exact = exact or max(sizes) == 1
            if pair_exact and max(sizes) > MAX_EXACT_ANSWER_LENGTH:
                raise ValueError(
                    f"exact=True enumerates 2**n - 1 mask subsets per block; a block of this answer holds n="
                    f"{max(sizes)} answer tokens, more than {MAX_EXACT_ANSWER_LENGTH}. Use a smaller block_length or "
                    "the Monte-Carlo estimate (exact=False)."
                )
            pair_seed = _pair_seed(seed, prompt, answer)
            per_block = []
            for k, size in enumerate(sizes):  # per block of the pair (not per row or token)
                if pair_exact:
                    per_block.append(exact_masks(size, device))
                else:  # block 0 draws what the bidirectional estimator draws; later blocks their own noise
                    block_seed = pair_seed if k == 0 else int(mix32(torch.tensor((pair_seed + k * 0x9E3779B1) & U32)))
                    block_masks, counts = monte_carlo_masks(size, mc_num, block_seed, device)
                    per_block.append((block_masks, (size / counts.double()) / mc_num))
            rows = max(block_masks.shape[0] for block_masks, _ in per_block)
            answer_masks = torch.zeros(rows, len(answer), dtype=torch.bool, device=device)
            pair_weights = torch.zeros(rows, num_blocks, dtype=torch.float64, device=device)
            for k, (block_masks, block_weights) in enumerate(per_block):
                start = edges[k] - len(prompt)
                answer_masks[: block_masks.shape[0], start : start + sizes[k]] = block_masks
                pair_weights[: block_masks.shape[0], k] = block_weights
            sequences.append(torch.tensor(prompt + answer, device=device).expand(rows, -1))
            masks.append(torch.cat([answer_masks.new_zeros(rows, len(prompt)), answer_masks], dim=1))
            weights.append(pair_weights)
            owners.append(torch.full((rows,), index, device=device))
            prompt_lengths.append(torch.full((rows,), len(prompt), device=device))
            block_sizes.append(sizes)
        ids, masked, lengths = self._pack_rows(sequences, masks, device)
        weights, owners, prompt_lengths = torch.cat(weights), torch.cat(owners), torch.cat(prompt_lengths)

        block_log_probs = torch.empty(ids.shape[0], num_blocks, dtype=torch.float64, device=device)
        for chunk in range(0, ids.shape[0], batch_size):
            part = slice(chunk, chunk + batch_size)
            block_log_probs[part] = self._block_masked_log_probs(
                ids[part], masked[part], lengths[part], prompt_lengths[part], cfg_scale, block, num_blocks
            )
        contributions = (block_log_probs * weights).sum(-1)
        estimates = torch.zeros(len(pairs), dtype=torch.float64, device=device).index_add_(0, owners, contributions)
        results = []
        for index, (prompt, answer) in enumerate(pairs):
            sizes = block_sizes[index]
            if exact or max(sizes) == 1:
                error = 0.0
            else:  # the blocks' draws are independent: their variances add
                rows = owners == index
                samples = block_log_probs[rows] * weights[rows] * mc_num  # (mc_num, blocks): (n_k / l) * sum log p
                error = math.sqrt(sum(_standard_error(samples[:, k], size) ** 2 for k, size in enumerate(sizes)))
            results.append(LikelihoodEstimate(float(estimates[index]), error, len(answer)))
        return results[0] if single else results

    def _pack_rows(self, sequences, masks, device):
        """Right-padded (rows, longest) ids and answer masks of the pairs' rows, and each row's length."""
        total_rows = sum(s.shape[0] for s in sequences)
        longest = max(s.shape[1] for s in sequences)
        pad = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        ids = torch.full((total_rows, longest), pad, dtype=torch.long, device=device)
        masked = torch.zeros(total_rows, longest, dtype=torch.bool, device=device)
        lengths = torch.empty(total_rows, dtype=torch.long, device=device)
        start = 0
        for sequence, mask in zip(sequences, masks):  # per pair, not per row or token
            rows, length = sequence.shape
            ids[start : start + rows, :length] = sequence
            masked[start : start + rows, :length] = mask
            lengths[start : start + rows] = length
            start += rows
        return ids, masked, lengths

    def _block_masked_log_probs(
        self,
        ids: torch.Tensor,
        masked: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor,
        cfg_scale: float,
        block: int,
        num_blocks: int,
    ) -> torch.Tensor:
        """Per row and answer block (counted from the block holding the prompt's end), the sum of log p(clean token)
        over the block's masked positions, (rows, num_blocks) float64, from one block-diffusion forward pass."""
        logits, targets, rows, relative_block = self._block_bound_logits(
            ids, masked, lengths, prompt_lengths, cfg_scale, block
        )
        log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
        sums = torch.zeros(ids.shape[0] * num_blocks, dtype=torch.float64, device=ids.device)
        return sums.index_add_(0, rows * num_blocks + relative_block, log_probs.double()).view(-1, num_blocks)

    def _block_bound_logits(self, ids, masked, lengths, prompt_lengths, cfg_scale: float, block: int):
        """The float32 logits (n, V) at the n masked positions of right-padded rows `ids` (r, W) (`lengths` tokens
        each), scored by block diffusion in one forward pass, with their clean targets (n,), row (n,) and answer
        block counted from the block holding the prompt's end (n,).

        Layout per row: [noisy copy of positions first..L-1; clean copy of positions 0..C-1], where `first` starts the
        block holding the prompt's end and C the last answer block; right-padded to the widest row.
        """
        mask_id = self.config.mask_token_id
        rows, width = ids.shape
        device = ids.device
        first = torch.div(prompt_lengths, block, rounding_mode="floor") * block
        context = torch.div(lengths - 1, block, rounding_mode="floor") * block
        noisy_width, clean_width = (int(x) for x in torch.stack([(lengths - first).max(), context.max()]).tolist())
        noisy_positions = first[:, None] + torch.arange(noisy_width, device=device)[None]
        noisy_valid = noisy_positions < lengths[:, None]
        noisy_positions = noisy_positions.clamp_max(width - 1)
        clean_positions = torch.arange(clean_width, device=device)[None].expand(rows, -1)
        positions = torch.cat([noisy_positions, clean_positions], dim=1)
        valid = torch.cat([noisy_valid, clean_positions < context[:, None]], dim=1)
        is_clean = (torch.arange(noisy_width + clean_width, device=device) >= noisy_width)[None]
        noisy_masked = masked.gather(1, noisy_positions) & noisy_valid
        input_ids = torch.cat([ids.masked_fill(masked, mask_id).gather(1, noisy_positions), ids[:, :clean_width]], 1)

        block_index = torch.div(positions, block, rounding_mode="floor")
        # The mask depends only on the row's (prompt, total) lengths: the Monte-Carlo rows of one pair share it.
        same_layout = bool(((first == first[0]) & (lengths == lengths[0])).all())
        pattern_blocks, pattern_valid = (block_index[:1], valid[:1]) if same_layout else (block_index, valid)
        q_block, k_block = pattern_blocks[:, :, None], pattern_blocks[:, None, :]
        q_clean, k_clean = is_clean[:, :, None], is_clean[:, None, :]
        # a clean key: blocks before the query's (a noisy query) or up to it (a clean query); a noisy key: a noisy
        # query of the same block; padding never, and every query sees itself
        allowed = torch.where(k_clean, k_block < q_block + q_clean.long(), ~q_clean & (k_block == q_block))
        allowed = allowed & pattern_valid[:, None, :] | torch.eye(positions.shape[1], dtype=torch.bool, device=device)
        allowed = allowed[:, None]  # (r or 1, 1, T, T)
        keep = torch.cat([noisy_masked, torch.zeros(rows, clean_width, dtype=torch.bool, device=device)], dim=1)
        if cfg_scale > 0:
            unconditional = input_ids.masked_fill(positions < prompt_lengths[:, None], mask_id)
            both = allowed if same_layout else torch.cat([allowed, allowed])
            logits = self(torch.cat([input_ids, unconditional]), attention_mask=both,
                          position_ids=torch.cat([positions, positions]), logits_to_keep=torch.cat([keep, keep]),
                          validate_inputs=False, return_dict=True).logits
            cond, uncond = logits.float().chunk(2)
            logits = uncond + (cfg_scale + 1) * (cond - uncond)
        else:
            logits = self(input_ids, attention_mask=allowed, position_ids=positions, logits_to_keep=keep,
                          validate_inputs=False, return_dict=True).logits.float()
        targets = ids.gather(1, noisy_positions)[noisy_masked]
        relative_block = block_index[:, :noisy_width] - torch.div(first, block, rounding_mode="floor")[:, None]
        return logits, targets, noisy_masked.nonzero()[:, 0], relative_block[noisy_masked]

    @torch.no_grad()
    def _block_greedy(self, pairs, block_length: int | None = None) -> list[bool]:
        """Whether each (prompt, answer) pair's answer is the argmax at every position when each block's answer
        tokens are all masked, given the clean prompt and earlier blocks (lm-eval's `is_greedy` under block
        diffusion; `block_length` None: the model's). One forward pass for all pairs."""
        block = block_length or self._likelihood_block_length()
        if block is None:
            raise ValueError("_block_greedy needs a block_length; this model scores without blocks.")
        device = self.get_input_embeddings().weight.device
        pairs = [(_as_list(p, "prompt_ids"), _as_list(a, "answer_ids")) for p, a in pairs]
        sequences = [torch.tensor(p + a, device=device)[None] for p, a in pairs]
        masks = [torch.tensor([[False] * len(p) + [True] * len(a)], device=device) for p, a in pairs]
        ids, masked, lengths = self._pack_rows(sequences, masks, device)
        prompt_lengths = torch.tensor([len(p) for p, _ in pairs], device=device)
        logits, targets, rows, _ = self._block_bound_logits(ids, masked, lengths, prompt_lengths, 0.0, int(block))
        misses = torch.zeros(len(pairs), dtype=torch.long, device=device)
        misses.index_add_(0, rows, (logits.argmax(-1) != targets).long())
        return (misses == 0).tolist()

    @torch.no_grad()
    def perplexity(self, ids, *, mc_num: int = 128, batch_size: int = 32, seed: int = 0,
                   block_length: int | None = None) -> float:
        """exp of the per-token bound on the negative log-likelihood of a text (the unconditional case): an upper
        bound on the model's perplexity of `ids` (1-D ids, or a list of them: one value over all their tokens).
        `block_length` as in `log_likelihood` (None: the model's default)."""
        texts = [ids] if isinstance(ids, torch.Tensor) and ids.dim() == 1 or (ids and isinstance(ids[0], int)) else ids
        estimates = self.log_likelihood([([], text) for text in texts], mc_num=mc_num, batch_size=batch_size,
                                        seed=seed, block_length=block_length)
        total = sum(e.log_likelihood for e in estimates)
        tokens = sum(e.answer_length for e in estimates)
        return math.exp(-total / tokens)


__all__ = ["LLaDALikelihoodMixin", "LikelihoodEstimate", "exact_masks", "monte_carlo_masks"]

"""The masked-diffusion forward process and the LLaDA training losses, written once (REFERENCE.md sections 3-4).

Forward process: each sequence draws t ~ U(0, 1), `p_mask = (1 - eps) * t + eps`, and every maskable token is replaced
by the mask id independently with probability `p_mask`. The model predicts the clean tokens in one forward pass, and
the loss is the cross-entropy at masked positions, each divided by its `p_mask` (an upper bound on the negative
log-likelihood). Pre-training divides the sum by b * l; SFT divides each row by its answer length, then by b.
"""

import torch
import torch.nn.functional as F

DEFAULT_EPS = 1e-3


def sample_p_mask(
    batch_size: int,
    eps: float = DEFAULT_EPS,
    *,
    low_discrepancy: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Masking probability per sequence, (batch_size,) float32: `(1 - eps) * t + eps` with t ~ U(0, 1).

    low_discrepancy: draw one u ~ U(0, 1) and set t_i = (u + i / b) mod 1, so the batch covers [0, 1) evenly (each t_i
    is still uniform, so the bound stays unbiased, with a lower-variance batch estimate).
    """
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}; the reference uses 1e-3.")
    if low_discrepancy:
        u = torch.rand(1, generator=generator, device=device)
        t = (u + torch.arange(batch_size, device=device) / batch_size) % 1.0
    else:
        t = torch.rand(batch_size, generator=generator, device=device)
    return (1 - eps) * t + eps


def forward_process(
    input_ids: torch.Tensor,
    mask_token_id: int,
    p_mask: torch.Tensor,
    *,
    maskable: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    draws: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each token of (b, l) `input_ids` independently with its row's probability `p_mask` (b,).

    maskable: (b, l) bool, False where a token must stay clean (the SFT prompt). draws: (b, l) uniforms to use instead
    of drawing from `generator` (the trainers' per-example noise). Returns (noisy ids, masked positions).
    """
    if draws is None:
        draws = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    masked = draws < p_mask[:, None].to(draws.device)
    if maskable is not None:
        masked &= maskable
    return torch.where(masked, mask_token_id, input_ids), masked


def weighted_token_losses(
    logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor, p_mask: torch.Tensor
) -> torch.Tensor:
    """Per-row sum over masked positions of CE / p_mask, (b,) float32.

    logits: (b, l, V), or (n, V) for the n masked positions in row-major order (the model's boolean
    `logits_to_keep=masked`, which skips the head at clean positions). targets: (b, l) clean ids.
    """
    rows = masked.nonzero()[:, 0]
    flat_logits = logits[masked] if logits.dim() == 3 else logits
    ce = F.cross_entropy(flat_logits.float(), targets[masked], reduction="none")
    per_row = torch.zeros(masked.shape[0], dtype=ce.dtype, device=ce.device)
    return per_row.index_add_(0, rows, ce / p_mask.to(ce.device)[rows])


def pretraining_loss(row_losses: torch.Tensor, sequence_length: int, num_rows: int | None = None) -> torch.Tensor:
    """Sum of the rows' weighted losses over b * l (all tokens, not the masked ones). `num_rows` is the b of the
    whole optimisation batch when this micro-batch is one part of it (accumulation, several processes)."""
    return row_losses.sum() / ((num_rows if num_rows is not None else row_losses.shape[0]) * sequence_length)


def sft_loss(row_losses: torch.Tensor, answer_lengths: torch.Tensor, num_rows: int | None = None) -> torch.Tensor:
    """Each row's weighted loss over its answer length (padding EOS included), summed and divided by b."""
    per_row = row_losses / answer_lengths.clamp_min(1).to(row_losses.dtype)
    return per_row.sum() / (num_rows if num_rows is not None else row_losses.shape[0])


def random_length_cut(
    input_ids: torch.Tensor, probability: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """With `probability`, cut the whole batch to a random length uniform in [1, l] (the reference uses 0.01), so
    the model also sees short sequences. Draws on the CPU generator: the decision is a host-side branch."""
    if probability <= 0:
        return input_ids
    if torch.rand(1, generator=generator).item() >= probability:
        return input_ids
    length = int(torch.randint(1, input_ids.shape[1] + 1, (1,), generator=generator))
    return input_ids[:, :length]



# LLaDA 2's SFT objective, the block-diffusion recipe of inclusionAI's dFactory (tasks/train_llada2_bd.py,
# configs/sft/llada2_*_bd_sft.yaml): block size 32, a noise level per example uniform in [0.3, 0.8], the noisy copy
# and the clean copy of each sequence concatenated into one forward pass under the block-diffusion attention mask,
# the loss read at the same positions (no shift) and averaged over the masked tokens of the batch (no 1 / t weight).
BLOCK_DIFFUSION_BLOCK_SIZE = 32
BLOCK_DIFFUSION_NOISE_RANGE = (0.3, 0.8)


def block_diffusion_attention_mask(length: int, block_size: int, device: torch.device | str | None = None
                                   ) -> torch.Tensor:
    """(2L, 2L) bool, True where a query may attend a key, over the concatenation [noisy x_t (L); clean x_0 (L)].

    A noisy token sees its own noisy block (block-diagonal) and the clean blocks before it (offset block-causal); a
    clean token sees its own and earlier clean blocks (block-causal). Nothing sees a later block, and no clean token
    sees a noisy one.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}.")
    index = torch.arange(2 * length, device=device)
    clean = index >= length
    block = torch.where(clean, index - length, index) // block_size
    q_clean, k_clean = clean[:, None], clean[None, :]
    q_block, k_block = block[:, None], block[None, :]
    same_block_same_copy = (q_block == k_block) & (q_clean == k_clean)
    noisy_sees_earlier_clean = ~q_clean & k_clean & (k_block < q_block)
    clean_sees_clean_so_far = q_clean & k_clean & (k_block <= q_block)
    return same_block_same_copy | noisy_sees_earlier_clean | clean_sees_clean_so_far


def block_diffusion_inputs(
    noisy: torch.Tensor,
    clean: torch.Tensor,
    block_size: int,
    attention_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The model inputs of one block-diffusion pass: `input_ids` [noisy; clean] (b, 2L), `position_ids` 0..L-1 twice
    and a boolean 4-D `attention_mask` (b, 1, 2L, 2L), True where a query may attend a key.

    attention_mask: optional (b, L) padding mask (1 for tokens); padded keys are hidden in both copies (every query
    still sees itself, so no row is empty).
    """
    batch, length = clean.shape
    allowed = block_diffusion_attention_mask(length, block_size, clean.device)[None, None]
    if attention_mask is not None:
        keys = attention_mask.bool().repeat(1, 2)[:, None, None, :]
        allowed = (allowed & keys) | torch.eye(2 * length, dtype=torch.bool, device=clean.device)
    allowed = allowed.expand(batch, 1, 2 * length, 2 * length)
    positions = torch.arange(length, device=clean.device).repeat(2)[None].expand(batch, -1)
    return {"input_ids": torch.cat([noisy, clean], dim=1), "position_ids": positions, "attention_mask": allowed}


def block_diffusion_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the masked positions, summed and divided by the number of masked tokens in the batch (dFactory:
    `same_token_labels`, no 1 / t weight). logits: (n, V) for the n masked positions in row-major order, or
    (b, l, V); targets: (b, l) clean ids; masked: (b, l) bool. 0 (with a gradient) when nothing is masked."""
    flat_logits = logits[masked] if logits.dim() == 3 else logits
    ce = F.cross_entropy(flat_logits.float(), targets[masked], reduction="sum")
    return ce / masked.sum().clamp_min(1)

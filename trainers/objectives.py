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


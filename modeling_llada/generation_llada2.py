"""Block-diffusion generation for LLaDA 2.0 / 2.1 behind the transformers `generate` convention.

The canvas is cut into blocks of `block_length` counted from the first prompt token (the prompt's last, partial block
is the first block generated). Blocks are decoded left to right under the block-causal mask: a position sees its own
block and every block before it, nothing after. Within a block:

- LLaDA 2.0 (`editing_threshold=None`): up to `steps` steps; each commits every masked position whose confidence (the
  probability of its proposed token) exceeds `threshold`, or, when fewer than the step's quota of the schedule
  (`block_length` spread evenly over `steps`) do, the quota's most confident ones. Committed tokens stay.
- LLaDA 2.1 (`editing_threshold` set: token editing): each step commits the masked positions above `threshold` (at
  least `num_to_transfer`, the most confident) and rewrites every already generated token of the block whose proposal
  differs and has probability above `editing_threshold`. Once the block holds no mask, up to `max_post_steps` more
  steps only edit; the block ends when a step changes nothing. `steps` is not used.

Because attention is block-causal, the keys/values of finished blocks are exact to reuse: with `kv_cache="prefix"`
(the default) they are cached and each step runs only the current block (a finished block's keys/values are added by
the first step of the next block); `kv_cache=None` runs the whole prefix every step, as the official code does. Both
give the same tokens.

This file travels with every checkpoint (trust_remote_code): it imports only torch, transformers and its siblings.
"""

import math
from typing import Any

import torch

# transformers internals this file relies on (inventory: tests/test_upstream_internals.py)
from transformers.cache_utils import DynamicCache  # DynamicCache(); get_seq_length(); crop(-n) drops the last n
from transformers.generation import LogitsProcessorList
from transformers.utils.logging import tqdm  # transformers' progress bar (honours disable_progress_bar)

from .answers_llada import StreamState
from .draws_llada import counter_uniform
from .generation_llada import (
    _DIFFUSION_DEFAULTS,
    _EOS_CONFIDENCE_OFFSET,
    LLaDAGenerateOutput,
    LLaDAGenerationConfig,
    LLaDAGenerationMixin,
    DenoisingState,
    logger,  # the shared logger (its warnings read as generation's)
    num_transfer_tokens,
    select_top_k,
)

# The official defaults of LLaDA 2.x's generate (block 32, 32 steps per block, threshold 0.95), token editing off
# (LLaDA 2.1 checkpoints set `editing_threshold`; the official 2.1 default is 0.9), and the exact block cache on.
_LLADA2_DEFAULTS: dict[str, Any] = {
    **_DIFFUSION_DEFAULTS,
    "block_length": 32,
    "steps": 32,
    "threshold": 0.95,
    "kv_cache": "prefix",
    "editing_threshold": None,
    "max_post_steps": 16,
    "num_to_transfer": 1,
    "minimal_topk": 1,
}


class LLaDA2GenerationConfig(LLaDAGenerationConfig):
    r"""Generation settings of LLaDA 2.x block diffusion; saved as `generation_config.json`.

    The fields of [`LLaDAGenerationConfig`] with these meanings and defaults (the official ones):

    Args:
        block_length (`int`, defaults to 32): B; blocks are counted from the first prompt token, so the prompt's last
            partial block is completed first. `max_new_tokens` need not be a multiple of it.
        steps (`int`, defaults to 32): denoising steps **per block** (the official meaning; LLaDA's `steps` counts all
            blocks), capped at `max_new_tokens // minimal_topk`. The schedule commits B/steps tokens per step. Not used
            with token editing.
        threshold (`float`, defaults to 0.95): commit every masked position whose probability exceeds it (strictly);
            None keeps the schedule alone.
        kv_cache (`str`, defaults to "prefix"): cache the keys/values of the prompt and finished blocks (exact under the
            block-causal mask); None recomputes the whole prefix every step.
        early_exit (`bool`, defaults to False; official name `eos_early_stop`): stop a row once its first EOS has no
            mask before it (LLaDA 2.1: at the end of that block, since editing may still change it). Without it a
            LLaDA 2.0 row stops after the block holding its first EOS (as the official code does); a LLaDA 2.1 row
            decodes every block. Either way the answer up to the first EOS is the same.
        editing_threshold (`float`, *optional*): switches on LLaDA 2.1 token editing: a generated (non-prompt) token of
            the current block is replaced by its proposal when that differs and has probability above this value
            (above 1 never edits, but keeps the 2.1 step rule).
        max_post_steps (`int`, defaults to 16): LLaDA 2.1: editing-only steps allowed after the block has no mask.
        num_to_transfer (`int`, defaults to 1): LLaDA 2.1: masked positions committed per step when fewer exceed
            `threshold`.
        minimal_topk (`int`, defaults to 1): caps `steps` at `max_new_tokens // minimal_topk` (official).

    `remasking` is "low_confidence" (the only official rule); `cfg_scale` and `factor` are not used by LLaDA 2.
    """

    _diffusion_fields = _LLADA2_DEFAULTS
    _kv_cache_modes = ("prefix",)
    sampler_fields = (
        "max_new_tokens", "steps", "block_length", "temperature", "top_k", "top_p", "threshold", "kv_cache",
        "logits_eos_inf", "confidence_eos_eot_inf", "early_exit", "editing_threshold", "max_post_steps",
        "num_to_transfer", "minimal_topk",
    )
    # Read by LLaDA 2.1 token editing only: shown when `editing_threshold` is set.
    _editing_fields = ("max_post_steps", "num_to_transfer")

    def _resolve_sampler_settings(self, values: dict[str, Any]) -> None:
        """`block_length` 32 and `steps` (per block) equal to it when unset; the token editing settings only with
        token editing on."""
        values["block_length"] = values["block_length"] or _LLADA2_DEFAULTS["block_length"]
        values["steps"] = values["steps"] or values["block_length"]
        if self.editing_threshold is None:
            for name in self._editing_fields:
                values.pop(name)

    def _validate_schedule(self) -> None:
        """Blocks are aligned to the prompt, not to the answer: any positive lengths and steps work."""

    def validate(self, strict: bool = False, **unused) -> None:
        # LLaDA 2's own rules first: the shared checks' advice (other remasking rules, `factor` instead of
        # `threshold`) names settings this sampler does not take.
        if self.cfg_scale:
            raise ValueError(f"`cfg_scale` ({self.cfg_scale!r}): LLaDA 2's sampler has no classifier-free guidance; "
                             "leave it at 0.")
        if self.factor is not None:
            raise ValueError(
                f"`factor={self.factor!r}`: LLaDA 2's sampler does not take `factor`; it commits by `threshold` "
                f"(default {_LLADA2_DEFAULTS['threshold']}; None keeps the step schedule alone). Unset `factor`."
            )
        if self.remasking != "low_confidence":
            raise ValueError(f"`remasking={self.remasking!r}`: LLaDA 2 commits by confidence only; the one value it "
                             "takes is 'low_confidence' (the default).")
        super().validate(strict)
        value = self.editing_threshold
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not math.isfinite(value) or value < 0):
            raise ValueError(f"`editing_threshold` must be None (no token editing, LLaDA 2.0) or a finite number >= 0 "
                             f"(LLaDA 2.1 uses 0.9), got {value!r}.")
        if value is not None and value >= 1:
            # accepted (the official 2.1 loop runs, as with 1.01 in its recorded cases), but no token is ever edited
            logger.warning_once(
                f"`editing_threshold={value!r}` is at least 1, so no token is ever edited (a token is rewritten only "
                "when its probability exceeds the threshold, and probabilities are at most 1). Use a value in [0, 1) "
                "(LLaDA 2.1 uses 0.9) to edit, or None for LLaDA 2.0 decoding."
            )
        for name, low in (("max_post_steps", 0), ("num_to_transfer", 1), ("minimal_topk", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")


class LLaDA2GenerationMixin(LLaDAGenerationMixin):
    r"""`generate` for LLaDA 2.x: block diffusion (2.0) and block diffusion with token editing (2.1), with an exact
    block cache. The loop, the input checks and the finish are LLaDA's (`LLaDAGenerationMixin.generate`); this
    sampler overrides its start (the block-aligned canvas), its step (block-causal, against the cache of the blocks
    before it, with token editing) and the first half of its finish. What `generate` takes and returns here:

    Args:
        input_ids: (b, P) prompt ids, left-padded when rows differ in length (`inputs=` works too). The prompt may
            hold the mask token (infilling, as in dense LLaDA and LLaDA-MoE): denoising then starts at the first
            block holding one, and each hole is filled seeing the blocks before it and its own block (block-causal:
            the prompt text in later blocks is not seen).
        attention_mask: (b, P), 1 for tokens and 0 for (left) padding. A padded row generates what it generates
            alone.
        generation_config: base settings; defaults to the model's (`generation_config.json`).
        streamer: receives the prompt, then the answer's tokens once every position before them is final (with
            token editing: when their block ends). Single sequence only.
        logits_processor: applied to each step's logits of the current block (rows flattened to (b * B, V)).
        tokenizer: needed with `stop_strings`.
        kwargs: any [`LLaDA2GenerationConfig`] field, and the official names `gen_length` (`max_new_tokens`),
            `mask_id` (`mask_token_id`), `eos_id` (`eos_token_id`), `eos_early_stop` (`early_exit`);
            `use_cache=False` is `kv_cache=None`.

    Returns:
        (b * num_return_sequences, P + N) ids: the prompt as given, then the answer; after a row's first EOS
        (kept) every position holds the pad id. With `return_dict_in_generate=True` or `output_history=True` a
        [`LLaDAGenerateOutput`] (`raw_sequences`, `answer_lengths`, `stopped`, `tokens_per_forward`, `history`,
        `commit_step`: for an edited position, the step that last wrote it).

    Example:

    ```python
    >>> # the model card's call, official argument names
    >>> model.generate(inputs=ids, gen_length=512, block_length=32, steps=32, threshold=0.95, eos_early_stop=True)
    >>> # LLaDA 2.1 token editing
    >>> model.generate(ids, max_new_tokens=512, threshold=0.5, editing_threshold=0.9, max_post_steps=16)
    ```
    """

    generation_config_class = LLaDA2GenerationConfig

    @staticmethod
    def _shares_forward(state: DenoisingState) -> bool:
        return False  # each state's block-causal pass runs against its own block cache: `denoising_steps` interleaves

    def _prepare_generate(self, input_ids, attention_mask, generation_config, stopping_criteria, tokenizer, kwargs):
        if "use_cache" in kwargs:  # the official sampler's switch for the block cache
            use_cache = kwargs.pop("use_cache")
            if use_cache is not None:
                wanted = "prefix" if use_cache else None
                if "kv_cache" in kwargs and kwargs["kv_cache"] != wanted:
                    raise ValueError(
                        f"generate() got `use_cache={use_cache!r}` and `kv_cache={kwargs['kv_cache']!r}`, which "
                        "disagree; LLaDA 2's block cache is `kv_cache` ('prefix' or None): pass one of them."
                    )
                kwargs["kv_cache"] = wanted
        return super()._prepare_generate(input_ids, attention_mask, generation_config, stopping_criteria, tokenizer,
                                         kwargs)

    def _start_denoising(
        self, config, input_ids, attention_mask, eos_ids, stops, pad_id, synced_gpus, streamer, logits_processor,
        tokenizer,
    ) -> DenoisingState:
        """Lay out the block canvas: each row's blocks start at its first prompt token, and rows are shifted by whole
        blocks so that the block holding the end of every prompt (the first one generated) sits at the same
        columns."""
        if synced_gpus:
            raise ValueError("synced_gpus=True: LLaDA 2's forward passes depend on the prompt (confidence threshold, "
                             "EOS); generate on each rank separately.")
        device = input_ids.device
        mask_id = config.mask_token_id
        gen_length = config.resolved_max_new_tokens(input_ids.shape[1])
        self._check_context_length(input_ids.shape[1], gen_length)
        self._check_prompt(input_ids, attention_mask, config, eos_ids)
        block = config.block_length or _LLADA2_DEFAULTS["block_length"]  # None: the official default
        steps = max(1, min(config.steps or block, gen_length // config.minimal_topk))
        if pad_id is None:
            pad_id = eos_ids[0] if eos_ids else 0
        input_ids, attention_mask, seeds = self._copies_and_seeds(input_ids, attention_mask, config,
                                                                  config.temperature > 0)
        batch, prompt_length = input_ids.shape
        lengths = attention_mask.sum(-1) if attention_mask is not None else input_ids.new_full((batch,), prompt_length)
        pads = prompt_length - lengths
        full_blocks = lengths // block
        blocks_to_generate = (lengths % block + gen_length + block - 1) // block
        # Infilling: a mask inside a prompt is filled in its own block, which sees the blocks before it and itself
        # (block-causal); denoising starts at the earliest block holding one (<= 0 blocks before the first answer's).
        from_first_token = torch.arange(prompt_length, device=device)[None] - pads[:, None]
        holes = (input_ids == mask_id) & (from_first_token >= 0)
        back = torch.where(holes, from_first_token.div(block, rounding_mode="floor") - full_blocks[:, None], 0)
        first_block, num_blocks, back, has_holes = (int(x) for x in torch.stack(
            [full_blocks.max(), blocks_to_generate.max(), back.min(), holes.any().long()]).tolist())
        offsets = (first_block - full_blocks) * block
        width = (first_block + num_blocks) * block
        columns = torch.arange(width, device=device)
        relative = columns[None] - offsets[:, None]  # (b, W) position counted from the row's first prompt token
        is_prompt = (relative >= 0) & (relative < lengths[:, None])
        source = (pads[:, None] + relative).clamp(0, prompt_length - 1)
        canvas = torch.where(is_prompt, input_ids.gather(1, source), mask_id)
        canvas = canvas.masked_fill(relative < 0, pad_id)
        state = DenoisingState(
            config=config, input_ids=input_ids, canvas=canvas,
            eos_tensor=torch.tensor(eos_ids, device=device, dtype=torch.long), pad_id=pad_id, stops=stops,
            tokenizer=tokenizer, seeds=seeds, processors=LogitsProcessorList(logits_processor or []),
            warpers=self._build_sampling_warpers(config),
            commit_step=torch.full((batch, width), -1, dtype=torch.long, device=device),
            history=[] if config.output_history else None,
            bar=tqdm(total=None, desc="denoising", disable=not config.progress_bar, leave=False),
        )
        state.block, state.steps, state.editing = block, steps, config.editing_threshold is not None
        state.columns, state.relative, state.is_prompt = columns, relative, is_prompt
        state.answer_region = (relative >= lengths[:, None]) & (relative < (lengths + gen_length)[:, None])
        state.answer_columns = offsets[:, None] + lengths[:, None] + torch.arange(gen_length, device=device)[None]
        state.row_end_block = first_block + blocks_to_generate  # (b,) the column block after each row's last block
        state.context = _BlockContext(
            is_key=relative >= 0, positions=relative.clamp_min(0), block_index=columns // block, block=block
        )
        state.cache = DynamicCache() if config.kv_cache else None
        state.schedule = num_transfer_tokens(torch.full((batch,), block, device=device), steps)  # (b, steps)
        state.row_steps = torch.zeros(batch, dtype=torch.long, device=device)
        state.index, state.last_index, state.in_block = first_block + back, first_block + num_blocks, None
        # (b, P) the canvas column of each prompt position (padding: -1), read back only when the prompt had holes
        state.prompt_columns = (
            torch.where(from_first_token >= 0, offsets[:, None] + from_first_token, -1) if has_holes else None
        )
        if streamer is not None:
            state.stream = StreamState(streamer, self._answer_view(state), prompt_length, mask_id, state.eos_tensor,
                                       tokenizer, stops)
        return state

    def _denoising_step(self, state: DenoisingState) -> bool:
        """One forward pass over the current block (block-causal, against the cache of the blocks before it), its
        commits and, with token editing, its edits; opens and closes blocks as needed. False once generation is
        over."""
        config, canvas, mask_id = state.config, state.canvas, state.config.mask_token_id
        while True:
            if state.in_block is None:  # open the next block
                if state.index == state.last_index:
                    return False
                state.running = ~state.finished & (state.index < state.row_end_block)
                if not bool(state.running.any()):
                    return False
                state.in_block = slice(state.index * state.block, (state.index + 1) * state.block)
                state.editable = ~state.is_prompt[:, state.in_block]
                # a block of prompt text only (before the answer, when an earlier one held a hole) needs no pass
                state.running &= (canvas[:, state.in_block] == mask_id).any(-1) | state.editable.any(-1)
                state.block_steps = torch.zeros_like(state.row_steps)
                state.post_steps = torch.zeros_like(state.row_steps)
            in_block = state.in_block
            masked = canvas[:, in_block] == mask_id
            open_rows = masked.any(-1)
            if state.editing:
                state.post_steps += (state.running & ~open_rows).long()
                state.running = state.running & (state.post_steps <= config.max_post_steps)
            else:
                state.running = state.running & open_rows & (state.block_steps < state.steps)
            if bool(state.running.any()):
                break
            self._close_block(state)

        running, eos_tensor = state.running, state.eos_tensor
        logits, state.cache = self._block_logits(canvas, in_block.start, in_block.stop, state.context, state.cache)
        noise = (state.seeds, state.row_steps[:, None], state.relative[:, in_block]) if state.seeds is not None else None
        proposal, confidence = self._propose(
            logits, canvas, config, state.processors, state.warpers, eos_tensor, noise
        )
        commit_confidence = confidence.masked_fill(~masked, -torch.inf)
        if config.confidence_eos_eot_inf and eos_tensor.numel():
            commit_confidence = commit_confidence - _EOS_CONFIDENCE_OFFSET * torch.isin(proposal, eos_tensor)
        above = commit_confidence > (config.threshold if config.threshold is not None else math.inf)
        quota = (
            torch.full_like(state.block_steps, config.num_to_transfer) if state.editing
            else state.schedule.gather(1, state.block_steps.clamp_max(state.steps - 1)[:, None]).squeeze(1)
        )
        count = above.sum(-1)
        transfer = torch.where((count >= quota)[:, None], above, select_top_k(commit_confidence, quota))
        transfer &= masked
        edits = torch.zeros_like(transfer)
        if state.editing:
            edits = (state.editable & ~masked & (confidence > config.editing_threshold)
                     & (proposal != canvas[:, in_block]))
            transfer |= edits
        transfer &= running[:, None]
        canvas[:, in_block] = torch.where(transfer, proposal, canvas[:, in_block])
        state.commit_step[:, in_block].masked_fill_(transfer, state.step)
        state.forwards += running.long()
        state.sampled += (transfer & masked).sum(-1)
        state.block_steps += running.long()
        state.row_steps += running.long()
        if state.editing:  # a block ends when a step after its last mask changes nothing
            state.running = running & (open_rows | edits.any(-1))
        elif config.early_exit and eos_tensor.numel():
            # official: checked when a step commits an EOS; the row stops once its first EOS has no mask before it
            committed_eos = (transfer & torch.isin(proposal, eos_tensor)).any(-1)
            done = committed_eos & self._eos_closed(canvas, state.answer_region, state.columns, mask_id, eos_tensor)
            state.finished |= done
            state.running = running & ~done
        view = self._answer_view(state) if state.history is not None or state.stream is not None else None
        self._after_step(state, view, stream=not state.editing)  # with token editing: when the block closes
        return True

    def _close_block(self, state: DenoisingState) -> None:
        """After a block: LLaDA 2.0 stops a row whose answer holds an EOS; LLaDA 2.1 with early_exit one whose
        answer so far is free of masks and holds an EOS."""
        canvas, config = state.canvas, state.config
        if state.stream is not None and state.editing:
            state.stream.update(self._answer_view(state))
        done_so_far = state.answer_region & (state.columns[None] < state.in_block.stop)
        if state.eos_tensor.numel():
            has_eos = (torch.isin(canvas, state.eos_tensor) & done_so_far).any(-1)
        else:
            has_eos = torch.zeros_like(state.finished)
        if not state.editing:
            state.finished |= has_eos
        elif config.early_exit:
            state.finished |= has_eos & ~((canvas == config.mask_token_id) & done_so_far).any(-1)
        state.in_block, state.index = None, state.index + 1

    def _finish_denoising(self, state: DenoisingState) -> torch.LongTensor | LLaDAGenerateOutput:
        # Rows that stopped early: their unwritten positions become the pad id (they lie after the first EOS).
        unwritten = state.answer_region & (state.canvas == state.config.mask_token_id) & state.finished[:, None]
        state.canvas = state.canvas.masked_fill(unwritten, state.pad_id)
        commit_step = state.commit_step.masked_fill(unwritten, max(state.step - 1, 0))
        steps_taken = torch.cat([self._prompt_view(state, commit_step, -1),
                                 commit_step.gather(1, state.answer_columns)], dim=1)
        return self._answers(state, self._answer_view(state), steps_taken)

    @staticmethod
    def _answer_view(state: DenoisingState) -> torch.Tensor:
        """(b, P + N): the prompt (its holes filled), then each row's answer positions of the canvas."""
        return torch.cat([LLaDA2GenerationMixin._prompt_view(state, state.canvas, state.input_ids),
                          state.canvas.gather(1, state.answer_columns)], dim=1)

    @staticmethod
    def _prompt_view(state: DenoisingState, canvas: torch.Tensor, padding) -> torch.Tensor:
        """(b, P): `canvas` (b, W) read at the prompt's columns; `padding` (a tensor (b, P) or a number) elsewhere and
        everywhere when the prompt had no holes (nothing in it changed)."""
        if state.prompt_columns is None:
            return padding if torch.is_tensor(padding) else canvas.new_full(state.input_ids.shape, padding)
        read = canvas.gather(1, state.prompt_columns.clamp_min(0))
        return torch.where(state.prompt_columns >= 0, read, padding)

    @staticmethod
    def _eos_closed(canvas, answer_region, columns, mask_id, eos_tensor) -> torch.Tensor:
        """(b,) rows whose answer holds an EOS with no mask before the first one."""
        width = canvas.shape[1]
        first_eos = torch.where(torch.isin(canvas, eos_tensor) & answer_region, columns[None], width).min(-1).values
        open_before = ((canvas == mask_id) & answer_region & (columns[None] < first_eos[:, None])).any(-1)
        return (first_eos < width) & ~open_before

    def _block_logits(self, canvas: torch.Tensor, start: int, stop: int, context: "_BlockContext", cache):
        """Logits (b, B, V) of the block [start, stop) under the block-causal mask.

        Without a cache the whole prefix [0, stop) runs. With one, the columns from the cache's end run (the current
        block, preceded on a block's first step by the finished block before it, or the prompt on the first step) and
        the cache is cropped back to `start`: it then holds exactly the finished blocks, whose keys/values no longer
        change.
        """
        first = cache.get_seq_length() if cache is not None else 0
        queries = slice(first, stop)
        ids = canvas[:, queries]
        mask = context.mask(queries, stop)
        kwargs = {"cache": cache, "use_cache": True} if cache is not None else {}
        out = self(ids, attention_mask=mask, position_ids=context.positions[:, queries], logits_to_keep=stop - start,
                   validate_inputs=False, return_dict=True, **kwargs)
        if cache is not None:
            surplus = cache.get_seq_length() - start
            if surplus > 0:
                cache.crop(-surplus)  # transformers 5: a negative count of positions to drop
        return out.logits[:, -(stop - start):], cache

    def _propose(self, logits, canvas, config, processors, warpers, eos_tensor, noise):
        """Proposals (b, B) and their probabilities (b, B).

        Greedy: the argmax, and its probability under the model (as the official code: the softmax of all logits).
        Sampling: a draw from the tempered (top-k / top-p) distribution, and its probability there (official).
        The mask id (and ids beyond the vocabulary) are never proposed.
        """
        logits = self._banned_and_processed(logits.float(), canvas, config, processors, eos_tensor)
        batch, width, vocab = logits.shape
        if config.temperature > 0:
            tempered = logits / config.temperature
            if warpers:
                tempered = warpers(None, tempered.reshape(batch * width, vocab)).view(batch, width, vocab)
            probs = torch.softmax(tempered, dim=-1)
            tempered = tempered.masked_fill(_id_mask(vocab, config.mask_token_id, logits.device), -torch.inf)
            uniform = counter_uniform(*noise, lanes=vocab)
            proposal = (tempered.double() - torch.log(-torch.log(uniform))).argmax(-1)
        else:
            probs = torch.softmax(logits, dim=-1)
            proposal = logits.masked_fill(_id_mask(vocab, config.mask_token_id, logits.device), -torch.inf).argmax(-1)
        return proposal, probs.gather(-1, proposal[..., None]).squeeze(-1)


def _id_mask(vocab: int, token_id: int, device) -> torch.Tensor:
    return torch.arange(vocab, device=device) == token_id


class _BlockContext:
    """Per-canvas facts the block-causal forward needs: which columns are keys (not padding), their positions (counted
    from each row's first prompt token) and their block index."""

    def __init__(self, is_key: torch.Tensor, positions: torch.Tensor, block_index: torch.Tensor, block: int):
        self.is_key, self.positions, self.block_index, self.block = is_key, positions, block_index, block

    def mask(self, queries: slice, stop: int) -> torch.Tensor:
        """(b, 1, q, k) boolean, True = may attend: keys [0, stop) in the query's block or before it, padding never
        (a padding query sees itself, so that no row of the softmax is empty)."""
        query_block = self.block_index[queries]
        key_block = self.block_index[:stop]
        allowed = (key_block[None, :] <= query_block[:, None])[None] & self.is_key[:, None, :stop]
        diagonal = torch.arange(queries.start, queries.stop, device=allowed.device)[:, None] == torch.arange(
            stop, device=allowed.device
        )[None]
        return (allowed | diagonal[None])[:, None]


__all__ = ["LLaDA2GenerationConfig", "LLaDA2GenerationMixin"]

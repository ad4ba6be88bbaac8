import threading

import pytest
import torch
from transformers import AutoModel, LogitsProcessor, LogitsProcessorList, TextIteratorStreamer

from modeling_llada import LLaDAGenerateOutput, LLaDAGenerationConfig, num_transfer_tokens
from tests.utils import tiny_model, word_tokenizer

MASK, EOS = 300, 301
PROMPT = torch.tensor([[139, 252, 234, 156, 157, 142, 50, 68]])
# three prompts of different lengths, left-padded with EOS (the fixture's batch)
BATCH_IDS = torch.tensor(
    [
        [301, 301, 301, 241, 247, 222, 96, 86, 141, 233],
        [137, 7, 63, 61, 22, 57, 1, 128, 60, 209],
        [301, 301, 301, 301, 301, 301, 121, 200, 30, 71],
    ]
)
BATCH_MASK = (torch.arange(10)[None] >= torch.tensor([[3], [0], [6]])).long()


def reference_kwargs(case: dict) -> dict:
    kwargs = dict(case["kwargs"])
    kwargs["max_new_tokens"] = kwargs.pop("gen_length")
    return kwargs


def cut_after_first_eos(rows: list[list[int]], prompt_length: int) -> list[list[int]]:
    """What `generate` returns for raw canvases: after the first generated EOS (kept) every position is EOS (the pad)."""
    cut = []
    for row in rows:
        answer = row[prompt_length:]
        end = answer.index(EOS) + 1 if EOS in answer else len(answer)
        cut.append(row[:prompt_length] + answer[:end] + [EOS] * (len(answer) - end))
    return cut


def test_every_reference_case_is_reproduced_token_for_token(official_model, reference):
    assert len(reference["generate"]) >= 7
    for case in reference["generate"]:
        mask = torch.tensor(case["attention_mask"]) if case["attention_mask"] is not None else None
        ids = torch.tensor(case["input_ids"])
        kwargs = reference_kwargs(case)
        out = official_model.generate(ids, attention_mask=mask, return_dict_in_generate=True, **kwargs)
        # the whole canvas the sampler committed, token for token
        assert out.raw_sequences.tolist() == case["output_ids"], case["name"]
        assert out.sequences.tolist() == cut_after_first_eos(case["output_ids"], ids.shape[1]), case["name"]
        plain = official_model.generate(ids, attention_mask=mask, **kwargs)
        assert plain.tolist() == out.sequences.tolist(), case["name"]


def test_num_transfer_tokens_spreads_the_remainder_over_the_first_steps():
    schedule = num_transfer_tokens(torch.tensor([10, 8, 3]), 4)
    assert schedule.tolist() == [[3, 3, 2, 2], [2, 2, 2, 2], [1, 1, 1, 0]]


@pytest.mark.parametrize("remasking", ["low_confidence", "random", "margin", "entropy"])
@pytest.mark.parametrize("cfg_scale", [0.0, 1.5])
@pytest.mark.parametrize("block_length", [4, 8, 16])
def test_padded_batch_rows_equal_single_row_runs(official_model, remasking, cfg_scale, block_length):
    kwargs = dict(max_new_tokens=16, steps=16, block_length=block_length, remasking=remasking, cfg_scale=cfg_scale)
    batch = official_model.generate(BATCH_IDS, attention_mask=BATCH_MASK, seed=[10, 11, 12], **kwargs)
    for row in range(3):
        pad = int((BATCH_MASK[row] == 0).sum())
        single = official_model.generate(BATCH_IDS[row : row + 1, pad:], seed=[10 + row], **kwargs)
        assert batch[row, pad:].tolist() == single[0].tolist(), row


def test_padded_batch_rows_equal_single_rows_when_sampling(official_model):
    kwargs = dict(max_new_tokens=16, steps=8, block_length=8, temperature=0.8, top_p=0.9)
    batch = official_model.generate(BATCH_IDS, attention_mask=BATCH_MASK, seed=[3, 4, 5], **kwargs)
    for row in range(3):
        pad = int((BATCH_MASK[row] == 0).sum())
        single = official_model.generate(BATCH_IDS[row : row + 1, pad:], seed=[3 + row], **kwargs)
        assert batch[row, pad:].tolist() == single[0].tolist()


def test_a_prompt_repeated_in_a_sampled_batch_gives_independent_rows_and_a_seed_reproduces_the_batch(official_model):
    repeated = PROMPT.repeat(4, 1)
    kwargs = dict(max_new_tokens=16, steps=16, temperature=1.0)
    torch.manual_seed(5)
    first = official_model.generate(repeated, **kwargs)
    assert len({tuple(row) for row in first.tolist()}) == 4  # four different samples
    torch.manual_seed(5)
    assert torch.equal(official_model.generate(repeated, **kwargs), first)
    # an explicit seed needs no global RNG, and its first prompt samples what it samples alone
    seeded = official_model.generate(repeated, seed=9, **kwargs)
    assert torch.equal(official_model.generate(repeated, seed=9, **kwargs), seeded)
    assert torch.equal(official_model.generate(PROMPT, seed=9, **kwargs)[0], seeded[0])
    assert len({tuple(row) for row in seeded.tolist()}) == 4


def test_seed_lists_need_one_seed_per_prompt(official_model):
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        official_model.generate(PROMPT, max_new_tokens=8, temperature=1.0, seed=[1, 2])
    with pytest.raises(ValueError, match="`seed` must be an integer"):
        official_model.generate(PROMPT, max_new_tokens=8, temperature=1.0, seed="1")


def test_seed_reproduces_sampling_and_other_seeds_differ(official_model):
    def run(seed):
        torch.manual_seed(seed)
        return official_model.generate(PROMPT, max_new_tokens=16, temperature=1.0)

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_top_k_one_sampling_equals_greedy(official_model):
    greedy = official_model.generate(PROMPT, max_new_tokens=16, steps=8)
    torch.manual_seed(0)
    assert torch.equal(official_model.generate(PROMPT, max_new_tokens=16, steps=8, temperature=2.0, top_k=1), greedy)


def test_cfg_without_attention_mask_equals_cfg_with_a_full_mask(official_model, reference):
    case = next(c for c in reference["generate"] if c["name"] == "single_cfg")
    ids = torch.tensor(case["input_ids"])
    out = official_model.generate(ids, return_dict_in_generate=True, **reference_kwargs(case))
    assert out.raw_sequences.tolist() == case["output_ids"]


def test_cfg_runs_one_batched_forward_per_step(official_model):
    calls = []
    handle = official_model.model.register_forward_hook(lambda m, args, kwargs, out: calls.append(1), with_kwargs=True)
    try:
        official_model.generate(BATCH_IDS, attention_mask=BATCH_MASK, max_new_tokens=16, steps=8, block_length=8,
                                cfg_scale=1.0)
    finally:
        handle.remove()
    assert len(calls) == 8


def test_logits_processor_applies_to_every_step(official_model):
    class Ban(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, 232] = -float("inf")
            return scores

    plain = official_model.generate(PROMPT, max_new_tokens=16)
    banned = official_model.generate(PROMPT, max_new_tokens=16, logits_processor=LogitsProcessorList([Ban()]))
    assert (plain == 232).any() and not (banned == 232).any()


class ForceEosFrom(LogitsProcessor):
    """Makes EOS the overwhelming proposal at window positions >= `start` (window = the whole answer here)."""

    def __init__(self, batch: int, start: int):
        self.batch, self.start = batch, start

    def __call__(self, input_ids, scores):
        width = scores.shape[0] // self.batch
        late = torch.arange(scores.shape[0]) % width >= self.start
        scores[late, EOS] += 100.0
        return scores


def test_logits_eos_inf_never_proposes_eos(official_model):
    processors = LogitsProcessorList([ForceEosFrom(1, 5)])
    assert (official_model.generate(PROMPT, max_new_tokens=16, logits_processor=processors)[0, 8:] == EOS).any()
    out = official_model.generate(PROMPT, max_new_tokens=16, logits_processor=processors, logits_eos_inf=True)
    assert not (out[0, 8:] == EOS).any()


def test_confidence_eos_eot_inf_commits_eos_last(official_model):
    processors = LogitsProcessorList([ForceEosFrom(1, 5)])
    out = official_model.generate(PROMPT, max_new_tokens=16, logits_processor=processors, confidence_eos_eot_inf=True,
                                  eos_token_id=[999 % 320, EOS], return_dict_in_generate=True)
    order = out.commit_step[0, 8:]
    eos = out.raw_sequences[0, 8:] == EOS
    assert eos.any() and (~eos).any()
    assert order[eos].min() > order[~eos].max()


def test_early_exit_stops_after_the_first_eos_without_changing_anything_before_it(official_model):
    kwargs = dict(max_new_tokens=16, logits_processor=LogitsProcessorList([ForceEosFrom(1, 5)]),
                  confidence_eos_eot_inf=True, return_dict_in_generate=True, output_history=True)
    full = official_model.generate(PROMPT, **kwargs)
    early = official_model.generate(PROMPT, early_exit=True, **kwargs)
    first_eos = int((full.raw_sequences[0, 8:] == EOS).nonzero()[0])
    assert first_eos == 5
    assert torch.equal(early.raw_sequences[0, : 8 + first_eos + 1], full.raw_sequences[0, : 8 + first_eos + 1])
    assert (early.raw_sequences[0, 8 + first_eos :] == EOS).all()
    # what generate returns does not depend on early_exit: the answer, its EOS, then padding
    assert torch.equal(early.sequences, full.sequences) and early.answer_lengths.tolist() == [first_eos]
    assert full.history.shape[0] == 16 and early.history.shape[0] == first_eos + 1


def test_early_exit_keeps_padded_rows_equal_to_single_rows(official_model):
    kwargs = dict(max_new_tokens=16, block_length=8, confidence_eos_eot_inf=True, early_exit=True)
    batch = official_model.generate(
        BATCH_IDS, attention_mask=BATCH_MASK, logits_processor=LogitsProcessorList([ForceEosFrom(3, 3)]), **kwargs
    )
    for row in range(3):
        pad = int((BATCH_MASK[row] == 0).sum())
        single = official_model.generate(
            BATCH_IDS[row : row + 1, pad:], logits_processor=LogitsProcessorList([ForceEosFrom(1, 3)]), **kwargs
        )
        assert batch[row, pad:].tolist() == single[0].tolist()


def test_infilling_fills_masks_inside_the_prompt(official_model):
    prompt = PROMPT.clone()
    prompt[0, 2] = prompt[0, 5] = MASK
    out = official_model.generate(prompt, max_new_tokens=8, steps=8, block_length=4, return_dict_in_generate=True)
    assert not (out.raw_sequences == MASK).any()
    kept = prompt[0] != MASK
    assert torch.equal(out.raw_sequences[0, :8][kept], prompt[0][kept])
    # the holes are committed during the first block, together with its 4 positions, in 4 steps
    assert out.commit_step[0, [2, 5]].max() <= 3


def test_output_history_records_every_step_and_the_commit_order(official_model):
    out = official_model.generate(PROMPT, max_new_tokens=16, steps=6, block_length=8, output_history=True)
    assert isinstance(out, LLaDAGenerateOutput)
    assert out.history.shape == (6, 1, 24)
    assert torch.equal(out.history[-1], out.raw_sequences)
    masked_after_step = (out.history[:, 0, 8:] == MASK).sum(-1).tolist()
    # 8 positions per block over 3 steps: 3, 3, 2 commits (the schedule), then the second block
    assert masked_after_step == [13, 10, 8, 5, 2, 0]
    for step in range(6):
        committed = out.commit_step[0] == step
        before = out.history[step - 1, 0] if step else torch.cat([PROMPT[0], torch.full((16,), MASK)])
        assert (before[committed] == MASK).all()
        assert torch.equal(out.history[step, 0][committed], out.raw_sequences[0][committed])
    assert (out.commit_step[0, :8] == -1).all() and (out.commit_step[0, 8:] >= 0).all()


def test_tokens_per_forward_is_new_tokens_over_steps(official_model):
    out = official_model.generate(BATCH_IDS, attention_mask=BATCH_MASK, max_new_tokens=16, steps=4, block_length=8,
                                  return_dict_in_generate=True)
    assert out.tokens_per_forward.tolist() == [4.0, 4.0, 4.0]


def test_num_return_sequences_repeats_each_prompt(official_model):
    torch.manual_seed(0)
    out = official_model.generate(BATCH_IDS, attention_mask=BATCH_MASK, max_new_tokens=16, temperature=1.0,
                                  num_return_sequences=2)
    assert out.shape == (6, 26)
    assert torch.equal(out[::2, :10], BATCH_IDS) and torch.equal(out[1::2, :10], BATCH_IDS)
    assert not torch.equal(out[0], out[1])


def test_saved_generation_config_drives_generate_without_kwargs(tmp_path, official_model):
    kwargs = dict(max_new_tokens=16, steps=8, block_length=4, cfg_scale=0.5, remasking="margin")
    expected = official_model.generate(PROMPT, **kwargs)
    official_model.generation_config = LLaDAGenerationConfig(eos_token_id=EOS, bos_token_id=302, **kwargs)
    try:
        official_model.save_pretrained(tmp_path)
    finally:
        official_model.generation_config = LLaDAGenerationConfig(eos_token_id=EOS, bos_token_id=302)
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(reloaded.generation_config, LLaDAGenerationConfig)
    assert reloaded.generation_config.block_length == 4
    assert torch.equal(reloaded.generate(PROMPT), expected)


def test_generation_config_rejects_unknown_fields():
    with pytest.raises(ValueError, match=r"unexpected fields \['stepz'\]"):
        LLaDAGenerationConfig(stepz=4)


class Recorder:
    """A streamer that records what it receives, and the canvas state when it receives it."""

    def __init__(self, drafts: bool):
        self.puts, self.drafts, self.ended = [], [], False
        if drafts:
            self.put_draft = lambda value: self.drafts.append(value.clone())

    def put(self, value):
        self.puts.append(value.clone())

    def end(self):
        self.ended = True


@pytest.mark.parametrize("block_length", [4, 16])
def test_streamer_gets_the_prompt_then_tokens_in_reading_order(official_model, block_length):
    streamer = Recorder(drafts=True)
    out = official_model.generate(PROMPT, max_new_tokens=16, block_length=block_length, streamer=streamer)
    assert torch.equal(streamer.puts[0], PROMPT[0])
    assert torch.equal(torch.cat(streamer.puts[1:]), out[0, 8:])
    assert streamer.ended and len(streamer.drafts) == 16
    assert torch.equal(streamer.drafts[-1], out[0, 8:])
    # each put follows the draft of the step that completed the prefix it carries (never later)
    emitted = 0
    for draft in streamer.drafts:
        open_positions = (draft == MASK).nonzero()
        ready = int(open_positions[0]) if len(open_positions) else 16
        assert ready >= emitted
        emitted = ready
    if block_length == 4:
        assert len(streamer.puts) - 1 >= 4  # at least once per block


def test_text_iterator_streamer_yields_the_decoded_answer(official_model):
    tokenizer = word_tokenizer()
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(ids=official_model.generate(PROMPT, max_new_tokens=16, block_length=4,
                                                                 streamer=streamer))
    )
    thread.start()
    text = "".join(streamer)
    thread.join()
    assert text.split() == tokenizer.decode(result["ids"][0, 8:]).split()


def test_streaming_a_batch_raises(official_model):
    with pytest.raises(ValueError, match="single sequence"):
        official_model.generate(BATCH_IDS, attention_mask=BATCH_MASK, max_new_tokens=16, streamer=Recorder(False))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=16, block_length=5), r"max_new_tokens \(16\) must be a multiple of block_length \(5\)"),
        (dict(max_new_tokens=16, block_length=4, steps=6), r"steps \(6\) must be a multiple of the number of blocks \(4"),
        (dict(steps=0), "`steps` must be a positive integer, got 0"),
        (dict(remasking="lowest"), r"`remasking` must be one of .*'lowest'"),
        (dict(temperature=-0.5), "`temperature` must be a finite number >= 0.*-0.5"),
        (dict(temperature=float("nan")), "`temperature` must be a finite number >= 0.*nan"),
        (dict(temperature=float("inf")), "`temperature` must be a finite number >= 0.*inf"),
        (dict(cfg_scale=-1.0), "`cfg_scale` must be a finite number >= 0"),
        (dict(cfg_scale=float("nan")), "`cfg_scale` must be a finite number >= 0.*nan"),
        (dict(cfg_scale=float("inf")), "`cfg_scale` must be a finite number >= 0.*inf"),
        (dict(top_p=1.5), "`top_p` must be in"),
        (dict(max_new_tokens=250), r"8 \+ max_new_tokens 250 = 258 exceeds the model's max_sequence_length \(256\)"),
        (dict(num_beams=2), r"num_beams=2: not supported by LLaDA's diffusion generation"),
        (dict(mask_token_id=999), "mask_token_id=999 is outside"),
    ],
)
def test_invalid_settings_raise_clear_errors(official_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        official_model.generate(PROMPT, **kwargs)


def test_missing_mask_id_raises():
    model = tiny_model()
    model.config.mask_token_id = None
    with pytest.raises(ValueError, match="No mask token id"):
        model.generate(torch.tensor([[1, 2]]), max_new_tokens=4)


def test_right_padding_is_rejected(official_model):
    mask = torch.ones_like(BATCH_IDS)
    mask[0, -2:] = 0
    with pytest.raises(ValueError, match="right padding.*padding_side = 'left'"):
        official_model.generate(BATCH_IDS, attention_mask=mask, max_new_tokens=16)


def test_padding_with_the_mask_id_is_rejected(official_model):
    ids = BATCH_IDS.clone()
    ids[0, :3] = MASK
    with pytest.raises(ValueError, match=r"Padding positions hold the mask token id \(300\)"):
        official_model.generate(ids, attention_mask=BATCH_MASK, max_new_tokens=16)


def test_generate_works_in_inference_mode_and_bf16(fixture_dir):
    model = AutoModel.from_pretrained(fixture_dir, dtype=torch.bfloat16)
    with torch.inference_mode():
        out = model.generate(PROMPT, max_new_tokens=8, steps=4, cfg_scale=0.5, temperature=0.5)
    assert out.shape == (1, 16) and not (out == MASK).any()


@pytest.mark.parametrize("task_type", [None, "CAUSAL_LM"])
def test_peft_wrapped_model_generates_like_the_base_model(fixture_dir, task_type):
    from peft import LoraConfig, get_peft_model

    base = AutoModel.from_pretrained(fixture_dir)
    expected = base.generate(PROMPT, max_new_tokens=16, block_length=8)
    # LoRA starts as the identity (B = 0): the wrapped model must generate exactly what the base did
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type=task_type))
    out = peft_model.generate(input_ids=PROMPT, max_new_tokens=16, block_length=8)
    assert torch.equal(out, expected)


class BanEverything(LogitsProcessor):
    def __call__(self, input_ids, scores):
        return torch.full_like(scores, -torch.inf)


class OnlyTheMaskToken(LogitsProcessor):
    def __call__(self, input_ids, scores):
        allowed = torch.full_like(scores, -torch.inf)
        allowed[:, MASK] = 0.0
        return allowed


@pytest.mark.parametrize("threshold", [None, 0.9])
@pytest.mark.parametrize("processor", [BanEverything(), OnlyTheMaskToken()])
def test_a_processor_that_leaves_no_token_raises_instead_of_returning_masks(official_model, processor, threshold):
    with pytest.raises(ValueError, match=r"left \d+ position\(s\) masked.*logits processor"):
        official_model.generate(PROMPT, max_new_tokens=8, steps=8, threshold=threshold,
                                logits_processor=LogitsProcessorList([processor]))


@pytest.mark.parametrize("kwargs", [dict(temperature=100.0), dict(temperature=100.0, remasking="random"),
                                    dict(cfg_scale=1e6), dict(temperature=5.0, top_p=1.0, cfg_scale=3.0)])
def test_extreme_settings_never_leave_a_mask_or_an_id_outside_the_vocabulary(kwargs):
    # head rows 60..63 pad the vocabulary (OLMo style)
    model = tiny_model(vocab_size=60, embedding_size=64, mask_token_id=59, eos_token_id=58, pad_token_id=58,
                       bos_token_id=57)
    torch.manual_seed(0)
    out = model.generate(torch.randint(0, 58, (4, 6)), max_new_tokens=16, steps=16, block_length=8, **kwargs)
    assert not (out == 59).any() and (out < 60).all()


def test_a_padded_batch_without_attention_mask_is_read_as_left_padded(official_model, caplog):
    kwargs = dict(max_new_tokens=16, steps=16, block_length=8)
    expected = official_model.generate(BATCH_IDS, attention_mask=BATCH_MASK, **kwargs)
    with caplog.at_level("WARNING"):
        assert torch.equal(official_model.generate(BATCH_IDS, **kwargs), expected)
    assert "treating those leading pad tokens as left padding" in caplog.text

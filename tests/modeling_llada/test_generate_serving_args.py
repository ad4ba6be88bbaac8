"""What servers and pipelines pass to `generate` (issue #20): padding after the first EOS as autoregressive generate
does, `stop_strings` with `tokenizer`, streamers that stop with the answer, and transformers' other arguments.

A logits processor forces a known canvas on the tiny model, so every expectation is computed by hand. The tiny
tokenizer is word level: ids 0..63 are "t0".."t63", joined by single spaces; mask t60, EOS (and pad) t61.
"""

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, TextIteratorStreamer, pipeline

from modeling_llada import LLaDAGenerateOutput, LLaDAGenerationConfig
from modeling_llada.answers_llada import stop_string_horizon, tokens_before_stop
from tests.utils import tiny_chat_tokenizer, tiny_model

EOS, MASK = 61, 60
PROMPT = torch.tensor([[1, 2, 3]])
P = 3


class Canvas(LogitsProcessor):
    """Forces `answers[row][i]` at answer position i: every other token gets -inf, so that token is proposed with
    probability 1 and, confidences tied, positions are committed left to right. Works for any block length: the
    current block is the one holding the row's first mask."""

    def __init__(self, answers: list[list[int]], prompt_length: int, block_length: int):
        self.answers = torch.tensor(answers)
        self.prompt_length, self.block_length = prompt_length, block_length

    def __call__(self, input_ids, scores):
        rows = self.answers.shape[0]
        width = scores.shape[0] // rows
        flat = torch.arange(scores.shape[0])
        row, offset = flat // width, flat % width
        first_mask = (input_ids[:, self.prompt_length :] == MASK).long().argmax(-1)  # one per flattened position
        block_start = first_mask // self.block_length * self.block_length
        forced = torch.full_like(scores, -torch.inf)
        forced[flat, self.answers[row, block_start + offset]] = 0.0
        return forced


def run(answers, prompt=PROMPT, block_length=None, **kwargs):
    n = len(answers[0])
    block_length = block_length or n
    processors = LogitsProcessorList([Canvas(answers, prompt.shape[1], block_length)])
    return MODEL.generate(prompt, max_new_tokens=n, block_length=block_length, logits_processor=processors,
                          **kwargs)


MODEL = tiny_model()
TOKENIZER = tiny_chat_tokenizer()
CANVAS = [5, 6, 7, 8, 9, 10, 11, 12]


def test_the_canvas_processor_forces_the_canvas():
    assert run([CANVAS])[0].tolist() == [1, 2, 3, *CANVAS]
    assert run([CANVAS], block_length=2, steps=8)[0].tolist() == [1, 2, 3, *CANVAS]


# ---- padding after the first EOS ----

def test_after_the_first_eos_only_padding_is_returned_and_the_raw_canvas_is_kept():
    answer = [5, 6, EOS, 7, 8, EOS, 9, 9]
    assert run([answer])[0].tolist() == [1, 2, 3, 5, 6, EOS, EOS, EOS, EOS, EOS, EOS]
    out = run([answer], return_dict_in_generate=True, pad_token_id=0)
    assert isinstance(out, LLaDAGenerateOutput)
    assert out.sequences.tolist() == [[1, 2, 3, 5, 6, EOS, 0, 0, 0, 0, 0]]  # the first EOS stays, then the pad id
    assert out.raw_sequences.tolist() == [[1, 2, 3, *answer]]
    assert out.answer_lengths.tolist() == [2] and out.stopped.tolist() == [True]


def test_a_list_of_eos_ids_ends_the_answer_at_the_first_of_any_and_pads_with_the_first_without_a_pad_id():
    model = tiny_model(pad_token_id=None)
    answer = [5, 59, 6, EOS, 7, 8, 9, 10]
    processors = LogitsProcessorList([Canvas([answer], 3, 8)])
    out = model.generate(PROMPT, max_new_tokens=8, logits_processor=processors, eos_token_id=[EOS, 59],
                         return_dict_in_generate=True)
    assert out.sequences.tolist() == [[1, 2, 3, 5, 59, EOS, EOS, EOS, EOS, EOS, EOS]]  # pad = the first EOS id
    assert out.answer_lengths.tolist() == [1] and out.stopped.tolist() == [True]
    out = model.generate(PROMPT, max_new_tokens=8, logits_processor=processors, eos_token_id=[59, EOS])
    assert out.tolist() == [[1, 2, 3, 5, 59, 59, 59, 59, 59, 59, 59]]


def test_a_row_without_eos_is_returned_whole_and_marked_as_out_of_budget():
    out = run([CANVAS], return_dict_in_generate=True)
    assert torch.equal(out.sequences, out.raw_sequences)
    assert out.answer_lengths.tolist() == [8] and out.stopped.tolist() == [False]


def test_eos_in_the_left_padding_of_the_prompt_is_not_an_answer_end():
    ids = torch.tensor([[EOS, EOS, 1], [1, 2, 3]])
    out = run([CANVAS, [5, EOS, 6, 7, 8, 9, 10, 11]], prompt=ids, attention_mask=torch.tensor([[0, 0, 1], [1, 1, 1]]),
              return_dict_in_generate=True)
    assert out.sequences.tolist() == [[EOS, EOS, 1, *CANVAS], [1, 2, 3, 5, EOS] + [EOS] * 6]
    assert out.answer_lengths.tolist() == [8, 1] and out.stopped.tolist() == [False, True]


# ---- stop strings ----

@pytest.mark.parametrize(
    "stop_strings, kept",
    [
        ("t8", [5, 6, 7]),  # a string, as transformers allows
        (["t8"], [5, 6, 7]),
        (["t10", "t7"], [5, 6]),  # the earliest in the text wins, whatever the order of the list
        (["t7 t8"], [5, 6]),  # spanning two tokens
        ([" t7"], [5, 6]),  # beginning with the space between two tokens
        (["6 t7"], [5, 6]),  # beginning inside a token: that token carries "t" before it and stays
        (["t5"], []),  # at the very start: an empty answer
        (["t40", "t8 t10"], CANVAS),  # absent
    ],
)
def test_the_answer_ends_where_the_earliest_stop_string_begins(stop_strings, kept):
    out = run([CANVAS], stop_strings=stop_strings, tokenizer=TOKENIZER, pad_token_id=0, return_dict_in_generate=True)
    found = len(kept) < len(CANVAS)
    assert out.sequences.tolist() == [[1, 2, 3, *kept] + [0] * (8 - len(kept))]
    assert out.raw_sequences.tolist() == [[1, 2, 3, *CANVAS]]
    assert out.answer_lengths.tolist() == [len(kept)] and out.stopped.tolist() == [found]


def test_a_stop_string_before_the_eos_wins_and_one_after_it_is_never_seen():
    answer = [5, 6, 7, EOS, 8, 9, 10, 11]
    out = run([answer], stop_strings=["t6"], tokenizer=TOKENIZER, pad_token_id=0, return_dict_in_generate=True)
    assert out.sequences.tolist() == [[1, 2, 3, 5, 0, 0, 0, 0, 0, 0, 0]]  # no EOS is kept: the stop string ended it
    assert out.answer_lengths.tolist() == [1] and out.stopped.tolist() == [True]
    out = run([answer], stop_strings=["t9"], tokenizer=TOKENIZER, pad_token_id=0, return_dict_in_generate=True)
    assert out.sequences.tolist() == [[1, 2, 3, 5, 6, 7, EOS, 0, 0, 0, 0]]
    assert out.answer_lengths.tolist() == [3] and out.stopped.tolist() == [True]


def test_a_special_token_can_be_a_stop_string():
    tokenizer = tiny_chat_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["t59"]})  # the end of turn, as `<|eot_id|>`
    out = run([[5, 6, 59, 7] + [8] * 4], stop_strings=["t59"], tokenizer=tokenizer, pad_token_id=0)
    assert out.tolist() == [[1, 2, 3, 5, 6, 0, 0, 0, 0, 0, 0]]


def test_batch_rows_stop_at_their_own_stop_points_and_equal_their_single_runs():
    answers = [CANVAS, [9, 8, 7, 6, 5, 4, 3, 2], [20, 21, EOS, 7, 8, 9, 10, 11], [40, 41, 42, 43, 44, 45, 46, 47]]
    kwargs = dict(stop_strings=["t7", "t3"], tokenizer=TOKENIZER, return_dict_in_generate=True)
    out = run(answers, prompt=PROMPT.repeat(4, 1), **kwargs)
    pad = [EOS] * 8
    expected = [[5, 6], [9, 8], [20, 21, EOS], [40, 41, 42, 43, 44, 45, 46, 47]]
    assert out.sequences[:, 3:].tolist() == [(row + pad)[:8] for row in expected]
    assert out.answer_lengths.tolist() == [2, 2, 2, 8] and out.stopped.tolist() == [True, True, True, False]
    for row, answer in enumerate(answers):
        alone = run([answer], **kwargs)
        assert torch.equal(alone.sequences[0], out.sequences[row]) and torch.equal(alone.stopped[0], out.stopped[row])


def test_stop_strings_work_as_a_generation_config_field_and_from_a_plain_generation_config():
    llada = LLaDAGenerationConfig(stop_strings=["t7"], max_new_tokens=8)
    processors = LogitsProcessorList([Canvas([CANVAS], 3, 8)])
    expected = [[1, 2, 3, 5, 6] + [EOS] * 6]
    assert MODEL.generate(PROMPT, generation_config=llada, logits_processor=processors, tokenizer=TOKENIZER).tolist() \
        == expected
    plain = GenerationConfig(stop_strings="t7", max_new_tokens=8, do_sample=False)
    assert MODEL.generate(PROMPT, generation_config=plain, logits_processor=processors, tokenizer=TOKENIZER).tolist() \
        == expected
    assert LLaDAGenerationConfig.from_dict(llada.to_dict()).stop_strings == ["t7"]


def test_stop_strings_without_a_tokenizer_raise_naming_both():
    with pytest.raises(ValueError, match="`stop_strings` needs the model's tokenizer.*`tokenizer=`"):
        run([CANVAS], stop_strings=["t7"])


@pytest.mark.parametrize("bad", ["", [""], 5, ["t1", 2]])
def test_invalid_stop_strings_raise(bad):
    with pytest.raises(ValueError, match="`stop_strings` must be a non-empty string"):
        run([CANVAS], stop_strings=bad, tokenizer=TOKENIZER)


def test_a_tokenizer_without_stop_strings_is_accepted_and_changes_nothing():
    assert torch.equal(run([CANVAS], tokenizer=TOKENIZER), run([CANVAS]))


def test_stop_string_horizon_holds_back_what_a_stop_string_may_still_begin_in():
    assert stop_string_horizon("a b c", ["b"], complete=True) == (2, True)
    assert stop_string_horizon("a b c", ["x"], complete=True) == (5, False)
    # "c d" may still become "c d e": it begins at 4, unless the text is complete
    assert stop_string_horizon("a b c d", ["c d e"], complete=False) == (4, False)
    assert stop_string_horizon("a b c d", ["c d e"], complete=True) == (7, False)
    # a present stop string is final only when no longer one can begin before it
    assert stop_string_horizon("a b c", ["c", "b c d"], complete=False) == (2, False)
    assert stop_string_horizon("a b c", ["c", "x"], complete=False) == (4, True)
    assert stop_string_horizon("ab\ufffd", ["z"], complete=False) == (2, False)  # incomplete UTF-8 at the end
    assert tokens_before_stop(TOKENIZER, [5, 6, 7], "t5 t6 t7", 6) == 2  # "t7": the space before it is not kept


# ---- early exit on stop strings ----

def test_early_exit_skips_the_blocks_after_a_stop_string_and_returns_the_same_answer():
    kwargs = dict(block_length=2, steps=8, stop_strings=["t7"], tokenizer=TOKENIZER, return_dict_in_generate=True,
                  output_history=True)
    full = run([CANVAS], **kwargs)
    early = run([CANVAS], early_exit=True, **kwargs)
    assert full.history.shape[0] == 8 and early.history.shape[0] == 4  # blocks [5 6] and [7 8], then done
    assert torch.equal(early.sequences, full.sequences) and early.sequences[0, 3:5].tolist() == [5, 6]
    assert early.raw_sequences[0, 3:].tolist() == [5, 6, 7, 8, EOS, EOS, EOS, EOS]  # the rest filled with the pad id
    assert early.tokens_per_forward.tolist() == [1.0]


def test_early_exit_waits_while_a_longer_stop_string_may_still_begin_earlier():
    kwargs = dict(block_length=2, steps=8, stop_strings=["t8", "t7 t8 t9"], tokenizer=TOKENIZER,
                  return_dict_in_generate=True, output_history=True)
    early = run([CANVAS], early_exit=True, **kwargs)
    assert early.history.shape[0] == 6  # after [7 8], "t7 t8" may still become "t7 t8 t9"; it does in block 3
    assert early.sequences[0, 3:].tolist() == [5, 6] + [EOS] * 6
    assert torch.equal(early.sequences, run([CANVAS], **kwargs).sequences)


# ---- streamers ----

class Recorder:
    def __init__(self):
        self.puts, self.ended = [], False

    def put(self, value):
        self.puts.append(value.tolist())

    def end(self):
        self.ended = True


@pytest.mark.parametrize("block_length", [2, 8])
def test_a_streamer_receives_the_answer_and_its_eos_but_nothing_after(block_length):
    streamer = Recorder()
    out = run([[5, 6, 7, EOS, 8, 9, 10, 11]], block_length=block_length, steps=8, streamer=streamer)
    assert streamer.puts[0] == [1, 2, 3] and streamer.ended
    assert sum(streamer.puts[1:], []) == [5, 6, 7, EOS]
    assert out[0, 3:].tolist() == [5, 6, 7] + [EOS] * 5


@pytest.mark.parametrize(
    "stop_strings, streamed, puts",
    [
        (["t6 t7"], [5], [[5]]),  # "t6" is held back (it may begin "t6 t7"), then dropped
        (["t6 t9"], CANVAS, [[5], [6, 7, 8], [9, 10], [11, 12]]),  # held back, then released with the next block
        (["t12"], [5, 6, 7, 8, 9, 10, 11], [[5, 6], [7, 8], [9, 10], [11]]),
    ],
)
def test_a_streamer_never_receives_a_stop_string_or_what_follows(stop_strings, streamed, puts):
    streamer = Recorder()  # one block of two tokens per step
    out = run([CANVAS], block_length=2, steps=4, streamer=streamer, stop_strings=stop_strings, tokenizer=TOKENIZER,
              return_dict_in_generate=True)
    assert streamer.puts[1:] == puts and streamer.ended
    assert out.sequences[0, 3 : 3 + int(out.answer_lengths[0])].tolist() == streamed


def test_a_text_streamer_prints_only_the_answer():
    streamer = TextIteratorStreamer(TOKENIZER, skip_prompt=True, skip_special_tokens=True)
    run([[5, 6, EOS, 7, 8, 9, 10, 11]], block_length=2, steps=8, streamer=streamer)
    assert "".join(streamer).split() == ["t5", "t6"]
    streamer = TextIteratorStreamer(TOKENIZER, skip_prompt=True)
    run([CANVAS], block_length=4, steps=8, streamer=streamer, stop_strings="t9", tokenizer=TOKENIZER)
    assert "".join(streamer).split() == ["t5", "t6", "t7", "t8"]


# ---- consumers that decode with skip_special_tokens ----

def test_decoding_with_skip_special_tokens_gives_the_answer_without_trailing_text():
    out = run([[5, 6, EOS, 7, 8, 9, 10, 11], [12, 13, 14, EOS, 15, 16, 17, 18]], prompt=PROMPT.repeat(2, 1))
    assert TOKENIZER.batch_decode(out[:, 3:], skip_special_tokens=True) == ["t5 t6", "t12 t13 t14"]


def test_the_text_generation_pipeline_returns_the_answer_and_honours_stop_sequence():
    generator = pipeline("text-generation", model=MODEL, tokenizer=TOKENIZER)
    processors = LogitsProcessorList([Canvas([[5, 6, 7, EOS, 8, 9, 10, 11]], 3, 8)])
    result = generator("t1 t2 t3", return_full_text=False, max_new_tokens=8, logits_processor=processors)
    assert result[0]["generated_text"] == "t5 t6 t7"
    result = generator("t1 t2 t3", return_full_text=False, max_new_tokens=8, logits_processor=processors,
                       stop_sequence="t7")
    assert result[0]["generated_text"] == "t5 t6"


# ---- transformers' other generate arguments ----

def test_inputs_is_the_prompt_as_in_transformers():
    assert torch.equal(MODEL.generate(inputs=PROMPT, max_new_tokens=4), MODEL.generate(PROMPT, max_new_tokens=4))
    with pytest.raises(ValueError, match="both `input_ids` and `inputs`"):
        MODEL.generate(PROMPT, inputs=PROMPT, max_new_tokens=4)


def test_neutral_autoregressive_arguments_are_accepted():
    expected = MODEL.generate(PROMPT, max_new_tokens=4)
    out = MODEL.generate(PROMPT, max_new_tokens=4, synced_gpus=False, assistant_model=None, streamer=None,
                         prefix_allowed_tokens_fn=None, negative_prompt_ids=None, stopping_criteria=None)
    assert torch.equal(out, expected)


@pytest.mark.parametrize(
    "name, value",
    [
        ("assistant_model", MODEL),
        ("assistant_tokenizer", TOKENIZER),
        ("prefix_allowed_tokens_fn", lambda batch, ids: [1]),
        ("negative_prompt_ids", PROMPT),
        ("negative_prompt_attention_mask", torch.ones_like(PROMPT)),
        ("custom_generate", "some/repo"),
    ],
)
def test_autoregressive_arguments_raise_naming_them(name, value):
    with pytest.raises(ValueError, match=f"`{name}`: not supported by LLaDA's diffusion generation"):
        MODEL.generate(PROMPT, max_new_tokens=4, **{name: value})


def test_synced_gpus_is_refused_only_where_ranks_could_fall_out_of_step():
    expected = MODEL.generate(PROMPT, max_new_tokens=4)
    assert torch.equal(MODEL.generate(PROMPT, max_new_tokens=4, synced_gpus=True), expected)
    with pytest.raises(ValueError, match="synced_gpus=True with early_exit"):
        MODEL.generate(PROMPT, max_new_tokens=4, synced_gpus=True, early_exit=True)


def test_padded_rows_with_early_exit_and_stop_strings_equal_their_single_runs_and_copies_stop_alike():
    ids = torch.tensor([[EOS, EOS, 1], [1, 2, 3]])
    mask = torch.tensor([[0, 0, 1], [1, 1, 1]])
    answers = [CANVAS, CANVAS, [9, 8, 7, 6, 5, 4, 3, 2], [9, 8, 7, 6, 5, 4, 3, 2]]
    kwargs = dict(block_length=2, steps=8, stop_strings=["t6"], tokenizer=TOKENIZER, early_exit=True,
                  return_dict_in_generate=True)
    out = run(answers, prompt=ids, attention_mask=mask, num_return_sequences=2, **kwargs)
    assert out.sequences[:, 3:].tolist() == [[5] + [EOS] * 7] * 2 + [[9, 8, 7] + [EOS] * 5] * 2
    assert out.answer_lengths.tolist() == [1, 1, 3, 3] and out.stopped.all()
    alone = run([CANVAS], prompt=torch.tensor([[1]]), **kwargs)
    assert alone.sequences[0, 1:].tolist() == out.sequences[0, 3:].tolist()
    alone = run([answers[2]], prompt=torch.tensor([[1, 2, 3]]), **kwargs)
    assert torch.equal(alone.sequences[0], out.sequences[2]) and torch.equal(alone.raw_sequences[0], out.raw_sequences[3])

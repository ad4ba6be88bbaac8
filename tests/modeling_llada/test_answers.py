"""Where an answer ends, as a client reads it (`AnswerText`): end ids, the token budget, stop strings held back while
they may be forming, and work linear in the answer's length."""

from modeling_llada.answers_llada import AnswerText


class CharTokenizer:
    """One character per token; id 0 is EOS (decoded as nothing), 1 the mask."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join("" if i in (0, 1) else chr(i) for i in ids)


def ids(text):
    return [ord(c) for c in text]


def test_the_answer_ends_at_eos_and_counts_its_tokens():
    tracker = AnswerText(CharTokenizer(), [0], [], max_tokens=16)
    assert tracker.feed(ids("ab")) == "ab" and not tracker.done
    assert tracker.feed(ids("c") + [0] + ids("junk")) == "c"
    assert tracker.done and tracker.finish_reason == "stop" and tracker.completion_tokens == 3
    assert tracker.finish() == "" and tracker.text == "abc"


def test_the_budget_ends_the_answer_with_length():
    tracker = AnswerText(CharTokenizer(), [0], [], max_tokens=3)
    text = tracker.feed(ids("abcdef")) + tracker.finish()
    assert text == "abc" and tracker.finish_reason == "length" and tracker.completion_tokens == 3
    tracker = AnswerText(CharTokenizer(), [0], [], max_tokens=8)  # canvas full, no EOS
    assert tracker.feed(ids("abc")) + tracker.finish() == "abc" and tracker.finish_reason == "length"


def test_a_stop_string_is_cut_and_held_back_while_it_may_be_forming():
    tracker = AnswerText(CharTokenizer(), [0], ["END"], max_tokens=32)
    sent = tracker.feed(ids("abE"))
    assert sent == "ab"  # "E" may begin "END"
    sent += tracker.feed(ids("x"))
    assert sent == "abEx"
    sent += tracker.feed(ids("yEN"))
    sent += tracker.feed(ids("Dzz"))
    assert sent + tracker.finish() == "abExy" and tracker.done and tracker.finish_reason == "stop"
    assert tracker.completion_tokens == 5


class CountingTokenizer(CharTokenizer):
    """Counts the tokens it is asked to decode."""

    def __init__(self):
        self.decoded = 0

    def decode(self, ids, skip_special_tokens=True):
        self.decoded += len(ids)
        return super().decode(ids, skip_special_tokens)


def test_feeding_one_token_at_a_time_decodes_each_token_a_bounded_number_of_times():
    tokenizer = CountingTokenizer()
    tracker = AnswerText(tokenizer, [0], ["STOP", "!!"], max_tokens=10_000)
    answer = "the answer goes on and on " * 80  # 2080 tokens
    sent = "".join(tracker.feed([token]) for token in ids(answer)) + tracker.finish()
    assert sent == answer and tracker.completion_tokens == len(answer)
    # a whole-answer decode per update would decode len * (len + 1) / 2 ~ 2.2 million tokens
    assert tokenizer.decoded <= 4 * len(answer)


def byte_level_tokenizer():
    """A byte-level BPE (LLaDA's kind of tokenizer) trained on a few lines: characters outside ASCII span several
    tokens, so a token can end inside a character."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = ["Hello world, this is LLaDA.", "Next line: 12 345.", "diffusion language models"] * 3
    backend.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")


def test_the_text_equals_one_decode_of_the_whole_answer_with_a_real_tokenizer():
    tokenizer = byte_level_tokenizer()
    text = "Hello world, this is LLaDA. Ünïcödé – ok?\nNext line: 12 345."
    answer = tokenizer(text, add_special_tokens=False)["input_ids"]
    tracker = AnswerText(tokenizer, [tokenizer.eos_token_id], [], max_tokens=1000)
    sent = "".join(tracker.feed([token]) for token in answer) + tracker.finish()
    assert sent == tokenizer.decode(answer, skip_special_tokens=True)
    tracker = AnswerText(tokenizer, [tokenizer.eos_token_id], ["line:"], max_tokens=1000)
    sent = "".join(tracker.feed(answer[i:i + 3]) for i in range(0, len(answer), 3)) + tracker.finish()
    whole = tokenizer.decode(answer, skip_special_tokens=True)
    assert sent == whole[:whole.index("line:")] and tracker.finish_reason == "stop"
    # the tokens wholly before the stop string: their decode ends at or before where it begins
    kept = tracker.completion_tokens
    assert len(tokenizer.decode(answer[:kept])) <= whole.index("line:") < len(tokenizer.decode(answer[:kept + 1]))

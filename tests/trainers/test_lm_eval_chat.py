"""The `llada` lm-eval model scores chat-template tasks: answers end at the end-of-turn token and at the earliest
`until` string of their own request."""

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402

from llada_cli.evaluate import main  # noqa: E402
from llada_cli.local_data import EOS, EOT, train_tokenizer  # noqa: E402
from modeling_llada.answers_llada import (  # noqa: E402
    AnswerText,
    decode_answers,
    end_of_turn_id,
    end_token_ids,
)
from tests.modeling_llada.test_answers import CharTokenizer  # noqa: E402
from tests.trainers.test_sft import sft_config  # noqa: E402
from tests.utils import tiny_chat_tokenizer, tiny_model  # noqa: E402
from trainers import MaskedDiffusionSFTTrainer  # noqa: E402
from trainers.lm_eval_llada import LLaDAEvalModel  # noqa: E402

TASKS = Path(__file__).resolve().parents[1] / "fixtures" / "lm_eval_tasks"
TASK = "toy_chat_sum"
TRAILING = "\n\nQuestion: more"  # what every other training answer goes on with, before the end of its turn


def chat_tokenizer(texts):
    """A byte-level BPE with LLaDA's special tokens and chat template (`<|eot_id|>` ends a turn), trained on the
    task's own text so that the prompts are short."""
    return train_tokenizer(texts * 4, vocab_size=320)


def llada_tokenizer():
    return chat_tokenizer(["What is 1 + 2?", "Question: more", "user assistant"])


# -- the cutting, without a model ------------------------------------------------------------------------------------
def test_an_answer_ends_at_the_earliest_stop_string():
    def cut(text, until):
        answer = AnswerText(CharTokenizer(), [], until)
        answer.feed([ord(c) for c in text], final=True)
        return answer.text

    assert cut("7 then\n\nQuestion: more", ["Question:", "\n\n"]) == "7 then"
    assert cut("7 Question: a\n\nb", ["\n\n", "Question:"]) == "7 "
    assert cut("7", ["\n\n"]) == "7" and cut("7\n", []) == "7\n"


def test_an_answer_ends_at_the_first_eos_or_end_of_turn_id():
    tokenizer = llada_tokenizer()
    eos, eot = tokenizer.convert_tokens_to_ids([EOS, EOT])
    assert end_of_turn_id(tokenizer) == eot
    assert end_token_ids(eos, tokenizer) == [eos, eot]
    assert end_token_ids([7, eos], tokenizer) == [7, eos, eot]  # a list of model EOS ids: each ends an answer
    assert end_token_ids(None, tokenizer) == [eos, eot]
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    canvas = [ids(f"7{EOT}\n\nQuestion: more{EOS}{EOS}"),  # ends at <|eot_id|>
              ids(f"8\n\nQuestion: more{EOT}{EOS}{EOS}{EOS}"),  # ends at "\n\n"
              ids(f"9 Question: x\n\n{EOS}{EOT}{EOS}{EOS}"),  # ends at "Question:", the earliest stop string
              ids(f"6 more{EOS}{EOT}\n\n{EOS}")]  # ends at EOS
    width = max(len(row) for row in canvas)
    rows = torch.tensor([row + [eos] * (width - len(row)) for row in canvas])
    until = ["\n\n", "Question:"]
    assert decode_answers(tokenizer, rows, [eos, eot], until) == ["7", "8", "9 ", "6 more"]
    # with EOS alone, the end of turn stays in the text (decoded without special tokens) and trailing text follows
    assert decode_answers(tokenizer, rows, [eos], [])[0] == "7\n\nQuestion: more"
    # the model's generation config may list several EOS ids: the first of any of them ends the answer
    (more,) = ids(" more")
    assert decode_answers(tokenizer, rows, [more, eot], []) == ["7", "8\n\nQuestion:", "9 Question: x\n\n", "6"]


def test_the_tiny_template_ends_its_turns_with_t59():
    assert end_of_turn_id(tiny_chat_tokenizer()) == 59
    assert end_token_ids([61, 59], tiny_chat_tokenizer()) == [61, 59]


def test_requests_with_different_stop_strings_are_cut_by_their_own(tmp_path, monkeypatch):
    """Requests of several tasks arrive together: each is cut at its own `until`, batched only with requests of the
    same generation kwargs, and the answers come back in the request order."""
    tiny_model().save_pretrained(tmp_path / "m")
    tiny_chat_tokenizer().save_pretrained(tmp_path / "m")
    lm = LLaDAEvalModel(pretrained=str(tmp_path / "m"), batch_size="8", max_new_tokens="4")
    canvas = [3, 4, 5, 59]  # every request generates "t3 t4 t5 <eot>"
    calls = []

    def generate(input_ids, attention_mask, max_new_tokens, **kwargs):
        calls.append((input_ids.shape[0], max_new_tokens))
        rows = torch.tensor([canvas + [61] * (max_new_tokens - len(canvas))] * input_ids.shape[0])
        return type("Out", (), {"sequences": torch.cat([input_ids, rows], 1),
                                "tokens_per_forward": torch.ones(input_ids.shape[0])})()

    monkeypatch.setattr(lm.model, "generate", generate)
    settings = [{"until": ["t4"], "max_gen_toks": 4}, {"until": ["t5"], "max_gen_toks": 4},
                {"until": "t3", "max_gen_toks": 6}, {"until": ["t5", "t4"], "max_gen_toks": 4}, {"until": []}]
    requests = [Instance("generate_until", {}, ("t1 t2" + " t1" * i, settings[i % 5]), i) for i in range(10)]
    out = lm.generate_until(requests)
    assert out == ["t3 ", "t3 t4 ", "", "t3 ", "t3 t4 t5"] * 2
    assert sorted(calls) == [(2, 4)] * 4 + [(2, 6)]  # five kinds of settings, two requests each
    # a stop string that is a special token (which decoding drops) ends the answer as an id
    assert lm.end_ids == [61, 59] and lm._end_ids(["t62", "t5"]) == [61, 59, 62]


# -- a trained model on a local chat task ----------------------------------------------------------------------------
def training_set(rows):
    """The task's questions as chat turns; every other answer goes on with trailing text before its end of turn."""
    return {"prompt": [[{"role": "user", "content": row["question"]}] for row in rows],
            "completion": [[{"role": "assistant", "content": row["answer"] + (TRAILING if i % 2 else "")}]
                           for i, row in enumerate(rows)]}


@pytest.mark.slow
@pytest.mark.converges
def test_a_trained_chat_model_scores_what_its_cut_answers_score(tmp_path, monkeypatch):
    """A tiny LLaDA learns the local chat task; `llada-hf eval` with the chat template scores its answers, cut at
    `<|eot_id|>` and at the task's `until`, as the exact matches counted by hand from the logged samples. Every
    training answer ends with `<|eot_id|>` and every other one has trailing text before it, so uncut answers (the
    canvas decoded and cut at EOS alone) would all miss."""
    from datasets import Dataset

    monkeypatch.chdir(TASKS)  # the task's data_files is relative
    rows = [json.loads(line) for line in (TASKS / f"{TASK}.jsonl").read_text().splitlines()]
    tokenizer = chat_tokenizer([row["question"] for row in rows] + [TRAILING, "user assistant"])
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in ("<|startoftext|>", EOS, "<|mdm_mask|>")}
    vocab = len(tokenizer)
    model = tiny_model(d_model=64, mlp_hidden_size=128, vocab_size=vocab, embedding_size=vocab,
                       bos_token_id=ids["<|startoftext|>"], eos_token_id=ids[EOS], pad_token_id=ids[EOS],
                       mask_token_id=ids["<|mdm_mask|>"])
    trainer = MaskedDiffusionSFTTrainer(
        model, sft_config(tmp_path, per_device_train_batch_size=8, max_steps=200, learning_rate=5e-3,
                          warmup_steps=10, logging_steps=50),
        train_dataset=Dataset.from_dict(training_set(rows)), processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(tmp_path / "model"))
    tokenizer.save_pretrained(tmp_path / "model")

    # `llada-hf eval --apply_chat_template --log_samples`
    summary = main(["--model", str(tmp_path / "model"), "--tasks", TASK, "--include_path", str(TASKS),
                    "--apply_chat_template", "--batch_size", "4", "--log_samples",
                    "--output", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["samples"][TASK]
    score = summary["results"][TASK]["exact_match,none"]
    samples = sorted(summary["samples"][TASK], key=lambda sample: sample["doc_id"])
    answers = [sample["filtered_resps"][0] for sample in samples]
    assert len(samples) == len(rows) and [sample["target"] for sample in samples] == [row["answer"] for row in rows]
    by_hand = sum(answer == row["answer"] for answer, row in zip(answers, rows)) / len(rows)
    assert score == pytest.approx(by_hand)
    assert score >= 0.5, answers

    # the prompts went through the chat template, with the task's stop strings
    contexts = [sample["arguments"][0][0] for sample in samples]
    until = samples[0]["arguments"][0][1]["until"]
    assert until == ["Question:", "\n"]
    assert all(context.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
               for context in contexts)
    # the canvases themselves (generation is deterministic): cut as the adapter cuts them they give the logged
    # answers; decoded and cut at EOS alone (the old behaviour) they match no target
    lm = LLaDAEvalModel(pretrained=str(tmp_path / "model"))
    canvases = lm._generate([lm._encode(context) for context in contexts], 8)
    assert decode_answers(tokenizer, canvases, lm.end_ids, until) == [sample["resps"][0][0] for sample in samples]
    uncut = [tokenizer.decode(row).split(EOS)[0] for row in canvases.tolist()]
    assert not any(text == row["answer"] for text, row in zip(uncut, rows)), uncut

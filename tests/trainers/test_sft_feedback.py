"""What a user sees around an SFT run: sample answers after training, warnings for too little data or empty answers,
no pin-memory warnings on a CPU."""

import logging
import warnings

import pytest
import torch
from datasets import Dataset
from transformers import LogitsProcessor, LogitsProcessorList

from tests.utils import tiny_chat_tokenizer, tiny_model, word_tokenizer, words
from trainers import MaskedDiffusionConfig, MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer
from trainers.sft import SMALL_DATASET_PASSES

EOS = 61


def sft_config(tmp_path, **overrides) -> MaskedDiffusionSFTConfig:
    values = dict(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2,
                  report_to="none", use_cpu=True, logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0)
    values.update(overrides)
    return MaskedDiffusionSFTConfig(**values)


def dataset_of(rows: int) -> Dataset:
    prompts = [words([i % 50, (3 * i) % 50]) for i in range(rows)]
    answers = [" " + words([(7 * i) % 50, (11 * i + 1) % 50, 5]) for i in range(rows)]
    return Dataset.from_dict({"prompt": prompts, "completion": answers})


class Force(LogitsProcessor):
    """Every proposal is `token` (a stand-in for a model that has learned one answer)."""

    def __init__(self, token: int):
        self.token = token

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, float("-inf"))
        forced[..., self.token] = 0.0
        return forced


def trainer_for(tmp_path, rows: int, **overrides) -> MaskedDiffusionSFTTrainer:
    tokenizer = word_tokenizer(vocab_size=64, mask_id=60, eos_id=EOS, bos_id=62)
    return MaskedDiffusionSFTTrainer(tiny_model(), sft_config(tmp_path, **overrides), train_dataset=dataset_of(rows),
                                     processing_class=tokenizer)


@pytest.fixture
def sft_records(caplog):
    caplog.set_level(logging.WARNING, logger="trainers.sft")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "trainers.sft"]


def test_pin_memory_is_off_without_a_gpu_and_training_prints_no_pin_memory_warning(tmp_path):
    assert MaskedDiffusionSFTConfig(output_dir=str(tmp_path), use_cpu=True).dataloader_pin_memory is False
    assert MaskedDiffusionConfig(output_dir=str(tmp_path), use_cpu=True).dataloader_pin_memory is False
    # an explicit choice is kept
    assert MaskedDiffusionConfig(output_dir=str(tmp_path), dataloader_pin_memory=True).dataloader_pin_memory is True
    trainer = trainer_for(tmp_path, rows=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "pin_memory" in str(w.message)]


def test_a_run_that_reads_each_row_many_times_gets_a_warning_with_numbers_and_a_fix(tmp_path, sft_records):
    # 10 rows, 100 steps of 4: each row is read 40 times
    trainer_for(tmp_path, rows=10, max_steps=100)
    (message,) = [m for m in sft_records() if "small" in m]
    assert "10 rows" in message and "100 steps of 4" in message and "about 40 times" in message
    assert "max_steps=8" in message  # about 3 passes: ceil(3 * 10 / 4)


def test_enough_data_gets_no_warning(tmp_path, sft_records):
    # 200 rows, 10 steps of 4: 0.2 passes; the threshold itself is well above a normal fine-tuning run
    trainer_for(tmp_path, rows=200, max_steps=10)
    assert not [m for m in sft_records() if "small" in m]
    assert SMALL_DATASET_PASSES >= 10


def test_sample_answers_are_the_generated_text_cut_at_the_first_end_token(tmp_path, sft_records):
    trainer = trainer_for(tmp_path, rows=9)
    samples = trainer.sample_answers(3, logits_processor=LogitsProcessorList([Force(7)]))
    # prompts spread evenly over the data: rows 0, 4 and 8; the references are their completions
    assert [s["prompt"] for s in samples] == [words([i % 50, (3 * i) % 50]) for i in (0, 4, 8)]
    assert [s["reference"] for s in samples] == [words([(7 * i) % 50, (11 * i + 1) % 50, 5]) for i in (0, 4, 8)]
    # the canvas: the longest reference (3 tokens + the EOS TRL appends) rounded up to 8, every position "t7"
    assert [s["answer"] for s in samples] == [words([7] * 8)] * 3
    assert not [m for m in sft_records() if "empty" in m]


def test_all_empty_sample_answers_get_a_warning(tmp_path, sft_records):
    trainer = trainer_for(tmp_path, rows=4)
    samples = trainer.sample_answers(2, logits_processor=LogitsProcessorList([Force(EOS)]))
    assert [s["answer"] for s in samples] == ["", ""]
    (message,) = [m for m in sft_records() if "empty" in m]
    assert "All 2 sampled answers are empty" in message and "more examples" in message


def test_sample_answers_stop_at_the_chat_end_of_turn_token(tmp_path):
    tokenizer = tiny_chat_tokenizer()  # end of turn: t59
    chat = Dataset.from_dict({"prompt": [[{"role": "user", "content": "t1 t2"}]],
                              "completion": [[{"role": "assistant", "content": "t3 t4"}]]})
    trainer = MaskedDiffusionSFTTrainer(tiny_model(), sft_config(tmp_path), train_dataset=chat,
                                        processing_class=tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["t59"]})  # the template's end of turn, as in LLaDA

    class Answer(LogitsProcessor):  # "t9 t59 t8 ...": the answer ends at the end-of-turn token
        def __call__(self, input_ids, scores):  # scores: (rows x positions of the block, vocab), one row here
            positions = torch.arange(scores.shape[0]) % 8
            token = torch.where(positions == 0, 9, torch.where(positions == 1, 59, 8))
            forced = torch.full_like(scores, float("-inf"))
            forced[torch.arange(scores.shape[0]), token] = 0.0
            return forced

    (sample,) = trainer.sample_answers(1, logits_processor=LogitsProcessorList([Answer()]), block_length=8)
    assert sample["answer"] == "t9"


@pytest.mark.slow
def test_llada_hf_sft_prints_sample_answers_and_warns_about_a_tiny_dataset(tmp_path, capfd, sft_records):
    import json

    from llada_cli.main import main

    data = tmp_path / "five.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}.", "completion": f" {w}"}) + "\n"
                            for w in ("red", "green", "blue", "black", "white")))
    code = main(["sft", "--dataset_name", str(data), "--output_dir", str(tmp_path / "out"), "--max_steps", "40",
                 "--per_device_train_batch_size", "4", "--save_strategy", "no", "--sample_answers", "2",
                 "--disable_tqdm", "true"])
    out, _ = capfd.readouterr()
    assert code == 0
    # 40 steps of 4 examples over 5 rows: each row is read 32 times
    (warning,) = [m for m in sft_records() if "small" in m]
    assert "The train dataset is small for this run: 5 rows" in warning and "read each row about 32 times" in warning
    assert "Sample answers of the fine-tuned model (2 training prompts, greedy):" in out
    # the two prompts spread over the data: the first and the last row, with their expected answers
    assert "prompt:   Say red." in out and "expected: red" in out
    assert "prompt:   Say white." in out and "expected: white" in out
    assert out.count("  answer:   ") == 2

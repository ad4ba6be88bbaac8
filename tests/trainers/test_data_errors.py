"""Training data mistakes are reported when the trainer is built, before any step: a `ValueError` naming the dataset
(train / eval), the columns or lengths found and the setting to change."""

import pytest
from datasets import Dataset

from tests.utils import tiny_chat_tokenizer, tiny_model
from trainers import MaskedDiffusionConfig, MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer, MaskedDiffusionTrainer
from llada_cli.loading import load_dataset_arg

PAIRS = {"prompt": ["t1 t2", "t3"], "completion": [" t4", " t5 t6"]}


def sft_trainer(tmp_path, train, eval_dataset=None, **overrides):
    args = MaskedDiffusionSFTConfig(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=2, max_steps=1,
                                    report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True,
                                    **overrides)
    return MaskedDiffusionSFTTrainer(tiny_model(), args, train_dataset=train, eval_dataset=eval_dataset,
                                     processing_class=tiny_chat_tokenizer())


def pretraining_trainer(tmp_path, train, eval_dataset=None, **overrides):
    args = MaskedDiffusionConfig(output_dir=str(tmp_path / "pretrain"), per_device_train_batch_size=2, max_steps=1,
                                 report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True, block_size=8,
                                 **overrides)
    return MaskedDiffusionTrainer(tiny_model(), args, train_dataset=train, eval_dataset=eval_dataset,
                                  processing_class=tiny_chat_tokenizer())


# -- SFT ---------------------------------------------------------------------------------------------------------------
def test_sft_rejects_an_empty_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"The train dataset is empty \(0 rows\)"):
        sft_trainer(tmp_path, Dataset.from_dict({"prompt": [], "completion": []}))


def test_sft_names_the_columns_found_and_the_formats_accepted(tmp_path):
    with pytest.raises(ValueError) as info:
        sft_trainer(tmp_path, Dataset.from_dict({"question": ["t1"], "answer": ["t2"]}))
    message = str(info.value)
    assert "The train dataset has columns ['question', 'answer']" in message
    for accepted in ("'prompt' and 'completion'", "'messages'", "'text'", "dataset_text_field", "'input_ids'"):
        assert accepted in message


def test_sft_says_which_half_of_a_prompt_completion_pair_is_missing(tmp_path):
    with pytest.raises(ValueError, match=r"It has 'prompt' but no 'completion' \(the answer the model learns\)"):
        sft_trainer(tmp_path, Dataset.from_dict({"prompt": ["t1"], "answer": ["t2"]}))


def test_sft_checks_the_eval_dataset_too(tmp_path):
    with pytest.raises(ValueError, match=r"The eval dataset has columns \['q'\]"):
        sft_trainer(tmp_path, Dataset.from_dict(PAIRS), eval_dataset=Dataset.from_dict({"q": ["t1"]}))
    with pytest.raises(ValueError, match=r"The eval dataset 'held_out' is empty"):
        sft_trainer(tmp_path, Dataset.from_dict(PAIRS),
                    eval_dataset={"held_out": Dataset.from_dict({"prompt": [], "completion": []})})


def test_sft_prompts_longer_than_max_length_are_reported_with_their_lengths(tmp_path):
    long_prompts = Dataset.from_dict({"prompt": ["t1 t2 t3 t4 t5", "t1 t2 t3 t4 t5 t6 t7"],
                                      "completion": [" t8", " t8 t9"]})
    with pytest.raises(ValueError) as info:
        sft_trainer(tmp_path, long_prompts, max_length=4)
    message = str(info.value)
    assert "All 2 rows of the train dataset were dropped: max_length=4 leaves no answer token" in message
    assert "shortest 5, longest 7 tokens" in message
    # 7 prompt tokens + 1 answer token keeps every row; 7 + " t8 t9" + EOS keeps every answer whole
    assert "Set max_length to at least 8 to keep every row (10 keeps every answer whole)" in message


def test_sft_eval_prompts_longer_than_max_length_are_reported(tmp_path):
    with pytest.raises(ValueError, match=r"All 1 rows of the eval dataset were dropped: max_length=4"):
        sft_trainer(tmp_path, Dataset.from_dict(PAIRS), max_length=4,
                    eval_dataset=Dataset.from_dict({"prompt": ["t1 t2 t3 t4 t5"], "completion": [" t6"]}))


def test_sft_warns_about_the_rows_dropped_and_keeps_the_others(tmp_path):
    from transformers.testing_utils import CaptureLogger

    import trainers.sft

    with CaptureLogger(trainers.sft.logger) as captured:
        trainer = sft_trainer(tmp_path, Dataset.from_dict({"prompt": ["t1 t2 t3 t4 t5", "t1"],
                                                           "completion": [" t8"] * 2}), max_length=4)
    assert len(trainer.train_dataset) == 1
    assert "1 of 2 rows of the train dataset were dropped: their prompt fills max_length=4 tokens" in captured.out


# -- pre-training ------------------------------------------------------------------------------------------------------
def test_pretraining_rejects_an_empty_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"The train dataset is empty \(0 rows\)"):
        pretraining_trainer(tmp_path, Dataset.from_dict({"text": []}))


def test_pretraining_names_the_columns_and_the_text_field_setting(tmp_path):
    with pytest.raises(ValueError) as info:
        pretraining_trainer(tmp_path, Dataset.from_dict({"body": ["t1 t2"]}))
    message = str(info.value)
    assert "The train dataset has columns ['body'], but neither the text column 'text'" in message
    assert "dataset_text_field='body'" in message


def test_pretraining_too_little_text_for_one_block_says_how_much_there_is(tmp_path):
    with pytest.raises(ValueError, match=r"The train dataset holds 3 tokens \(1 document\(s\), each followed by EOS\), "
                                         r"fewer than block_size=8.*lower block_size to at most 3"):
        pretraining_trainer(tmp_path, Dataset.from_dict({"text": ["t1 t2"]}))


def test_pretraining_checks_the_eval_dataset_too(tmp_path):
    train = Dataset.from_dict({"text": ["t1 t2 t3 t4 t5 t6 t7 t8 t9"] * 3})
    with pytest.raises(ValueError, match=r"The eval dataset holds 2 tokens"):
        pretraining_trainer(tmp_path, train, eval_dataset=Dataset.from_dict({"text": ["t1"]}))
    with pytest.raises(ValueError, match=r"The eval dataset has columns \['body'\]"):
        pretraining_trainer(tmp_path, train, eval_dataset=Dataset.from_dict({"body": ["t1"]}))


# -- data files (--dataset_name) ---------------------------------------------------------------------------------------
def test_a_data_file_that_does_not_parse_is_named_with_the_reason(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "t1"\n')
    with pytest.raises(ValueError, match=r"--dataset_name '.*broken.jsonl': could not read it as .jsonl data"):
        load_dataset_arg(str(broken))


def test_an_unsupported_data_file_lists_the_supported_types(tmp_path):
    sheet = tmp_path / "pairs.xlsx"
    sheet.write_bytes(b"not a spreadsheet")
    with pytest.raises(ValueError, match=r"unsupported file type '.xlsx'; use one of .json, .jsonl, .csv, .parquet"):
        load_dataset_arg(str(sheet))

"""Bad inputs of the trainers and the training commands (issue 30, `tests/test_bad_inputs.py` style): alignment
hyper-parameters that would train nothing or train backwards, preference pairs that teach nothing, null fields in
the data, a max_length that drops every pair, a reward function that raises and an --output_dir that is a file.

Each gets a clear error of the right type whose message names the setting (or the field and the row), or is
dropped with a count; the CLI rows run `llada-hf` in-process and check its one-line message and exit status 2.
"""

import re

import pytest
from datasets import Dataset

from tests.utils import tiny_chat_tokenizer, tiny_model
from trainers import VRPOConfig, VRPOTrainer

USER, REPLY = {"role": "user", "content": "t1"}, {"role": "assistant", "content": "t2"}
CHAT = [USER, REPLY]
PAIRS = {"prompt": ["t1 t2", "t3", "t4 t5"], "chosen": [" t8 t9", " t11", " t12"],
         "rejected": [" t9 t8", " t10", " t13"]}


def vrpo_config(tmp_path, **overrides) -> VRPOConfig:
    values = dict(output_dir=str(tmp_path / "vrpo"), per_device_train_batch_size=2, max_steps=1, report_to="none",
                  use_cpu=True, save_strategy="no", disable_tqdm=True, elbo_samples=2)
    return VRPOConfig(**{**values, **overrides})


def vrpo_trainer(tmp_path, rows: dict, **overrides) -> VRPOTrainer:
    return VRPOTrainer(tiny_model(), args=vrpo_config(tmp_path, **overrides), train_dataset=Dataset.from_dict(rows),
                       processing_class=tiny_chat_tokenizer())


def with_row(rows: dict, index: int, **values) -> dict:
    """`rows` with the fields of row `index` replaced."""
    changed = {key: list(column) for key, column in rows.items()}
    for key, value in values.items():
        changed[key][index] = value
    return changed


def sft_trainer(tmp_path, rows: dict):
    from tests.trainers.test_data_errors import sft_trainer

    return sft_trainer(tmp_path, Dataset.from_dict(rows))


def failing_reward(completions, **kwargs):
    return [1.0 / 0 for _ in completions]


def grpo_trainer(tmp_path, prompts, reward_funcs=failing_reward, tokenizer=None):
    from trainers.grpo import DiffuGRPOConfig, DiffuGRPOTrainer

    args = DiffuGRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=2, num_generations=2,
                           max_completion_length=4, max_steps=1, report_to="none", use_cpu=True, save_strategy="no",
                           disable_tqdm=True)
    return DiffuGRPOTrainer(tiny_model(), reward_funcs=reward_funcs, args=args,
                            train_dataset=Dataset.from_dict({"prompt": prompts}),
                            processing_class=tokenizer or tiny_chat_tokenizer())


# --- the table: (id, call(tmp_path), exception type, regex of the message) --------------------------------------------

CASES = [
    ("vrpo: beta 0 trains nothing", lambda tmp: vrpo_config(tmp, beta=0.0), ValueError,
     r"beta must be a finite number > 0, got 0\.0.*trains nothing"),
    ("vrpo: negative beta trains backwards", lambda tmp: vrpo_config(tmp, beta=-1.0), ValueError,
     r"beta must be .* > 0, got -1\.0.*toward the rejected"),
    ("vrpo: NaN beta", lambda tmp: vrpo_config(tmp, beta=float("nan")), ValueError, r"beta .* got nan"),
    ("vrpo: every pair identical", lambda tmp: vrpo_trainer(tmp, {**PAIRS, "rejected": PAIRS["chosen"]}), ValueError,
     r"No pair of the train dataset can train VRPO: all 3 pairs .*3 with chosen identical to rejected"),
    ("vrpo: every pair has two empty answers",
     lambda tmp: vrpo_trainer(tmp, {**PAIRS, "chosen": ["", " ", ""], "rejected": [" ", "", "\n"]}), ValueError,
     r"all 3 pairs .*3 with both answers empty"),
    ("vrpo: null rejected", lambda tmp: vrpo_trainer(tmp, with_row(PAIRS, 1, rejected=None)), ValueError,
     r"^Row 1 of the train dataset has a null 'rejected'"),
    ("vrpo: null prompts", lambda tmp: vrpo_trainer(tmp, {**PAIRS, "prompt": ["t1", None, None]}), ValueError,
     r"^Row 1 \(and 1 more rows\) of the train dataset has a null 'prompt'"),
    ("vrpo: max_length drops every pair", lambda tmp: vrpo_trainer(tmp, PAIRS, max_length=1), ValueError,
     r"All 3 pairs of the train dataset were dropped: max_length=1 .*prompt lengths: shortest 1, longest 2 tokens"
     r".*at least 3"),
    ("sft: null completion", lambda tmp: sft_trainer(tmp, {"prompt": ["t1", "t2"], "completion": [" t3", None]}),
     ValueError, r"^Row 1 of the train dataset has a null 'completion'"),
    ("sft: null prompt", lambda tmp: sft_trainer(tmp, {"prompt": [None, "t2"], "completion": [" t3", " t4"]}),
     ValueError, r"^Row 0 of the train dataset has a null 'prompt'"),
    ("grpo: null prompt", lambda tmp: grpo_trainer(tmp, ["t1", None]), ValueError,
     r"^Row 1 of the train dataset has a null 'prompt'"),
    # Null or missing message fields inside conversations: the row and the message are named (Arrow fills a missing
    # key with null, so both read the same).
    ("sft: null content in messages", lambda tmp: sft_trainer(tmp, {"messages": [CHAT, [USER, {
        "role": "assistant", "content": None}]]}), ValueError,
     r"^Row 1 of the train dataset has a message with a null or missing 'content': messages\[1\]; every message "
     r"needs a 'content' \(a string; '' for an empty turn\)"),
    ("sft: missing role in messages", lambda tmp: sft_trainer(tmp, {"messages": [CHAT, [{"content": "t1"}, {
        "role": "assistant", "content": "t2"}]]}), ValueError,
     r"^Row 1 of the train dataset has a message with a null or missing 'role': messages\[0\]"),
    ("vrpo: null content in a chosen message", lambda tmp: vrpo_trainer(tmp, {
        "prompt": [[USER], [USER]], "chosen": [[REPLY], [{"role": "assistant", "content": None}]],
        "rejected": [[{"role": "assistant", "content": "t3"}], [REPLY]]}), ValueError,
     r"^Row 1 of the train dataset has a message with a null or missing 'content': chosen\[0\]"),
    ("grpo: null content in a prompt message", lambda tmp: grpo_trainer(tmp, [[USER], [{"role": "user",
                                                                                        "content": None}]]),
     ValueError, r"^Row 1 of the train dataset has a message with a null or missing 'content': prompt\[0\]"),
]




def nan_reward(completions, **kwargs):
    return [float("nan") for _ in completions]


def text_reward(completions, **kwargs):
    return ["good" for _ in completions]


def grpo_config(tmp_path, **overrides):
    from trainers.grpo import DiffuGRPOConfig

    values = dict(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=2, num_generations=2,
                  max_completion_length=4, max_steps=1, report_to="none", use_cpu=True, save_strategy="no")
    return DiffuGRPOConfig(**{**values, **overrides})


def pretraining_trainer(tmp_path, rows: dict):
    from tests.trainers.test_data_errors import pretraining_trainer

    return pretraining_trainer(tmp_path, Dataset.from_dict(rows))


def no_chat_template():
    tokenizer = tiny_chat_tokenizer()
    tokenizer.chat_template = None
    return tokenizer


SFT_ROWS = {"prompt": ["t1 t2", "t3"], "completion": [" t8 t9", " t11"]}


def a_file(tmp_path) -> str:
    (tmp_path / "file.txt").write_text("not a checkpoint")
    return str(tmp_path / "file.txt")

# Issue 30's sweep (benchmarks/bad_inputs/cases_train.py): reward functions whose values are not rewards, reward
# functions that are not functions, rollout settings that do not exist, GRPO groups of one, conversations that the
# tokenizer cannot render or that have no answer, null text and resume paths that are no checkpoint folder.
CASES += [
    ("grpo: a reward function returns NaN", lambda tmp: grpo_trainer(tmp, ["t1", "t2"], nan_reward).train(),
     ValueError, r"^reward function 'nan_reward' returned nan for completion 0; rewards must be finite numbers "
                 r"\(return None where a reward does not apply\)"),
    ("grpo: a reward function returns strings", lambda tmp: grpo_trainer(tmp, ["t1", "t2"], text_reward).train(),
     ValueError, r"^reward function 'text_reward' returned str 'good' for completion 0; rewards must be numbers"),
    ("grpo: reward_funcs is not a function", lambda tmp: grpo_trainer(tmp, ["t1", "t2"], 42), ValueError,
     r"^reward_funcs is int 42; pass a function"),
    ("grpo: one of the reward_funcs is None", lambda tmp: grpo_trainer(tmp, ["t1", "t2"], [nan_reward, None]),
     ValueError, r"^reward_funcs\[1\] is NoneType None"),
    ("grpo: misspelt generation_kwargs", lambda tmp: grpo_config(tmp, generation_kwargs={"treshold": 0.9}),
     ValueError, r"generation_kwargs has 'treshold', which is not a setting of model\.generate .*did you mean "
                 r"'threshold'\?"),
    ("grpo: generation_kwargs not a dict", lambda tmp: grpo_config(tmp, generation_kwargs=["threshold"]),
     ValueError, r"generation_kwargs must be a dict .*got list"),
    ("grpo: num_generations=1", lambda tmp: grpo_config(tmp, num_generations=1), ValueError,
     r"^num_generations must be >= 2 .*got 1"),
    ("grpo: conversations without a chat template", lambda tmp: grpo_trainer(tmp, [[USER], [USER]], failing_reward,
                                                                              no_chat_template()),
     ValueError, r"prompts are conversations .*no chat_template"),
    ("sft: a conversation without an answer", lambda tmp: sft_trainer(tmp, {"messages": [CHAT, [USER], [USER]]}),
     ValueError, r"^Row 1 of the train dataset has a conversation ending with 'user'; every 'messages' "
                 r"conversation must end with an assistant turn"),
    ("sft: an empty conversation", lambda tmp: sft_trainer(tmp, {"messages": [CHAT, []]}), ValueError,
     r"^Row 1 of the train dataset has a conversation ending with nothing"),
    ("pretraining: null text", lambda tmp: pretraining_trainer(tmp, {"text": ["t1 t2 t3 t4 t5 t6 t7 t8 t9", None]}),
     ValueError, r"^Row 1 of the train dataset has a null 'text'"),
    ("resume from a path that does not exist", lambda tmp: sft_trainer(tmp, SFT_ROWS).train(
        resume_from_checkpoint=str(tmp / "nowhere")), ValueError,
     r"^resume_from_checkpoint='.*nowhere' does not exist; pass a checkpoint folder"),
    ("resume from a file", lambda tmp: sft_trainer(tmp, SFT_ROWS).train(resume_from_checkpoint=a_file(tmp)),
     ValueError,
     r"^resume_from_checkpoint='.*file\.txt' is a file, not a checkpoint folder"),
    ("lm-eval model: mc_num 0", lambda tmp: __import__("trainers.lm_eval_llada").lm_eval_llada.check_eval_settings(
        mc_num=0), ValueError, r"^mc_num must be a positive integer, got 0"),
    ("lm-eval model: batch_size from model_args '-2'",
     lambda tmp: __import__("trainers.lm_eval_llada").lm_eval_llada.check_eval_settings(batch_size="-2"),
     ValueError, r"^batch_size must be a positive integer or \"auto\", got '-2'"),
]


@pytest.mark.parametrize("name, call, error, message", CASES, ids=[row[0] for row in CASES])
def test_bad_training_input_gets_a_clear_error(tmp_path, name, call, error, message):
    with pytest.raises(error, match=message):
        call(tmp_path)


def test_positive_beta_is_accepted_and_used(tmp_path):
    assert vrpo_config(tmp_path, beta=0.25).beta == 0.25


def test_identical_and_empty_pairs_are_dropped_with_a_count_and_the_others_kept(tmp_path):
    from transformers.testing_utils import CaptureLogger

    import trainers.vrpo

    rows = {"prompt": ["t1 t2", "t3", "t4 t5", "t6", "t7"], "chosen": [" t8 t9", " t11", " t12", "", " t15"],
            "rejected": [" t9 t8", " t11", " t13", " ", ""]}
    with CaptureLogger(trainers.vrpo.logger) as captured:
        trainer = vrpo_trainer(tmp_path, rows)
    assert "Dropped 2 of 5 pairs of the train dataset (1 with chosen identical to rejected and 1 with both answers " \
           "empty; first: row 1)" in captured.out
    # rows 0, 2 and 4, in order: one empty answer is a real preference (scored as its EOS), so row 4 stays
    assert trainer.train_dataset["prompt"] == ["t1 t2", "t4 t5", "t7"]


def test_pairs_whose_prompt_fills_max_length_are_counted_and_the_others_kept(tmp_path):
    from transformers.testing_utils import CaptureLogger

    import trainers.vrpo

    with CaptureLogger(trainers.vrpo.logger) as captured:
        trainer = vrpo_trainer(tmp_path, PAIRS, max_length=2)  # prompts of 2, 1 and 2 tokens
    assert "2 of 3 pairs of the train dataset were dropped: their prompt fills max_length=2 tokens" in captured.out
    assert trainer.train_dataset["prompt"] == ["t3"]


def test_conversational_pairs_with_the_same_answer_are_dropped(tmp_path):
    def chat(content):
        return [{"role": "assistant", "content": content}]

    rows = {"prompt": [[{"role": "user", "content": "t1"}], [{"role": "user", "content": "t2"}]],
            "chosen": [chat("t3"), chat("t4")], "rejected": [chat("t3"), chat("t5")]}
    trainer = vrpo_trainer(tmp_path, rows)
    assert [prompt[0]["content"] for prompt in trainer.train_dataset["prompt"]] == ["t2"]


def test_a_reward_function_that_raises_is_named_and_its_error_kept_as_the_cause(tmp_path):
    from trainers.grpo import RewardFunctionError

    trainer = grpo_trainer(tmp_path, ["t1 t2", "t3"])
    with pytest.raises(RewardFunctionError, match=r"reward function 'failing_reward' raised ZeroDivisionError") as info:
        trainer.train()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert trainer.reward_func_names == ["failing_reward"]  # the metric names are the function's


# --- the CLI: argv (with {tmp} for the test's folder), files to write first, a regex of the one-line message ---------

NULL_PAIRS = ('{"prompt": "Say hi.", "chosen": " hi", "rejected": " no"}\n'
              '{"prompt": "Say yo.", "chosen": " yo", "rejected": null}\n')
REWARDS = "def broken_reward(completions, **kwargs):\n    raise KeyError('answer')\n"
CLI_CASES = [
    ("dpo --beta 0", ["dpo", "--beta", "0", "--output_dir", "{tmp}/out"], {}, r"beta must be a finite number > 0"),
    ("dpo --beta -1", ["dpo", "--beta", "-1", "--output_dir", "{tmp}/out"], {}, r"beta .* got -1\.0"),
    ("dpo null rejected", ["dpo", "--dataset_name", "{tmp}/pairs.jsonl", "--output_dir", "{tmp}/out"],
     {"pairs.jsonl": NULL_PAIRS},
     r"--dataset_name '.*pairs\.jsonl': Row 1 of the train dataset has a null 'rejected'"),
    ("sft null completion", ["sft", "--dataset_name", "{tmp}/sft.jsonl", "--output_dir", "{tmp}/out"],
     {"sft.jsonl": '{"prompt": "Say hi.", "completion": null}\n'},
     r"--dataset_name '.*sft\.jsonl': Row 0 of the train dataset has a null 'completion'"),
    ("grpo null prompt", ["grpo", "--dataset_name", "{tmp}/prompts.jsonl", "--output_dir", "{tmp}/out"],
     {"prompts.jsonl": '{"prompt": "Say hi.", "answer": "hi"}\n{"prompt": null, "answer": "yo"}\n'},
     r"--dataset_name '.*prompts\.jsonl': Row 1 of the train dataset has a null 'prompt'"),
    ("dpo --max_length 8", ["dpo", "--max_length", "8", "--output_dir", "{tmp}/out", "--max_steps", "1"], {},
     r"All 2000 pairs of the train dataset were dropped: max_length=8 .*Set max_length to at least \d+"),
    ("sft --output_dir a file", ["sft", "--output_dir", "{tmp}/afile"], {"afile": ""},
     r"--output_dir '.*afile' is a file; pass a folder"),
    ("grpo --output_dir under a file", ["grpo", "--output_dir", "{tmp}/afile/run"], {"afile": ""},
     r"--output_dir '.*afile/run' is inside '.*afile', which is a file"),
    ("grpo reward raises", ["grpo", "--reward_funcs", "bad_rewards_r30:broken_reward", "--output_dir", "{tmp}/out",
                            "--max_steps", "1", "--per_device_train_batch_size", "2", "--num_generations", "2",
                            "--max_completion_length", "4", "--save_strategy", "no", "--disable_tqdm", "true"],
     {"bad_rewards_r30.py": REWARDS}, r"reward function 'broken_reward' raised KeyError: 'answer'"),
]


@pytest.mark.parametrize("argv, files, message", [row[1:] for row in CLI_CASES], ids=[row[0] for row in CLI_CASES])
def test_bad_training_command_prints_one_line_and_exits_2(capsys, monkeypatch, tmp_path, argv, files, message):
    from llada_cli.main import DEBUG_ENV, main

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.setenv("LLADA_HF_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path))  # the reward module
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    assert main([arg.replace("{tmp}", str(tmp_path)) for arg in argv]) == 2
    err = capsys.readouterr().err
    lines = err.replace("\r", "\n").strip().splitlines()
    assert "Traceback" not in err and [line for line in lines if line.startswith("llada-hf")] == lines[-1:], err
    assert re.search(message, lines[-1]), lines[-1]


def test_pairs_that_differ_only_beyond_max_length_are_dropped_with_a_count(tmp_path):
    from transformers.testing_utils import CaptureLogger

    import trainers.vrpo

    rows = {"prompt": ["t1", "t1", "t6"], "chosen": [" t2 t3 t4", " t2 t3", " t7"],
            "rejected": [" t2 t3 t5", " t3 t2", " t8"]}
    # keep_start at max_length=3: row 0 trains "t1 t2 t3" for both answers; rows 1 and 2 differ within 3 tokens
    with CaptureLogger(trainers.vrpo.logger) as captured:
        trainer = vrpo_trainer(tmp_path, rows, max_length=3)
    assert "Dropped 1 of 3 pairs of the train dataset: their chosen and rejected answers differ only after the " \
           "first max_length=3 tokens" in captured.out and "(first: row 0)" in captured.out
    kept = trainer.train_dataset["chosen"]  # rows 1 and 2 (with the EOS the preparation appends)
    assert len(kept) == 2 and kept[0].startswith(" t2 t3") and kept[1].startswith(" t7")
    # What is kept still differs where the collator cuts: each kept pair's two rows are different sequences.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    chosen, rejected = batch["input_ids"].chunk(2)
    assert all((c != r).any() for c, r in zip(chosen, rejected))
    # keep_end keeps the answers' ends, where row 0 differs: nothing is dropped
    assert len(vrpo_trainer(tmp_path, rows, max_length=3, truncation_mode="keep_end").train_dataset) == 3


def test_every_pair_identical_within_max_length_is_refused_naming_max_length(tmp_path):
    rows = {"prompt": ["t1", "t6"], "chosen": [" t2 t3 t4", " t7 t8 t9"], "rejected": [" t2 t3 t5", " t7 t8 t10"]}
    with pytest.raises(ValueError, match=r"No pair of the train dataset can train VRPO: in all 2 pairs .*"
                                         r"max_length=3.*Raise max_length"):
        vrpo_trainer(tmp_path, rows, max_length=3)


def test_valid_rewards_pass_the_reward_check_unchanged():
    import numpy as np
    import torch

    from trainers.grpo import _checked_rewards, named_reward_function

    rewards = [1, 0.5, None, True, np.float32(2.0), torch.tensor(3.0)]  # None: "not applicable", as in TRL
    assert _checked_rewards(rewards, "f") is rewards
    wrapped = named_reward_function(lambda completions, **kwargs: [float(len(c)) for c in completions], "length")
    assert wrapped(completions=["ab", "c"]) == [2.0, 1.0]


def test_an_async_reward_function_is_checked_too():
    import asyncio

    from trainers.grpo import RewardFunctionError, named_reward_function

    async def infinite(completions, **kwargs):
        return [float("inf")] * len(completions)

    with pytest.raises(RewardFunctionError, match=r"reward function 'infinite' returned inf for completion 0"):
        asyncio.run(named_reward_function(infinite, "infinite")(completions=["a"]))

"""Bad `llada-hf` command lines (issue 30's sweep, `tests/test_bad_inputs.py` style): every command refuses an option
value out of range, an output folder that is a file (or under one) and a file given where text is expected with one
line on stderr naming the option and the value, exit status 2 and no traceback, before any work is done.

Each row: (id, argv with {tmp} for the test's folder, files to write there first, a regex of the one-line message).
"""

import re

import pytest

from llada_cli.main import DEBUG_ENV, main
from tests.utils import tiny_chat_tokenizer, tiny_model

TASKS = ["--tasks", "toy_chat_sum", "--include_path", "{tmp}"]  # never read: the checks come first
CASES = [
    # output folders: the one rule of every command that writes (llada_cli._args.check_output_dir)
    ("quickstart --output_dir a file", ["quickstart", "--output_dir", "{tmp}/afile"], {"afile": ""},
     r"^llada-hf quickstart: --output_dir '.*afile' is a file; pass a folder \(it is created if missing\)\.$"),
    ("quickstart --output_dir under a file", ["quickstart", "--output_dir", "{tmp}/afile/run"], {"afile": ""},
     r"--output_dir '.*afile/run' is inside '.*afile', which is a file"),
    ("pretrain --output_dir under a device", ["pretrain", "--output_dir", "/dev/null/run"], {},
     r"--output_dir '/dev/null/run' is inside '/dev/null', which is not a folder"),
    ("publish --staging_dir a file", ["publish", "{tmp}/model", "org/name", "--dry_run", "--staging_dir",
                                      "{tmp}/afile"], {"afile": ""},
     r"the staging folder --staging-dir='.*afile' is a file; pass an empty or new folder"),
    # values out of range, named as flags before anything is loaded
    ("quickstart --sft_learning_rate -1", ["quickstart", "--sft_learning_rate", "-1", "--output_dir", "{tmp}/out"],
     {}, r"--sft_learning_rate must be a finite number >= 0, got -1\.0"),
    ("quickstart --sft_learning_rate nan", ["quickstart", "--sft_learning_rate", "nan", "--output_dir", "{tmp}/out"],
     {}, r"--sft_learning_rate must be a finite number >= 0, got nan"),
    ("sft --lora_r 0", ["sft", "--use_peft", "--lora_r", "0", "--output_dir", "{tmp}/out"], {},
     r"--lora_r must be a positive integer .*got 0"),
    ("dpo --lora_alpha -8", ["dpo", "--use_peft", "--lora_alpha", "-8", "--output_dir", "{tmp}/out"], {},
     r"--lora_alpha must be a finite number > 0 .*got -8"),
    ("grpo --lora_dropout 1", ["grpo", "--use_peft", "--lora_dropout", "1", "--output_dir", "{tmp}/out"], {},
     r"--lora_dropout must be in \[0, 1\), got 1\.0"),
    ("eval --limit -1", ["eval", "--model", "{tmp}/model", *TASKS, "--limit", "-1"], {},
     r"--limit: must be a count >= 1 or a fraction in \(0, 1\), got '-1'"),
    ("eval --limit 0", ["eval", "--model", "{tmp}/model", *TASKS, "--limit", "0"], {}, r"--limit: .*got '0'"),
    ("eval --mc_num 0", ["eval", "--model", "{tmp}/model", *TASKS, "--mc_num", "0"], {},
     r"--mc_num must be a positive integer, got 0"),
    ("eval --batch_size 0", ["eval", "--model", "{tmp}/model", *TASKS, "--batch_size", "0"], {},
     r"--batch_size must be a positive integer or \"auto\", got 0"),
    # a file name where the option takes the text itself
    ("publish --eval_results a file name", ["publish", "{tmp}/model", "org/name", "--dry_run", "--eval_results",
                                            "{tmp}/results.json"], {"results.json": "[]"},
     r"--eval-results '.*results\.json' is not valid JSON .*It names a file: the option takes the JSON text itself"),
]


@pytest.fixture
def model_folder(tmp_path):
    tiny_model().save_pretrained(tmp_path / "model")
    tiny_chat_tokenizer().save_pretrained(tmp_path / "model")


@pytest.mark.parametrize("argv, files, message", [row[1:] for row in CASES], ids=[row[0] for row in CASES])
def test_bad_command_line_prints_one_line_and_exits_2_before_any_work(capsys, monkeypatch, tmp_path, model_folder,
                                                                       argv, files, message):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.setenv("LLADA_HF_CACHE", str(tmp_path / "cache"))
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    try:
        status = main([arg.replace("{tmp}", str(tmp_path)) for arg in argv])
    except SystemExit as exit:  # argparse's usage errors leave through SystemExit, as from the console script
        status = exit.code
    assert status == 2
    captured = capsys.readouterr()
    lines = captured.err.replace("\r", "\n").strip().splitlines()
    assert "Traceback" not in captured.err and [line for line in lines if line.startswith("llada-hf")] == lines[-1:]
    assert re.search(message, lines[-1]), lines[-1]
    assert not (tmp_path / "out").exists()  # refused before anything was written
    assert not (tmp_path / "afile").is_dir() and not (tmp_path / "staged").exists()


def test_a_writable_output_dir_passes_the_check_and_an_unwritable_one_is_named(tmp_path, monkeypatch):
    import os

    from llada_cli._args import check_output_dir

    check_output_dir(str(tmp_path / "new" / "run"))  # missing folders are created later: fine
    check_output_dir(str(tmp_path))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path) else real_access(
        path, mode))
    with pytest.raises(ValueError, match=r"--output_dir '.*run' cannot be written: no write permission on '.*'"):
        check_output_dir(str(tmp_path / "run"))

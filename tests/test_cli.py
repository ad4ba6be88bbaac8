"""The `llada-hf` command: the quickstart end to end (shortened), generate and chat on its model, bad arguments."""

import json
import subprocess
import sys

import pytest

from hub_cards import check_folder
from llada_cli.main import main


def llada_hf(*args: str, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    code = "import sys; from llada_cli.main import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], input=stdin, capture_output=True, text=True,
                          timeout=900, cwd=cwd)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("quickstart") / "run"
    result = llada_hf("quickstart", "--quick", "--output_dir", str(output))
    assert result.returncode == 0, result.stderr[-4000:]
    return output, result.stdout


@pytest.mark.slow
def test_quickstart_runs_end_to_end_and_leaves_a_publishable_folder(quickstart_run):
    output, stdout = quickstart_run
    summary = json.loads((output / "summary.json").read_text())
    assert summary["publishing_problems"] == [] and check_folder(output / "hub", require_card=True) == []
    assert summary["remote_code_class"].startswith("transformers_modules.")
    assert (output / "loss.png").stat().st_size > 0 and (output / "unmasking.png").stat().st_size > 0
    assert 0.0 <= summary["accuracy_before"] <= 1.0 and 0.0 <= summary["accuracy_after"] <= 1.0
    assert "Task accuracy" in stdout and "denoising live" in stdout
    generation = json.loads((output / "hub" / "generation_config.json").read_text())
    assert generation["early_exit"] is True and len(generation["eos_token_id"]) == 2


@pytest.mark.slow
def test_generate_and_chat_work_on_the_quickstart_model(quickstart_run):
    output, _ = quickstart_run
    result = llada_hf("generate", str(output / "hub"), "--trust_remote_code", "--prompt", "Repeat: 1 2 3",
                      "--no-live", "--max_new_tokens", "8", "--steps", "8", "--block_length", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    result = llada_hf("chat", str(output / "hub"), "--trust_remote_code", "--max_new_tokens", "8",
                      "--block_length", "8", "--steps", "8", stdin="Repeat: 4 5\nRepeat: 6 7\n\n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("you: ") == 3  # two turns, then the empty line that ends the chat


@pytest.mark.slow
def test_bad_generation_arguments_get_clear_messages(quickstart_run):
    output, _ = quickstart_run
    result = llada_hf("generate", str(output / "hub"), "--trust_remote_code", "--prompt", "hi",
                      "--max_new_tokens", "16", "--block_length", "5")
    assert result.returncode != 0
    assert "max_new_tokens (16) must be a multiple of block_length (5)" in result.stderr


def test_unknown_command_and_missing_model_are_reported(tmp_path, capsys):
    assert main(["train-everything"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'train-everything'" in err and len(err.strip().splitlines()) == 1
    assert main(["generate", str(tmp_path / "nowhere"), "--prompt", "hi"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("quickstart", "pretrain", "sft", "dpo", "generate", "chat", "publish", "eval"):
        assert f"\n  {command} " in out
    assert main([]) == 0 and capsys.readouterr().out == out


def test_python_dash_m_runs_the_console_script_s_main(capsys):
    """`python -m llada_cli` (llada_cli/__main__.py) and the console script (`llada_cli.main:main`, pyproject.toml)
    answer the same."""
    result = subprocess.run([sys.executable, "-m", "llada_cli", "--help"], capture_output=True, text=True, timeout=300)
    assert main(["--help"]) == 0
    assert result.returncode == 0 and result.stdout == capsys.readouterr().out
    assert result.stdout.startswith("usage: llada-hf <command>")

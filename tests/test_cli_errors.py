"""`llada-hf` mistakes: one line on stderr (`llada-hf <command>: <message>` naming the setting and the value),
exit status 2, no traceback. The cases run in-process through `main`; two run the installed console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llada_cli.generate
from llada_cli.main import COMMANDS, DEBUG_ENV, build_parser, main


@pytest.fixture(autouse=True)
def no_debug(monkeypatch, tmp_path):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.setenv("LLADA_HF_CACHE", str(tmp_path / "cache"))  # pretrain and sft cache their help text


def config_folder(folder: Path, **config) -> Path:
    """A checkpoint folder with only a config.json: every check below fails before any weights are read."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def one_line_error(capsys, *argv: str) -> str:
    """Run `llada-hf *argv`; it must exit with status 2 and end stderr with its one-line message (progress bars of
    loading a data file may come before it)."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = err.replace("\r", "\n").strip().splitlines()
    assert "Traceback" not in err and [line for line in lines if line.startswith("llada-hf")] == lines[-1:], err
    return lines[-1]


def test_a_model_folder_that_does_not_exist_is_named(capsys, tmp_path):
    missing = str(tmp_path / "nowhere")
    err = one_line_error(capsys, "generate", missing, "--prompt", "hi")
    assert err.startswith("llada-hf generate: ") and f"model {missing!r}: no such folder, and not a Hub id" in err
    err = one_line_error(capsys, "sft", "--model_name_or_path", missing, "--output_dir", str(tmp_path / "out"))
    assert f"--model_name_or_path {missing!r}: no such folder" in err and "llada-tiny" in err  # presets offered


def test_a_hub_id_missing_from_the_cache_offline_says_so(capsys):
    err = one_line_error(capsys, "generate", "someone/not-downloaded", "--prompt", "hi")
    assert "model 'someone/not-downloaded': no such folder, and no model of that Hub id in the local cache" in err
    assert "HF_HUB_OFFLINE" in err


@pytest.mark.parametrize("command, model_type, architecture", [
    ("generate", "llama", "LlamaForCausalLM"),
    ("chat", "bert", "BertModel"),
])
def test_a_checkpoint_that_is_not_llada_is_named_with_its_model_type(capsys, tmp_path, command, model_type,
                                                                     architecture):
    folder = str(config_folder(tmp_path / model_type, model_type=model_type, architectures=[architecture]))
    extra = ["--prompt", "hi"] if command == "generate" else []
    err = one_line_error(capsys, command, folder, *extra)
    assert f"model {folder!r} is not a LLaDA checkpoint" in err
    assert f"model_type {model_type!r}" in err and architecture in err and "model_type 'llada' or 'llada2_moe'" in err


def test_a_checkpoint_without_a_tokenizer_asks_for_one(capsys, tmp_path):
    folder = str(config_folder(tmp_path / "llada", model_type="llada"))
    err = one_line_error(capsys, "generate", folder, "--prompt", "hi")
    assert f"model {folder!r}: the folder has no tokenizer" in err and "--tokenizer" in err
    err = one_line_error(capsys, "generate", folder, "--prompt", "hi", "--tokenizer", str(tmp_path / "none"))
    assert f"--tokenizer {str(tmp_path / 'none')!r}: no such folder" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_suggests_the_cpu(capsys, tmp_path):
    folder = str(config_folder(tmp_path / "llada", model_type="llada"))
    err = one_line_error(capsys, "generate", folder, "--prompt", "hi", "--device", "cuda")
    assert "--device 'cuda': no CUDA device is available" in err and "use --device cpu" in err
    err = one_line_error(capsys, "chat", folder, "--device", "tpu")
    assert "--device 'tpu' is not a device name" in err


def usage_error(capsys, *argv: str) -> str:
    """Run `llada-hf *argv`, which argparse refuses: exit status 2 and exactly one line on stderr, which it returns."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    return err.strip()


# the words each command needs before argparse looks at anything else (its required arguments)
REQUIRED = {"generate": ["m", "--prompt", "hi"], "chat": ["m"], "eval": ["--model", "m", "--tasks", "t"],
            "publish": ["folder", "org/name"], "serve": ["m"]}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unknown_flag_is_one_line_that_points_at_the_help(capsys, command):
    err = usage_error(capsys, command, *REQUIRED.get(command, []), "--no_such_flag", "7")
    assert err == f"llada-hf {command}: unrecognized arguments: --no_such_flag 7; see llada-hf {command} --help"


@pytest.mark.parametrize("argv, message", [
    (["generate", "m", "--prompt", "hi", "--dtype", "float33"], "--dtype: invalid choice: 'float33' (choose from"),
    (["serve", "m", "--kv-cache", "full"], "--kv_cache: invalid choice: 'full' (choose from"),
    (["quickstart", "--model", "llama"], "--model: invalid choice: 'llama' (choose from"),
    (["dpo", "--lr_scheduler_type", "nope"], "--lr_scheduler_type: invalid choice: 'nope' (choose from"),
])
def test_a_bad_choice_is_one_line_with_the_valid_ones(capsys, argv, message):
    err = usage_error(capsys, *argv)
    assert err.startswith(f"llada-hf {argv[0]}: {message}"), err
    parser = build_parser(argv[0])
    flag = message.split(":")[0]
    choices = next(action.choices for action in parser._actions if flag in action.option_strings)
    assert all(str(choice) in err for choice in choices)


@pytest.mark.parametrize("argv, message", [
    (["chat", "m", "--max-new-tokens", "many"], "--max_new_tokens: invalid int value: 'many'"),
    (["sft", "--max_steps", "x"], "--max_steps: invalid int value: 'x'"),
    (["eval", "--tasks", "t"], "the following arguments are required: --model"),
    (["generate", "m"], "the following arguments are required: --prompt"),
    (["publish"], "the following arguments are required: folder, repo_id"),
    (["serve", "m", "--port"], "--port: expected one argument"),
])
def test_a_bad_value_or_a_missing_argument_is_one_line(capsys, argv, message):
    assert usage_error(capsys, *argv) == f"llada-hf {argv[0]}: {message}; see llada-hf {argv[0]} --help"


def test_config_files_that_are_missing_broken_or_unknown_are_named(capsys, tmp_path):
    missing = str(tmp_path / "missing.yaml")
    assert f"--config {missing!r}: no such file" in one_line_error(capsys, "sft", "--config", missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("max_steps: 3\nlearning_rate: [1\n")
    err = one_line_error(capsys, "pretrain", f"--config={broken}")
    assert f"--config {str(broken)!r} is not valid YAML" in err and "line 3" in err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("max_steps: 3\nnot_a_setting: 1\n")
    err = one_line_error(capsys, "sft", "--config", str(unknown))
    assert f"--config {str(unknown)!r}: unknown settings ['not_a_setting']" in err
    assert "--config needs the path" in one_line_error(capsys, "sft", "--config")


def test_dataset_files_that_are_missing_empty_or_of_the_wrong_shape_are_named(capsys, tmp_path):
    out = ["--output_dir", str(tmp_path / "out")]
    missing = str(tmp_path / "missing.jsonl")
    err = one_line_error(capsys, "sft", "--dataset_name", missing, *out)
    assert f"--dataset_name {missing!r}: no such file" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "the file is empty" in one_line_error(capsys, "sft", "--dataset_name", str(empty), *out)
    questions = tmp_path / "qa.jsonl"
    questions.write_text('{"question": "1 + 1?", "answer": "2"}\n')
    err = one_line_error(capsys, "sft", "--dataset_name", str(questions), *out)
    assert f"--dataset_name {str(questions)!r}: The train dataset has columns ['question', 'answer']" in err
    assert "'prompt' and 'completion'" in err and "'messages'" in err
    err = one_line_error(capsys, "pretrain", "--dataset_name", str(questions), *out)
    assert "neither the text column 'text' (dataset_text_field) nor tokenized 'input_ids'" in err


def test_eval_checks_the_model_and_adapter_before_lm_eval_starts(capsys, tmp_path):
    pytest.importorskip("lm_eval")
    llama = str(config_folder(tmp_path / "llama", model_type="llama", architectures=["LlamaForCausalLM"]))
    err = one_line_error(capsys, "eval", "--model", llama, "--tasks", "arc_easy")
    assert f"--model {llama!r} is not a LLaDA checkpoint" in err
    llada = str(config_folder(tmp_path / "llada", model_type="llada"))
    err = one_line_error(capsys, "eval", "--model", llada, "--peft", llada, "--tasks", "arc_easy")
    assert f"--peft {llada!r}: the folder has no adapter_config.json" in err


def test_an_internal_error_is_one_line_unless_debugging(capsys, monkeypatch):
    def broken(argv):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(llada_cli.generate, "generate", broken)
    assert main(["generate"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"llada-hf generate: internal error: RuntimeError: something inside broke (run again with "
                   f"{DEBUG_ENV}=1 for the traceback)")
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(RuntimeError, match="something inside broke"):
        main(["generate"])


def console_script(*args: str) -> subprocess.CompletedProcess:
    """The installed `llada-hf` entry point, or the same `main` through the interpreter where it is not installed."""
    script = Path(sys.executable).with_name("llada-hf")
    code = "import sys; from llada_cli.main import main; sys.exit(main())"
    command = [str(script)] if script.exists() else [sys.executable, "-c", code]
    env = {key: value for key, value in os.environ.items() if key != DEBUG_ENV}
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, env=env)


def test_the_console_script_prints_one_line_and_no_traceback(tmp_path):
    llama = str(config_folder(tmp_path / "llama", model_type="llama", architectures=["LlamaForCausalLM"]))
    result = console_script("generate", llama, "--prompt", "hi")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"llada-hf generate: model {llama!r} is not a LLaDA checkpoint: its config.json has model_type 'llama' "
        "(architectures: LlamaForCausalLM); pass a LLaDA model (model_type 'llada' or 'llada2_moe'), e.g. "
        "GSAI-ML/LLaDA-8B-Instruct "
        "or a folder written by llada-hf pretrain / sft."
    ]
    result = console_script("sft", "--dataset_name", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--dataset_name" in result.stderr

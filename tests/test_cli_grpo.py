"""`llada-hf grpo` (llada_cli/grpo.py): flags, one-line errors, a tiny run, and examples/grpo.py."""

import subprocess
import sys
from pathlib import Path

import pytest

from llada_cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def last_error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_help_lists_the_diffusion_and_grpo_flags(capsys):
    assert main(["grpo", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--p_mask_prompt", "--steps", "--block_length", "--remasking", "--threshold", "--kv_cache",
                 "--temperature", "--num_generations", "--num_iterations", "--beta", "--reward_funcs", "--use_peft",
                 "--config"):
        assert flag in text, flag


def test_defaults_are_a_small_cpu_run():
    from llada_cli.grpo import build_parser

    _, args, model_args = build_parser().parse_args_and_config(args=["--output_dir", "unused"])
    assert (args.per_device_train_batch_size, args.num_generations, args.max_completion_length) == (32, 8, 16)
    assert args.p_mask_prompt == 0.15 and args.bf16 is False and args.report_to in ("none", ["none"], [])
    assert model_args.model_name_or_path == "llada-tiny"


def test_diffusion_flags_parse_into_the_config():
    from llada_cli.grpo import build_parser

    _, args, _ = build_parser().parse_args_and_config(args=[
        "--output_dir", "unused", "--kv_cache", "prefix", "--remasking", "margin", "--threshold", "0.9", "--steps", "8",
        "--block_length", "8", "--p_mask_prompt", "0.3", "--generation_kwargs", '{"logits_eos_inf": true}'])
    assert (args.kv_cache, args.remasking, args.threshold, args.steps, args.block_length, args.p_mask_prompt) == (
        "prefix", "margin", 0.9, 8, 8, 0.3)
    assert args.generation_kwargs == {"logits_eos_inf": True}


@pytest.mark.parametrize("argv, message", [
    (["--p_mask_prompt", "1.5"], "llada-hf grpo: p_mask_prompt must be in [0, 1), got 1.5"),
    (["--temperature", "0"], "llada-hf grpo: temperature=0 with remasking='low_confidence' makes the"),
    (["--reward_funcs", "no_such_module_xyz:score"], "llada-hf grpo: --reward_funcs 'no_such_module_xyz:score': "
                                                     "cannot import"),
])
def test_mistakes_are_one_line_errors(capsys, tmp_path, argv, message):
    assert main(["grpo", "--output_dir", str(tmp_path / "out"), *argv]) == 2
    assert last_error_line(capsys).startswith(message)


def test_a_dataset_without_prompts_is_refused(capsys, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"question": "Say hi.", "answer": "hi"}\n' * 4)
    assert main(["grpo", "--dataset_name", str(data), "--output_dir", str(tmp_path / "out")]) == 2
    error = last_error_line(capsys)
    assert error.startswith("llada-hf grpo: --dataset_name") and "`prompt` column" in error and "question" in error


def test_reward_funcs_resolve(tmp_path):
    from llada_cli.grpo import resolve_reward_funcs
    from trainers.grpo import exact_match_reward

    funcs = resolve_reward_funcs(["exact_match", "trainers.grpo:exact_match_reward", "some-org/reward-model"])
    assert funcs == [exact_match_reward, exact_match_reward, "some-org/reward-model"]


@pytest.mark.slow
def test_a_tiny_run_saves_the_model_and_the_example_runs(tmp_path):
    assert main(["grpo", "--output_dir", str(tmp_path / "cli"), "--max_steps", "2", "--per_device_train_batch_size",
                 "8", "--num_generations", "4", "--max_completion_length", "8", "--disable_tqdm", "true",
                 "--save_strategy", "no"]) == 0
    assert (tmp_path / "cli" / "model.safetensors").exists()
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "grpo.py"), "--output_dir",
                             str(tmp_path / "example"), "--sft_steps", "2", "--grpo_steps", "2", "--eval_prompts", "4",
                             "--prompts_per_step", "2", "--num_generations", "2", "--use_peft"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "example" / "summary.json").exists()

"""The example scripts run end to end on tiny settings (the same code path a Hub id takes)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str, cwd: Path) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args, "--report_to", "none",
                             "--disable_tqdm", "true"], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
def test_pretrain_then_lora_sft_scripts(tmp_path):
    run("pretrain.py", "--output_dir", str(tmp_path / "pretrain"), "--max_steps", "3", "--block_size", "64",
        cwd=tmp_path)
    for name in ("config.json", "model.safetensors", "modeling_llada.py", "tokenizer.json", "generation_config.json"):
        assert (tmp_path / "pretrain" / name).exists(), name
    run("sft.py", "--model_name_or_path", str(tmp_path / "pretrain"), "--use_peft", "--lora_r", "4",
        "--output_dir", str(tmp_path / "sft"), "--max_steps", "3", cwd=tmp_path)
    assert (tmp_path / "sft" / "adapter_model.safetensors").exists()
    assert (tmp_path / "sft" / "adapter_config.json").exists()


@pytest.mark.slow
def test_sft_script_accepts_local_json_files(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "Say hi.", "completion": " hi"}\n' * 8)
    run("sft.py", "--dataset_name", str(data), "--output_dir", str(tmp_path / "sft"), "--max_steps", "2",
        "--per_device_train_batch_size", "4", cwd=tmp_path)
    assert (tmp_path / "sft" / "model.safetensors").exists()

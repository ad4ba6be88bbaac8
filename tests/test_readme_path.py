"""The README's own path, with the command line on a tiny model, offline: `llada-hf pretrain` -> `llada-hf sft` with
LoRA -> `llada-hf publish --merge --base-model <local folder> --dry-run` -> the merged folder, reloaded with
`trust_remote_code=True` in a fresh process where only its own code files can serve it, generates token for token
what the adapter model (base + PeftModel) generates.

Each command runs in its own process, in a working directory of its own and with relative paths, as a user types
them (the adapter then records its base as the relative name `A`); nothing is downloaded and temporary folders go to
a TMPDIR of this test, which must hold no `llada-publish-*` folder at the end.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ENTRY = "import sys; from llada_cli.main import main; sys.exit(main())"
QUESTIONS = ["What is 12 + 30?", "What is 7 + 8?", "What is 99 + 1?"]
# greedy (temperature 0); the second setting never proposes EOS, so that an answer is more than EOS padding
SETTINGS = [dict(max_new_tokens=8, steps=8, block_length=8, temperature=0.0),
            dict(max_new_tokens=8, steps=8, block_length=8, temperature=0.0, logits_eos_inf=True)]

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    for name in ("modeling_llada", "trainers", "hub_cards", "llada_cli"):
        sys.modules[name] = None  # only the published code files may serve the model
    import torch
    from transformers import AutoModel

    folder, prompts, settings, out = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        answers = [[model.generate(torch.tensor([ids]), **kwargs)[0].tolist() for ids in prompts]
                   for kwargs in settings]
        logits = [model(torch.tensor([ids])).logits[0] for ids in prompts]
    torch.save({"answers": answers, "logits": logits, "class": type(model).__module__ + "." + type(model).__name__},
               out)
    """
)


def llada_hf(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", ENTRY, *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"llada-hf {' '.join(args)}:\n{result.stderr[-4000:]}"
    return result


def test_pretrain_sft_lora_merge_publish_and_reload_in_a_fresh_process(tmp_path):
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    work, temp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
           "TMPDIR": str(temp), "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "TOKENIZERS_PARALLELISM": "false"}

    llada_hf("pretrain", "--output_dir", "A", "--max_steps", "20", "--block_size", "64",
             "--per_device_train_batch_size", "8", cwd=work, env=env)
    llada_hf("sft", "--model_name_or_path", "A", "--use_peft", "--lora_r", "8", "--output_dir", "B", "--max_steps",
             "20", cwd=work, env=env)
    assert json.loads((work / "B" / "adapter_config.json").read_text())["base_model_name_or_path"] == "A"
    published = llada_hf("publish", "B", "your-name/x", "--merge", "--base-model", "A", "--dry-run", "--staging-dir",
                         "C", cwd=work, env=env)
    staged = work / "C"
    assert published.stdout.startswith("would upload model to your-name/x from C, ")
    assert not (staged / "adapter_config.json").exists() and (staged / "model.safetensors").is_file()

    # the card: both stages, their data and sizes, the local base (by name only), the sampler settings
    card = (staged / "README.md").read_text()
    pretraining = json.loads((work / "A" / "llada_training.json").read_text())["stages"][0]
    record = json.loads((staged / "llada_training.json").read_text())
    assert [stage["kind"] for stage in record["stages"]] == ["pre-training", "LoRA SFT"]
    assert record["stages"][0] == pretraining and record["merge"]["base_model"] == {"name": "A", "hub_id": None}
    blocks, rows = pretraining["dataset"]["rows"], record["stages"][1]["dataset"]["rows"]
    assert rows == 2000 and blocks > 0
    assert "### Stage 1: pre-training" in card and "### Stage 2: LoRA SFT" in card and "### Merge" in card
    assert f"- data: Python docs (local): {blocks:,} rows (packed blocks of 64 tokens), {blocks * 64:,} tokens" in card
    assert "- data: addition task (local): 2,000 rows (examples)" in card
    assert "final training loss" in card and "- LoRA: r = 8" in card and "### Sampler settings" in card
    assert "`A` (a local folder)" in card and "base_model:" not in card and str(tmp_path) not in card
    assert not list(temp.glob("llada-publish-*"))

    # the adapter model (base A + adapter B) in this process, greedy
    tokenizer = AutoTokenizer.from_pretrained(work / "B")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             return_dict=True)["input_ids"] for q in QUESTIONS]
    adapter = PeftModel.from_pretrained(AutoModel.from_pretrained(work / "A"), work / "B").eval()
    with torch.no_grad():
        expected = [[adapter.generate(input_ids=torch.tensor([ids]), **kwargs)[0].tolist() for ids in prompts]
                    for kwargs in SETTINGS]
        logits = [adapter(input_ids=torch.tensor([ids])).logits[0] for ids in prompts]
        with adapter.disable_adapter():
            plain = [adapter(input_ids=torch.tensor([ids])).logits[0] for ids in prompts]
    # the adapter does change the model, so matching it means something
    assert max((a - b).abs().max().item() for a, b in zip(logits, plain)) > 1e-2

    # the merged folder in a fresh process, with its own code files only
    (tmp_path / "fresh.py").write_text(FRESH_PROCESS)
    fresh_env = {key: value for key, value in env.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(tmp_path / "fresh.py"), str(staged), json.dumps(prompts),
                             json.dumps(SETTINGS), str(tmp_path / "out.pt")], cwd=tmp_path, env=fresh_env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    out = torch.load(tmp_path / "out.pt")
    assert out["class"].startswith("transformers_modules."), out["class"]
    assert out["answers"] == expected  # token for token, every prompt, both settings
    for setting, answers in zip(SETTINGS, expected):
        assert all(len(answer) == len(ids) + setting["max_new_tokens"] for answer, ids in zip(answers, prompts))
    for merged, reference in zip(out["logits"], logits):
        torch.testing.assert_close(merged, reference, atol=1e-4, rtol=1e-4)
    assert not list(temp.glob("llada-publish-*"))

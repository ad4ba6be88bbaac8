"""`llada-hf` on the official folders of every family member: generate, chat, sft (full and LoRA), pretrain, publish.

The tiny official-format fixtures carry no tokenizer (and no mask id, as the official configs): the commands take
`--tokenizer` / `--tokenizer_name_or_path`, and the model gets the tokenizer's mask id.
"""

import json
import subprocess
import sys

import pytest
import torch

from hub_cards import check_folder
from llada_cli.main import main
from tests.trainers.test_family_training import (
    LLADA2_DIR,
    LLADA2_IDS,
    MOE_DIR,
    MOE_IDS,
    chat_tokenizer,
)

MEMBERS = {"llada_moe": (MOE_DIR, MOE_IDS), "llada2": (LLADA2_DIR, LLADA2_IDS)}
members = pytest.mark.parametrize("member", ["llada_moe", "llada2"])


@pytest.fixture
def tokenizer_dir(tmp_path, request):
    folder = tmp_path / "tokenizer"
    chat_tokenizer(MEMBERS[request.node.callspec.params["member"]][1]).save_pretrained(folder)
    return folder


def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"t{i} t{i + 1}", "completion": f" t{i + 2} t{i + 3}"} for i in range(8)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


TRAINING = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--logging_steps", "1", "--save_strategy", "no",
            "--disable_tqdm", "true", "--report_to", "none"]


@members
def test_generate_on_an_official_folder(member, tokenizer_dir, capsys):
    folder, _ = MEMBERS[member]
    code = main(["generate", str(folder), "--prompt", "t5 t6 t7", "--tokenizer", str(tokenizer_dir), "--no-live",
                 "--max_new_tokens", "8", "--steps", "8", "--block_length", "8", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    # the same answer as the library's generate with the tokenizer's mask id (the official config has none)
    import torch
    from transformers import AutoModel, AutoTokenizer

    from llada_cli.generate import _answer_text, _stop_ids

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModel.from_pretrained(folder, mask_token_id=tokenizer.mask_token_id).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "t5 t6 t7"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=8, steps=8, block_length=8)[0, ids.shape[1]:]
    assert out.strip() == _answer_text(tokenizer, generated.tolist(), _stop_ids(tokenizer, model))


@members
def test_chat_on_an_official_folder(member, tokenizer_dir):
    folder, _ = MEMBERS[member]
    code = "import sys; from llada_cli.main import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "chat", str(folder), "--tokenizer", str(tokenizer_dir), "--no-live",
         "--max_new_tokens", "8", "--steps", "8", "--block_length", "8", "--device", "cpu"],
        input="t5 t6\n\n", capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("assistant: ") == 1


@members
def test_sft_full_and_lora_then_publish(member, tokenizer_dir, tmp_path):
    folder, _ = MEMBERS[member]
    data = pairs_file(tmp_path)
    out = tmp_path / "sft"
    assert main(["sft", "--model_name_or_path", str(folder), "--tokenizer_name_or_path", str(tokenizer_dir),
                 "--dataset_name", str(data), "--output_dir", str(out), "--sample_answers", "0", "--max_length", "32",
                 *TRAINING]) == 0
    assert check_folder(out, require_card=True) == []
    card = (out / "README.md").read_text()
    assert {"llada_moe": "LLaDA-MoE", "llada2": "LLaDA 2"}[member] in card
    record = json.loads((out / "llada_training.json").read_text())
    assert record["stages"][-1]["diffusion_objective"] == {"llada_moe": "masked_diffusion",
                                                          "llada2": "block_diffusion"}[member]
    lora_out = tmp_path / "lora"
    assert main(["sft", "--model_name_or_path", str(folder), "--tokenizer_name_or_path", str(tokenizer_dir),
                 "--dataset_name", str(data), "--output_dir", str(lora_out), "--sample_answers", "0", "--use_peft",
                 "--lora_r", "4", "--lora_target_experts", "--lora_dropout", "0", "--max_length", "32", *TRAINING]) == 0
    adapter = json.loads((lora_out / "adapter_config.json").read_text())
    assert "gate" not in json.dumps(adapter["target_modules"]).replace("gate_proj", "")
    assert sorted(adapter["target_parameters"]) == ["mlp.experts.down_proj", "mlp.experts.gate_up_proj"]


@members
def test_pretrain_on_an_official_folder(member, tokenizer_dir, tmp_path):
    folder, _ = MEMBERS[member]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": " ".join(f"t{(i + j) % 100}" for j in range(30))}) + "\n"
                            for i in range(16)))
    out = tmp_path / "pretrain"
    assert main(["pretrain", "--model_name_or_path", str(folder), "--tokenizer_name_or_path", str(tokenizer_dir),
                 "--dataset_name", str(data), "--output_dir", str(out), "--block_size", "16", *TRAINING]) == 0
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()


_FRESH_PROCESS = """
import sys
for name in ("modeling_llada", "trainers", "hub_cards", "llada_cli"):
    sys.modules[name] = None  # the published code files alone must serve the model
from transformers import AutoModel
print(type(AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)).__name__)
"""


@members
def test_publish_stages_the_members_code_files_and_the_card_names_the_architecture(member, tokenizer_dir, tmp_path):
    from transformers import AutoModel

    from hub_cards import count_parameters, publish

    folder, ids = MEMBERS[member]
    model = AutoModel.from_pretrained(folder, mask_token_id=ids["mask"])
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    chat_tokenizer(ids).save_pretrained(saved)
    count = sum(p.numel() for p in model.parameters())
    assert count_parameters(saved) == count  # the weights' headers, less the routers' expert-bias buffers
    result = publish(saved, "me/tiny", dry_run=True, staging_dir=tmp_path / "hub")
    own_files = {"llada_moe": {"configuration_lladamoe.py", "modeling_lladamoe.py"},
                 "llada2": {"configuration_llada2_moe.py", "modeling_llada2_moe.py", "generation_llada2.py"}}[member]
    assert own_files <= set(result.files) and result.left_out == []
    name = {"llada_moe": "LLaDA-MoE", "llada2": "LLaDA 2"}[member]
    assert f"is a **{name}**" in result.card and f"| parameters | {count:,} |" in result.card
    # the example call and the sampler table say what `generate` uses: the member's own generation config
    settings = model.generation_config.sampler_settings()
    call = "".join(f"    {key}={value!r},\n" for key, value in settings.items())
    assert f"model.generate(\n    input_ids,\n{call})" in result.card
    assert "".join(f"| {key} | {value!r} |\n" for key, value in settings.items()) in result.card
    if member == "llada2":  # block 32, 32 steps per block, threshold 0.95: never LLaDA 1's 128 / cfg_scale
        assert settings["block_length"] == 32 and settings["threshold"] == 0.95 and "cfg_scale" not in result.card
    model.generate(torch.tensor([[ids["bos"]]]), **settings)  # the sampler takes every setting the snippet passes
    loaded = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, str(tmp_path / "hub")], capture_output=True,
                            text=True, timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[-1] == type(model).__name__
    # a code file the model's own modules import is required
    missing = sorted(own_files)[-1]
    (saved / missing).unlink()
    assert any(f"code file {missing} is missing" in problem for problem in check_folder(saved))


@pytest.mark.slow
@pytest.mark.parametrize("member", ["llada", "llada-moe", "llada2", "llada2.1"])
def test_family_example_runs_offline_on_each_member(member, tmp_path):
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "family.py"
    result = subprocess.run([sys.executable, str(script), "--member", member, "--output_dir", str(tmp_path),
                             "--report_to", "none", "--disable_tqdm", "true"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    objective = "block_diffusion" if member.startswith("llada2") else "masked_diffusion"
    assert f"objective: {objective}" in result.stdout and "reloaded: same logits" in result.stdout
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


def test_lora_target_experts_needs_lora_and_experts(capsys, tmp_path):
    data = pairs_file(tmp_path)
    assert main(["sft", "--dataset_name", str(data), "--lora_target_experts", "--output_dir", str(tmp_path / "a"),
                 *TRAINING]) == 2
    assert "--lora_target_experts adapts the experts with LoRA; add --use_peft." in capsys.readouterr().err
    assert main(["sft", "--dataset_name", str(data), "--use_peft", "--lora_target_experts", "--output_dir",
                 str(tmp_path / "b"), *TRAINING]) == 2
    assert "add --lora_dropout 0." in capsys.readouterr().err
    assert main(["sft", "--dataset_name", str(data), "--use_peft", "--lora_target_experts", "--lora_dropout", "0",
                 "--output_dir", str(tmp_path / "c"), *TRAINING]) == 2
    assert "has no routed experts" in capsys.readouterr().err


def test_quickstart_model_option_names_the_family_members(capsys):
    from llada_cli.quickstart import build_parser

    assert build_parser().parse_args([]).model == "llada"
    assert build_parser().parse_args(["--model", "llada2"]).model == "llada2"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--model", "llama"])
    assert "invalid choice: 'llama'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("model, class_name, card_name", [
    ("llada-moe", "LLaDAMoEModelLM", "LLaDA-MoE"),
    ("llada2", "LLaDA2MoeModelLM", "LLaDA 2"),
])
def test_quickstart_builds_trains_and_publishes_each_member(tmp_path, model, class_name, card_name):
    """A shortened quickstart (learning rate 0: it does not learn and says so) still pre-trains, fine-tunes, and
    leaves a publishable folder of the chosen architecture that loads with remote code alone."""
    output = tmp_path / "qs"
    code = main(["quickstart", "--model", model, "--output_dir", str(output), "--pretrain_steps", "2",
                 "--sft_steps", "2", "--sft_learning_rate", "0", "--eval_prompts", "3", "--digits", "3"])
    assert code == 1  # accuracy after == before
    summary = json.loads((output / "summary.json").read_text())
    assert summary["publishing_problems"] == [] and summary["remote_code_class"].endswith(f".{class_name}")
    assert f"is a **{card_name}**" in (output / "hub" / "README.md").read_text()


@pytest.mark.slow
@members
def test_eval_on_an_official_folder(member, tokenizer_dir, tmp_path):
    """`llada-hf eval --model <official folder>`: a multiple-choice task (the likelihood bound) and a generation
    task."""
    pytest.importorskip("lm_eval")
    folder, _ = MEMBERS[member]
    data = tmp_path / "tiny.jsonl"
    rows = [{"question": f"t{i} t{i + 1}", "answer": f"t{i + 2}", "choices": [f"t{i + 2}", f"t{i + 3}"], "label": 0}
            for i in range(4)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (tmp_path / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n" + common + 'output_type: multiple_choice\ndoc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\nmetric_list:\n  - metric: acc\n')
    (tmp_path / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n" + common + 'output_type: generate_until\ndoc_to_text: "{{question}}"\n'
        'doc_to_target: "{{answer}}"\ngeneration_kwargs:\n  until: ["t142"]\n  max_gen_toks: 4\n'
        "metric_list:\n  - metric: exact_match\n")
    output = tmp_path / "results.json"
    assert main(["eval", "--model", str(folder), "--tokenizer", str(tokenizer_dir), "--tasks", "tiny_mc,tiny_gen",
                 "--include_path", str(tmp_path), "--mc_num", "4", "--steps", "4", "--device", "cpu",
                 "--output", str(output)]) == 0
    results = json.loads(output.read_text())["results"]
    assert 0.0 <= results["tiny_mc"]["acc,none"] <= 1.0 and 0.0 <= results["tiny_gen"]["exact_match,none"] <= 1.0


def test_token_editing_flags_reach_llada2_generate(tmp_path, capsys):
    """`--editing_threshold` / `--max_post_steps` (LLaDA 2.1) give what the library's generate gives with them, and
    differ from LLaDA 2.0's answer on this prompt (else the flags could be dropped unnoticed)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from llada_cli.generate import _answer_text, _stop_ids

    folder = tmp_path / "tokenizer"
    chat_tokenizer(LLADA2_IDS).save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(LLADA2_DIR, mask_token_id=tokenizer.mask_token_id).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "t5 t6 t7"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    settings = dict(max_new_tokens=16, steps=8, block_length=8, threshold=0.5)
    with torch.no_grad():
        edited = model.generate(ids, editing_threshold=0.05, max_post_steps=4, **settings)[0, ids.shape[1]:]
        plain = model.generate(ids, **settings)[0, ids.shape[1]:]
    assert edited.tolist() != plain.tolist()
    code = main(["generate", str(LLADA2_DIR), "--prompt", "t5 t6 t7", "--tokenizer", str(folder), "--no-live",
                 "--max_new_tokens", "16", "--steps", "8", "--block_length", "8", "--threshold", "0.5",
                 "--editing_threshold", "0.05", "--max_post_steps", "4", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == _answer_text(tokenizer, edited.tolist(), _stop_ids(tokenizer, model))


def test_token_editing_on_a_model_without_it_is_one_line(tmp_path, capsys):
    folder = tmp_path / "tokenizer"
    chat_tokenizer(MOE_IDS).save_pretrained(folder)
    code = main(["generate", str(MOE_DIR), "--prompt", "t5", "--tokenizer", str(folder), "--no-live",
                 "--max_new_tokens", "8", "--editing_threshold", "0.9", "--device", "cpu"])
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("llada-hf generate:")]  # (after the loading bar)
    assert code == 2 and len(ours) == 1 and "editing_threshold" in ours[0] and "Traceback" not in err, err


@pytest.mark.slow
@members
def test_serve_answers_with_each_member_s_own_sampler(member, tmp_path):
    """`llada-hf serve` on an official-format folder (no mask id in its config: the tokenizer's is used) answers a chat
    request with exactly what the library's generate gives for the same settings."""
    pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    import shutil

    import torch
    from transformers import AutoModel, AutoTokenizer

    from llada_cli.generate import _answer_text, _stop_ids
    from tests.test_serve import Server

    source, ids = MEMBERS[member]
    folder = tmp_path / "model"
    shutil.copytree(source, folder)
    chat_tokenizer(ids).save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, mask_token_id=tokenizer.mask_token_id).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "t5 t6 t7"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, steps=16,
                                   block_length=8, tokenizer=tokenizer)[0, prompt.shape[1]:]
    expected = _answer_text(tokenizer, generated.tolist(), _stop_ids(tokenizer, model))
    assert expected.strip()  # a non-empty answer to compare
    running = Server(folder)
    try:
        response = running.client().chat.completions.create(
            model=running.model, messages=[{"role": "user", "content": "t5 t6 t7"}], max_tokens=16,
            extra_body={"steps": 16, "block_length": 8})
    finally:
        running.stop()
    assert response.choices[0].message.content == expected

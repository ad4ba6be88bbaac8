import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from peft import LoraConfig, get_peft_model

from hub_cards import IncompleteFolderError, check_folder, count_parameters, publish, stage
from modeling_llada import LLaDAGenerationConfig
from tests.trainers.test_sft import memorisation_set, sft_config
from tests.utils import tiny_chat_tokenizer, tiny_model
from trainers import MaskedDiffusionSFTTrainer

GENERATION = dict(max_new_tokens=8, steps=4, block_length=4, remasking="margin", cfg_scale=0.5, eos_token_id=61)
PROMPTS = torch.tensor([[57, 3, 9, 59, 58], [57, 12, 4, 59, 58]])


def saved_model(folder: Path, seed: int = 0, **overrides):
    model = tiny_model(seed=seed, **overrides)
    model.generation_config = LLaDAGenerationConfig(**GENERATION)
    model.save_pretrained(folder)
    tiny_chat_tokenizer().save_pretrained(folder)
    return model


def install_in_hub_cache(staged: Path, hf_home: Path, repo_id: str) -> None:
    """Lay a staged folder out as the Hub cache would after a download of `repo_id`."""
    root = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for path in staged.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)


def test_parameter_count_from_the_weights_headers_matches_the_models(tmp_path):
    for index, overrides in enumerate(({}, {"n_kv_heads": 2}, {"weight_tying": True}, {"include_qkv_bias": True})):
        model = tiny_model(**overrides)
        model.save_pretrained(tmp_path / str(index), max_shard_size="20KB")  # sharded: every file's header counts
        assert len(list((tmp_path / str(index)).glob("*.safetensors"))) > 1
        assert count_parameters(tmp_path / str(index)) == sum(p.numel() for p in model.parameters()), overrides


def test_model_card_metadata_round_trips_and_states_the_checkpoints_values(tmp_path):
    model = saved_model(tmp_path / "model", n_kv_heads=2)
    eval_results = [dict(task_type="text-generation", dataset_type="addition", dataset_name="Addition",
                         metric_type="accuracy", metric_value=0.875)]
    result = stage(tmp_path / "model", "org/tiny-llada", tmp_path / "staged", datasets=["org/addition"],
                   eval_results=eval_results, license="mit")
    card = ModelCard.load(result.staged / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert data["license"] == "mit" and data["datasets"] == ["org/addition"]
    assert {"llada", "diffusion", "masked-diffusion"} <= set(data["tags"]) and "lora" not in data["tags"]
    metric = data["model-index"][0]["results"][0]["metrics"][0]
    assert (metric["type"], metric["value"]) == ("accuracy", 0.875)
    text = card.text
    assert f"| parameters | {sum(p.numel() for p in model.parameters()):,} |" in text
    assert "| layers / width / heads / kv heads | 2 / 32 / 4 / 2 |" in text
    assert "| mask / EOS token ids | 60 / 61 |" in text
    for key, value in GENERATION.items():
        if key != "eos_token_id":
            assert f"    {key}={value!r}," in text, key
    assert 'AutoModel.from_pretrained("org/tiny-llada", trust_remote_code=True' in text
    assert "apply_chat_template" in text  # the tokenizer has a chat template
    assert "@article{nie2025llada" in text


@pytest.mark.slow
def test_trainer_saves_a_card_with_its_training_record(tmp_path):
    dataset, _, _ = memorisation_set()
    trainer = MaskedDiffusionSFTTrainer(
        tiny_model(), sft_config(tmp_path, max_steps=3, learning_rate=5e-3, train_on_padding=False),
        train_dataset=dataset, processing_class=tiny_chat_tokenizer(), peft_config=LoraConfig(r=4, lora_alpha=8),
    )
    trainer.train()
    out = tmp_path / "adapter"
    trainer.save_model(str(out))
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft"
    assert {"lora", "peft", "trl", "llada"} <= set(card.data.tags)
    record = json.loads((out / "llada_training.json").read_text())
    last_loss = [e["loss"] for e in trainer.state.log_history if "loss" in e][-1]
    assert record["objective"] == "sft" and record["global_step"] == 3 and record["train_loss"] == last_loss
    assert f"final training loss {last_loss:.4f}" in card.text
    assert "eps = 0.001" in card.text and "learning_rate = 0.005" in card.text
    assert "answer padding is excluded" in card.text
    assert "| rank / alpha / dropout | 4 / 8 / 0.0 |" in card.text


def test_incomplete_folders_are_rejected_naming_each_missing_piece(tmp_path):
    folder = tmp_path / "model"
    saved_model(folder)
    for name in ("generation_config.json", "modeling_llada.py", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(IncompleteFolderError) as info:
        stage(folder, "org/x", tmp_path / "staged")
    problems = info.value.problems
    assert len(problems) == 4
    message = str(info.value)
    for piece in ("generation_config.json", "modeling_llada.py", "tokenizer", "safetensors", "pytorch_model.bin"):
        assert piece in message, piece
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))
    assert any("auto_map" in problem for problem in check_folder(folder))


def test_adapter_with_a_local_base_needs_the_base_hub_id(tmp_path):
    saved_model(tmp_path / "base")
    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["q_proj"]))
    model.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")
    model.save_pretrained(tmp_path / "adapter")
    tiny_chat_tokenizer().save_pretrained(tmp_path / "adapter")
    assert any("local path" in p for p in check_folder(tmp_path / "adapter"))
    assert check_folder(tmp_path / "adapter", base_model="org/base") == []


def test_pickled_files_and_scripts_are_never_staged(tmp_path):
    folder = tmp_path / "model"
    saved_model(folder)
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt", "train.py", "rng_state.pth"):
        (folder / name).write_bytes(b"not for upload")
    result = publish(folder, "org/x", dry_run=True, staging_dir=tmp_path / "staged")
    assert result.kind == "model"
    staged = {p.name for p in (tmp_path / "staged").iterdir()}
    assert staged == set(result.files)
    assert not staged & {"pytorch_model.bin", "training_args.bin", "optimizer.pt", "train.py", "rng_state.pth"}
    assert {"model.safetensors", "modeling_llada.py", "README.md", "tokenizer.json"} <= staged


FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    for name in ("modeling_llada", "trainers", "hub_cards"):
        sys.modules[name] = None  # only the published code files may serve the model
    import torch
    from transformers import AutoModel
    from peft import AutoPeftModelForCausalLM, PeftModel
    prompts = torch.load(sys.argv[1])
    model = AutoModel.from_pretrained("org/tiny-llada", trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model)
    base = AutoModel.from_pretrained("org/tiny-base", trust_remote_code=True)
    adapter = PeftModel.from_pretrained(base, "org/tiny-adapter")
    auto_adapter = AutoPeftModelForCausalLM.from_pretrained("org/tiny-adapter", trust_remote_code=True)
    with torch.no_grad():
        torch.save({"model": model.generate(prompts), "adapter": adapter.generate(input_ids=prompts),
                    "auto_adapter": auto_adapter.generate(input_ids=prompts)}, sys.argv[2])
    """
)


@pytest.mark.slow
def test_published_model_and_adapter_load_from_the_hub_cache_in_a_fresh_process(tmp_path):
    hf_home = tmp_path / "hf"
    model = saved_model(tmp_path / "model")
    install_in_hub_cache(publish(tmp_path / "model", "org/tiny-llada", dry_run=True,
                                 staging_dir=tmp_path / "s1").staged, hf_home, "org/tiny-llada")
    base = saved_model(tmp_path / "base", seed=1)
    adapter = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "ff_proj"]))
    with torch.no_grad():  # a trained-looking adapter: not the identity
        for name, parameter in adapter.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    adapter.save_pretrained(tmp_path / "adapter")
    tiny_chat_tokenizer().save_pretrained(tmp_path / "adapter")
    install_in_hub_cache(publish(tmp_path / "base", "org/tiny-base", dry_run=True, staging_dir=tmp_path / "s2").staged,
                         hf_home, "org/tiny-base")
    staged_adapter = publish(tmp_path / "adapter", "org/tiny-adapter", dry_run=True, base_model="org/tiny-base",
                             staging_dir=tmp_path / "s3")
    assert ModelCard.load(staged_adapter.staged / "README.md").data.base_model == "org/tiny-base"
    install_in_hub_cache(staged_adapter.staged, hf_home, "org/tiny-adapter")

    torch.save(PROMPTS, tmp_path / "prompts.pt")
    (tmp_path / "fresh.py").write_text(FRESH_PROCESS)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(tmp_path / "fresh.py"), str(tmp_path / "prompts.pt"),
                             str(tmp_path / "out.pt")], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    out = torch.load(tmp_path / "out.pt")
    adapter.eval()
    with torch.no_grad():
        expected_model = model.generate(PROMPTS)  # no kwargs: the model's own generation config
        expected_adapter = adapter.generate(input_ids=PROMPTS)
    assert expected_model.shape == (2, 5 + GENERATION["max_new_tokens"])
    assert torch.equal(out["model"], expected_model)
    assert torch.equal(out["adapter"], expected_adapter)
    assert torch.equal(out["auto_adapter"], expected_adapter)
    with adapter.disable_adapter(), torch.no_grad():  # the adapter does change what is generated
        assert not torch.equal(adapter.generate(input_ids=PROMPTS), expected_adapter)


def run_publish_cli(*args: str) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parents[2] / "examples" / "publish.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_publish_cli_dry_run_lists_files_and_renders_the_card(tmp_path):
    saved_model(tmp_path / "model")
    result = run_publish_cli(str(tmp_path / "model"), "org/tiny", "--dry-run", "--dataset", "org/data")
    assert result.returncode == 0, result.stderr
    assert "would upload model to org/tiny" in result.stdout
    assert "  model.safetensors" in result.stdout and "  README.md" in result.stdout
    assert "library_name: transformers" in result.stdout and "- org/data" in result.stdout


def test_publish_cli_reports_incomplete_folders(tmp_path):
    saved_model(tmp_path / "model")
    (tmp_path / "model" / "generation_config.json").unlink()
    result = run_publish_cli(str(tmp_path / "model"), "org/tiny", "--dry-run")
    assert result.returncode == 2
    assert "generation_config.json is missing" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr  # one line for the user


@pytest.mark.slow
def test_merged_adapter_is_published_as_a_model_that_generates_like_the_adapter(tmp_path):
    from huggingface_hub import constants
    from transformers import AutoModel

    saved_model(tmp_path / "base")
    base = AutoModel.from_pretrained(tmp_path / "base")
    adapter = get_peft_model(base, LoraConfig(r=4, target_modules=["v_proj", "up_proj"]))
    with torch.no_grad():
        for name, parameter in adapter.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
        expected = adapter.generate(input_ids=PROMPTS)
    adapter.save_pretrained(tmp_path / "adapter")
    # the base the adapter names, a local folder: merged from it; the card never names a local path as base_model
    result = publish(tmp_path / "adapter", "org/merged", merge=True, dry_run=True, staging_dir=tmp_path / "staged")
    assert result.kind == "model" and "adapter_config.json" not in result.files
    card = ModelCard.load(result.staged / "README.md")
    assert card.data.base_model is None and str(tmp_path) not in result.card
    assert "`base` (a local folder)" in card.text and "### Merge" in card.text
    merged = AutoModel.from_pretrained(result.staged)
    assert torch.equal(merged.generate(PROMPTS), expected)
    # the base by Hub id (here from the local cache, offline): the card names it, as the base of a merge
    repo_id = f"org/merge-base-{os.getpid()}-{tmp_path.name}"[:90]
    install_in_hub_cache(tmp_path / "base", Path(constants.HF_HUB_CACHE).parent, repo_id)
    result = publish(tmp_path / "adapter", "org/merged", merge=True, base_model=repo_id, dry_run=True,
                     staging_dir=tmp_path / "staged-2")
    data = ModelCard.load(result.staged / "README.md").data
    assert data.base_model == repo_id and data.base_model_relation == "merge"
    merged = AutoModel.from_pretrained(result.staged)
    assert torch.equal(merged.generate(PROMPTS), expected)


def test_model_push_to_hub_uploads_code_files_and_auto_map(tmp_path, monkeypatch):
    import transformers.utils.hub as hub

    uploaded = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

    monkeypatch.setattr(hub, "hf_api", lambda: FakeApi())
    monkeypatch.setattr(hub, "create_and_tag_model_card", lambda *a, **k: ModelCard("---\nlicense: mit\n---\n"))
    model = tiny_model()

    def capture(self, folder, repo_id, **kwargs):
        uploaded["files"] = sorted(p.name for p in Path(folder).iterdir())
        uploaded["config"] = json.loads((Path(folder) / "config.json").read_text())

    monkeypatch.setattr(type(model), "_upload_modified_files", capture)
    model.push_to_hub("org/tiny")
    assert {"configuration_llada.py", "modeling_llada.py", "generation_llada.py", "model.safetensors"} <= set(
        uploaded["files"])
    assert set(uploaded["config"]["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForMaskedLM",
                                                    "AutoModelForCausalLM"}


def test_trainer_create_model_card_names_the_dataset(tmp_path):
    dataset, _, _ = memorisation_set()
    trainer = MaskedDiffusionSFTTrainer(tiny_model(), sft_config(tmp_path, max_steps=1), train_dataset=dataset,
                                        processing_class=tiny_chat_tokenizer())
    trainer.train()
    trainer.save_model()
    trainer.create_model_card(dataset_name="org/memorise")
    card = ModelCard.load(Path(trainer.args.output_dir) / "README.md")
    assert card.data.datasets == ["org/memorise"] and "trl" in card.data.tags
    assert "response-only masked-diffusion SFT" in card.text

"""The training record lists every stage that led to the weights (pre-training, SFT, LoRA SFT), with its data, and
the card renders them: the stages, the datasets (Hub ids in the metadata, local data by name in the text), the base
model (metadata only for a Hub id, with its relation), the sampler settings and the evaluation."""

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from peft import LoraConfig

from hub_cards import build_adapter_card, build_model_card, publish, training_record
from tests.hub_cards.test_publishing import saved_model
from tests.trainers.test_pretraining import config as pretraining_config
from tests.trainers.test_pretraining import repetitive_corpus
from tests.trainers.test_sft import memorisation_set, sft_config
from tests.utils import tiny_chat_tokenizer, tiny_config, tiny_model
from trainers import MaskedDiffusionSFTTrainer, MaskedDiffusionTrainer

# a record as format 1 wrote it (no stages): cards keep rendering these
FORMAT_1 = {
    "objective": "sft", "mask_eps": 0.001, "random_length_probability": 0.0, "low_discrepancy_sampling": False,
    "train_on_padding": False,
    "hyperparameters": {"learning_rate": 0.005, "per_device_train_batch_size": 4, "max_length": 64},
    "global_step": 3, "train_loss": 1.23456, "eval_loss": None,
    "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj"]},
    "datasets": ["org/data", "/home/someone/pairs.jsonl"],
}
GENERATION = {"max_new_tokens": 16, "steps": 8, "block_length": 8, "remasking": "margin", "threshold": 0.9,
              "eos_token_id": 61}
EVAL = [dict(task_type="text-generation", dataset_type="addition", dataset_name="Addition (held out)",
             metric_type="exact_match", metric_value=0.75)]


def stage(kind: str, names: list[str], rows: int, **extra) -> dict:
    objective = "sft" if "SFT" in kind else "pretraining"
    from hub_cards.cards import dataset_hub_id

    return {"kind": kind, "objective": objective, "steps": 10, "mask_eps": 0.001, "train_loss": 2.5,
            "hyperparameters": {"learning_rate": 0.001}, "lora": {"r": 8} if "LoRA" in kind else None,
            "dataset": {"names": names, "hub_ids": [n for n in names if dataset_hub_id(n)], "rows": rows,
                        "row_unit": "examples", "tokens": rows * 10}, **extra}


def test_a_format_1_record_still_renders_as_one_stage():
    card = build_model_card(tiny_config().to_dict(), "org/tiny", training=FORMAT_1)
    assert card.data.datasets == ["org/data"]  # the local file is no Hub dataset
    text = card.text
    assert "One stage: LoRA SFT." in text and "final training loss 1.2346" in text
    assert "eps = 0.001" in text and "learning_rate = 0.005" in text and "answer padding is excluded" in text
    assert "- data: org/data, pairs.jsonl" in text and "/home/someone" not in text
    assert "r = 4, lora_alpha = 8" in text


def test_the_card_lists_every_stage_its_data_the_sampler_settings_and_the_evaluation():
    record = {"format": 2, "base_model": {"name": "pretrain", "hub_id": None}, "stages": [
        stage("pre-training", ["org/corpus"], 1018),
        stage("LoRA SFT", ["pairs.jsonl", "org/chat"], 2000, started_from={"name": "pretrain", "hub_id": None}),
    ], "merge": {"base_model": {"name": "pretrain", "hub_id": None}}}
    card = build_model_card(tiny_config().to_dict(), "org/tiny", training=record, generation_config=GENERATION,
                            eval_results=EVAL)
    data = card.data.to_dict()
    assert data["datasets"] == ["org/corpus", "org/chat"]
    assert "base_model" not in data and "base_model_relation" not in data  # a local base is no Hub id
    metric = data["model-index"][0]["results"][0]["metrics"][0]
    assert (metric["type"], metric["value"]) == ("exact_match", 0.75)
    text = card.text
    assert "2 stages, in order: pre-training -> LoRA SFT." in text
    assert "### Stage 1: pre-training" in text and "### Stage 2: LoRA SFT" in text
    assert "- data: org/corpus: 1,018 rows (examples), 10,180 tokens" in text
    assert "- data: pairs.jsonl, org/chat: 2,000 rows (examples), 20,000 tokens" in text
    assert "- started from: `pretrain` (a local folder)" in text
    assert "### Merge" in text and "merged into the weights of its base model" in text
    assert "### Sampler settings" in text
    for row in ("| steps | 8 |", "| block_length | 8 |", "| remasking | 'margin' |", "| threshold | 0.9 |"):
        assert row in text, row
    assert "| text-generation | Addition (held out) | exact_match | 0.75 |" in text


@pytest.mark.parametrize("relation", ["merge", "finetune"])
def test_a_hub_base_is_named_in_the_metadata_with_its_relation(relation):
    base = {"name": "org/base", "hub_id": "org/base"}
    record = {"format": 2, "base_model": base, "stages": [stage("SFT", [], 8, started_from=base)]}
    if relation == "merge":
        record["merge"] = {"base_model": base}
    data = build_model_card(tiny_config().to_dict(), "org/tiny", training=record).data
    assert (data.base_model, data.base_model_relation) == ("org/base", relation)


def test_an_adapter_card_names_a_hub_base_as_adapter_and_a_local_one_in_the_text_only():
    adapter = {"base_model_name_or_path": "org/base", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
               "target_modules": ["q_proj"]}
    card = build_adapter_card(adapter, "org/lora", num_adapter_parameters=100)
    assert (card.data.base_model, card.data.base_model_relation) == ("org/base", "adapter")
    assert 'AutoModel.from_pretrained("org/base"' in card.text
    local = build_adapter_card({**adapter, "base_model_name_or_path": "/home/someone/runs/pretrain"}, "org/lora",
                               num_adapter_parameters=100)
    assert local.data.base_model is None and "/home/someone" not in local.text
    assert "`pretrain` (a local folder" in local.text
    # the training record says the recorded name was a local folder: it is not taken for a Hub id
    trained = {"format": 2, "base_model": {"name": "pretrain", "hub_id": None}, "stages": []}
    card = build_adapter_card({**adapter, "base_model_name_or_path": "runs/pretrain"}, "org/lora",
                              num_adapter_parameters=100, training=trained)
    assert card.data.base_model is None


def test_card_datasets_take_hub_ids_only():
    with pytest.raises(ValueError, match=r"datasets=\['/data/train.jsonl'\] is not a Hub dataset id"):
        build_model_card(tiny_config().to_dict(), "org/tiny", datasets=["/data/train.jsonl"])
    assert build_model_card(tiny_config().to_dict(), "org/tiny", datasets=["org/data"]).data.datasets == ["org/data"]


@pytest.mark.slow
def test_a_lora_sft_from_a_pretrained_folder_records_both_stages_and_its_merge_card_shows_them(tmp_path):
    from transformers import AutoModel

    tokenizer = tiny_chat_tokenizer()
    pretrainer = MaskedDiffusionTrainer(tiny_model(), pretraining_config(tmp_path, max_steps=3),
                                        train_dataset=repetitive_corpus(), processing_class=tokenizer)
    pretrainer.train()
    pretrained = tmp_path / "pretrain"
    pretrainer.save_model(str(pretrained), dataset_name="org/counting")
    first = json.loads((pretrained / "llada_training.json").read_text())
    assert [s["kind"] for s in first["stages"]] == ["pre-training"] and first["base_model"] is None
    blocks = len(pretrainer.train_dataset)
    assert first["stages"][0]["dataset"] == {"names": ["org/counting"], "hub_ids": ["org/counting"], "rows": blocks,
                                             "row_unit": "packed blocks of 32 tokens", "tokens": blocks * 32}
    saved_model(tmp_path / "unused")  # (a generation config for the pre-trained folder, as the CLI writes one)
    (pretrained / "generation_config.json").write_text((tmp_path / "unused" / "generation_config.json").read_text())

    dataset, _, _ = memorisation_set()
    data_file = tmp_path / "data" / "pairs.jsonl"
    sft = MaskedDiffusionSFTTrainer(AutoModel.from_pretrained(pretrained), sft_config(tmp_path, max_steps=2),
                                    train_dataset=dataset, processing_class=tokenizer,
                                    peft_config=LoraConfig(r=4, lora_alpha=8))
    sft.train()
    adapter = tmp_path / "adapter"
    sft.save_model(str(adapter), dataset_name=str(data_file))
    record = json.loads((adapter / "llada_training.json").read_text())
    assert str(tmp_path) not in json.dumps(record)
    assert [s["kind"] for s in record["stages"]] == ["pre-training", "LoRA SFT"]
    assert record["stages"][0] == first["stages"][0]
    last = record["stages"][1]
    assert last["started_from"] == record["base_model"] == {"name": "pretrain", "hub_id": None}
    assert last["dataset"]["names"] == ["pairs.jsonl"] and last["dataset"]["hub_ids"] == []
    assert last["dataset"]["rows"] == len(dataset) and last["dataset"]["tokens"] > 0
    assert record["objective"] == "sft" and record["global_step"] == 2 and record["lora"]["r"] == 4
    assert record == training_record(sft, [str(data_file)])

    card = ModelCard.load(adapter / "README.md")
    assert card.data.datasets == ["org/counting"] and card.data.base_model is None
    assert "### Stage 1: pre-training" in card.text and "### Stage 2: LoRA SFT" in card.text
    assert f"- data: pairs.jsonl: {len(dataset)} rows (examples)" in card.text

    merged = publish(adapter, "org/merged", merge=True, dry_run=True, staging_dir=tmp_path / "staged")
    staged = json.loads((merged.staged / "llada_training.json").read_text())
    assert staged["stages"] == record["stages"] and staged["merge"]["base_model"] == {"name": "pretrain",
                                                                                     "hub_id": None}
    text = ModelCard.load(merged.staged / "README.md").text
    assert "### Stage 1: pre-training" in text and "### Stage 2: LoRA SFT" in text and "### Merge" in text
    assert f"{blocks:,} rows (packed blocks of 32 tokens)" in text and str(tmp_path) not in text
    assert "| steps | 4 |" in text  # the sampler settings of the base's generation_config.json
    assert Path(merged.staged / "README.md").read_text() == merged.card

"""VRPO and diffu-GRPO runs save like every llada-hf trainer: atomic checkpoints, the training record with their
stage after the stages of the model they started from, and a LLaDA card (not TRL's) that names the method, its
paper, its settings and the reference model."""

import json
from pathlib import Path

from datasets import Dataset
from peft import LoraConfig

from hub_cards.cards import TRAINING_RECORD
from tests.utils import tiny_chat_tokenizer, words
from trainers import MaskedDiffusionSFTTrainer, VRPOConfig, VRPOTrainer
from trainers.grpo import DiffuGRPOConfig, DiffuGRPOTrainer
from trainers.sft import MaskedDiffusionSFTConfig

COMMON = dict(per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3, report_to="none", use_cpu=True,
              logging_steps=1, disable_tqdm=True, seed=0)


def sft_folder(tmp_path: Path) -> Path:
    """A model folder written by a (one-step) SFT run: its record holds one SFT stage."""
    from modeling_llada import LLaDAModelLM
    from tests.utils import tiny_config

    folder = tmp_path / "sft"
    data = Dataset.from_dict({"prompt": [words([i, i + 1]) for i in range(4)],
                              "completion": [" " + words([i + 2]) for i in range(4)]})
    trainer = MaskedDiffusionSFTTrainer(LLaDAModelLM(tiny_config()),
                                        MaskedDiffusionSFTConfig(output_dir=str(folder), save_strategy="no",
                                                                 **{**COMMON, "max_steps": 1}),
                                        train_dataset=data, processing_class=tiny_chat_tokenizer())
    trainer.train()
    trainer.save_model()
    return folder


def load(folder: Path):
    from modeling_llada import LLaDAModelLM

    return LLaDAModelLM.from_pretrained(folder)


def preference_pairs() -> Dataset:
    return Dataset.from_dict({"prompt": ["t1 t2", "t3", "t4 t5", "t6"], "chosen": [" t8", " t9 t10", " t11", " t12"],
                              "rejected": [" t13", " t14", " t15 t16", " t17"]})


def stages_and_card(folder: Path) -> tuple[list[dict], str]:
    record = json.loads((folder / TRAINING_RECORD).read_text())
    return record["stages"], (folder / "README.md").read_text()


def test_a_vrpo_run_records_its_stage_after_the_sft_stage_and_writes_a_llada_card(tmp_path):
    start = sft_folder(tmp_path)
    output = tmp_path / "vrpo"
    trainer = VRPOTrainer(load(start), args=VRPOConfig(output_dir=str(output), save_strategy="steps", save_steps=1,
                                                       beta=0.2, elbo_samples=3, **COMMON),
                          train_dataset=preference_pairs(), processing_class=tiny_chat_tokenizer())
    trainer.train()
    trainer.save_model(dataset_name="org/pairs")
    # checkpoints went through the atomic path: whole, renamed, nothing staged left behind
    assert sorted(p.name for p in output.iterdir() if p.name.startswith(("checkpoint", "_"))) == \
        ["checkpoint-1", "checkpoint-2"]
    stages, card = stages_and_card(output)
    assert [s["kind"] for s in stages] == ["SFT", "VRPO"]
    vrpo = stages[-1]
    assert vrpo["objective"] == "vrpo" and vrpo["steps"] == 2
    assert vrpo["started_from"]["name"] == "sft"
    settings = vrpo["hyperparameters"]
    assert (settings["beta"], settings["elbo_samples"], settings["optimal_allocation"],
            settings["antithetic_sampling"]) == (0.2, 3, True, True)
    assert vrpo["dataset"]["rows"] == 4 and vrpo["dataset"]["row_unit"] == "preference pairs"
    assert vrpo["dataset"]["hub_ids"] == ["org/pairs"]
    assert set(vrpo["final_metrics"]) == {"rewards/accuracies", "rewards/margins"}
    assert "VRPO (LLaDA 1.5, arXiv 2505.19223)" in card
    assert "reference: a frozen copy of the starting model; beta = 0.2" in card
    assert "2 stages, in order: SFT -> VRPO." in card and "### Stage 2: VRPO" in card
    # TRL's card (its DPO template) was not written in its place, neither with the weights nor with a checkpoint
    for folder in (output, output / "checkpoint-2"):
        text = (folder / "README.md").read_text() if (folder / "README.md").exists() else ""
        assert "TRL" not in text.split("---")[-1][:200] and "Model Card for" not in text


def test_a_lora_diffu_grpo_run_records_its_stage_and_its_reference(tmp_path):
    start = sft_folder(tmp_path)
    output = tmp_path / "grpo"
    prompts = Dataset.from_dict({"prompt": [[{"role": "user", "content": words([i, i + 1])}] for i in range(4)]})

    def length_reward(completions, **kwargs):
        return [float(len(c[-1]["content"].split())) for c in completions]

    trainer = DiffuGRPOTrainer(load(start), reward_funcs=length_reward,
                               args=DiffuGRPOConfig(output_dir=str(output), save_strategy="no", num_generations=2,
                                                    max_completion_length=4, beta=0.05, **COMMON),
                               train_dataset=prompts, processing_class=tiny_chat_tokenizer(),
                               peft_config=LoraConfig(r=4, lora_alpha=8))
    trainer.train()
    trainer.save_model()
    stages, card = stages_and_card(output)
    assert [s["kind"] for s in stages] == ["SFT", "LoRA diffu-GRPO"]
    grpo = stages[-1]
    assert grpo["objective"] == "diffu_grpo" and grpo["lora"]["r"] == 4
    settings = grpo["hyperparameters"]
    assert (settings["beta"], settings["num_generations"], settings["p_mask_prompt"],
            settings["max_completion_length"]) == (0.05, 2, 0.15, 4)
    assert grpo["dataset"]["row_unit"] == "prompts" and grpo["dataset"]["rows"] == 4
    assert "reward" in grpo["final_metrics"]
    assert "2 stages, in order: SFT -> LoRA diffu-GRPO." in card
    assert "diffu-GRPO (d1, arXiv 2504.12216)" in card
    assert "reference: the starting model with the adapter disabled; beta = 0.05" in card
    assert (output / "adapter_config.json").exists()

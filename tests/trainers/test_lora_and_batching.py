import copy

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from tests.trainers.test_pretraining import config as pretrain_config
from tests.trainers.test_pretraining import repetitive_corpus
from tests.trainers.test_sft import memorisation_set, sft_config, variable_length_set
from tests.utils import tiny_chat_tokenizer, tiny_model
from trainers import MaskedDiffusionSFTTrainer, MaskedDiffusionTrainer, with_llada_defaults

BLOCK_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")


def test_default_lora_targets_are_the_block_projections_not_the_head():
    model = get_peft_model(tiny_model(), with_llada_defaults(LoraConfig(r=4)))
    wrapped = {name.removesuffix(".lora_A.default") for name, _ in model.named_modules() if name.endswith("lora_A.default")}
    expected = {f"base_model.model.model.transformer.blocks.{i}.{p}" for i in range(2) for p in BLOCK_PROJECTIONS}
    assert wrapped == expected


def test_lora_given_explicit_targets_keeps_them():
    config = with_llada_defaults(LoraConfig(r=4, target_modules=["q_proj"]))
    assert config.target_modules == {"q_proj"}


@pytest.mark.slow
def test_lora_sft_trains_only_adapters_and_saved_merged_adapters_generate_the_same(tmp_path):
    dataset, prompts, _ = memorisation_set()
    base = tiny_model(d_model=64, mlp_hidden_size=128)
    base_state = copy.deepcopy(base.state_dict())
    trainer = MaskedDiffusionSFTTrainer(
        base, sft_config(tmp_path, per_device_train_batch_size=8, max_steps=40, learning_rate=2e-2),
        train_dataset=dataset, processing_class=tiny_chat_tokenizer(), peft_config=LoraConfig(r=8, lora_alpha=16),
    )
    trainer.train()
    model = trainer.model.eval()
    assert isinstance(model, PeftModel)
    for name, tensor in model.named_parameters():
        if "lora_" in name:
            continue
        original = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
        assert torch.equal(tensor, base_state[original]), name
    changed = [n for n, p in model.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert len(changed) == 2 * len(BLOCK_PROJECTIONS)

    ids = torch.tensor(prompts)
    with_adapter = model.generate(input_ids=ids, max_new_tokens=4, steps=4)
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_model(d_model=64, mlp_hidden_size=128), tmp_path / "adapter").eval()
    assert torch.equal(reloaded.generate(input_ids=ids, max_new_tokens=4, steps=4), with_adapter)
    merged = reloaded.merge_and_unload()
    assert torch.equal(merged.generate(ids, max_new_tokens=4, steps=4), with_adapter)


def test_pretraining_trainer_accepts_a_lora_config(tmp_path):
    trainer = MaskedDiffusionTrainer(tiny_model(), pretrain_config(tmp_path, max_steps=2),
                                     train_dataset=repetitive_corpus(), peft_config=LoraConfig(r=4))
    trainer.train()
    assert isinstance(trainer.model, PeftModel)
    assert all("lora_" in n for n, p in trainer.model.named_parameters() if p.requires_grad)


def logged_losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_pretraining_loss_does_not_depend_on_how_the_batch_is_split(tmp_path):
    runs = []
    for batch, accumulation in ((8, 1), (4, 2)):
        trainer = MaskedDiffusionTrainer(
            tiny_model(), pretrain_config(tmp_path / f"{batch}", per_device_train_batch_size=batch,
                                          gradient_accumulation_steps=accumulation, max_steps=3),
            train_dataset=repetitive_corpus(),
        )
        trainer.train()
        runs.append((logged_losses(trainer), trainer.model.state_dict()))
    (losses_a, state_a), (losses_b, state_b) = runs
    assert losses_a == pytest.approx(losses_b, rel=1e-5)
    for name in state_a:
        # equal up to float summation order (Adam magnifies it on near-zero gradients)
        torch.testing.assert_close(state_a[name], state_b[name], rtol=1e-4, atol=2e-5)


def test_sft_loss_does_not_depend_on_how_the_batch_is_split(tmp_path):
    runs = []
    for batch, accumulation in ((4, 1), (2, 2)):
        trainer = MaskedDiffusionSFTTrainer(
            tiny_model(), sft_config(tmp_path / f"{batch}", per_device_train_batch_size=batch,
                                     gradient_accumulation_steps=accumulation, max_steps=3),
            train_dataset=variable_length_set(), processing_class=tiny_chat_tokenizer(),
        )
        trainer.train()
        runs.append(logged_losses(trainer))
    assert runs[0] == pytest.approx(runs[1], rel=1e-5)

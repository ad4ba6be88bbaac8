"""No TrainingArguments / TRL config field is accepted and then ignored by our trainers (issue #29, item 4).

Every field of each trainer config's parent (TrainingArguments, TRL's SFTConfig, DPOConfig, GRPOConfig) is classified
here: refused unless left at its default (the config module's table of refused fields), honoured by our own code
(each proved below by what it changes, or by the test named for it), honoured by the parent's code that our trainers
keep, or irrelevant with a reason. A field a new transformers / TRL release adds fails
`test_every_parent_field_is_classified` until it is classified.
"""

import dataclasses
import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import TrainingArguments
from trl import DPOConfig, GRPOConfig, SFTConfig

from tests.utils import tiny_chat_tokenizer, tiny_model, words
from trainers import (
    DiffuGRPOConfig,
    DiffuGRPOTrainer,
    MaskedDiffusionConfig,
    MaskedDiffusionSFTConfig,
    MaskedDiffusionSFTTrainer,
    VRPOConfig,
    VRPOTrainer,
)
from trainers.grpo import GRPO_REFUSED_FIELDS
from trainers.pretraining import PRETRAINING_REFUSED_FIELDS
from trainers.sft import SFT_REFUSED_FIELDS
from trainers.vrpo import VRPO_REFUSED_FIELDS

EOS = 61

# TrainingArguments fields (transformers 5.20 to 5.25) that the Trainer reads itself and our trainers leave to it
# (some with other defaults: bf16, activation checkpointing, pinned memory, learning_rate, logging_steps).
TRAINER_READS = {
    "accelerator_config", "activation_checkpointing", "activation_checkpointing_kwargs", "adam_beta1", "adam_beta2",
    "adam_epsilon", "auto_find_batch_size", "bf16", "bf16_full_eval", "data_seed", "dataloader_drop_last",
    "dataloader_in_order", "dataloader_multiprocessing_context", "dataloader_num_workers",
    "dataloader_persistent_workers", "dataloader_pin_memory", "dataloader_prefetch_factor", "ddp_backend",
    "ddp_broadcast_buffers", "ddp_bucket_cap_mb", "ddp_find_unused_parameters", "ddp_static_graph", "ddp_timeout",
    "debug", "deepspeed", "disable_tqdm", "do_eval", "do_predict", "do_train", "enable_jit_checkpoint",
    "eval_accumulation_steps", "eval_delay", "eval_on_start", "eval_steps", "eval_strategy", "fp16",
    "fp16_full_eval", "fsdp", "fsdp_config", "full_determinism", "gradient_accumulation_steps",
    "gradient_checkpointing", "gradient_checkpointing_kwargs", "greater_is_better", "hub_always_push",
    "hub_model_id", "hub_private_repo", "hub_revision", "hub_strategy", "hub_token", "ignore_data_skip",
    "include_num_input_tokens_seen", "learning_rate", "length_column_name", "load_best_model_at_end", "local_rank",
    "log_level", "log_level_replica", "log_on_each_node", "logging_first_step", "logging_nan_inf_filter",
    "logging_steps", "logging_strategy", "lr_scheduler_kwargs", "lr_scheduler_type", "max_grad_norm", "max_steps",
    "metric_for_best_model", "neftune_noise_alpha", "num_train_epochs", "optim", "optim_args",
    "optim_target_modules", "output_dir", "parallelism_config", "per_device_eval_batch_size",
    "per_device_train_batch_size", "project", "push_to_hub", "remove_unused_columns", "report_to",
    "restore_callback_states_from_checkpoint", "resume_from_checkpoint", "run_name", "save_on_each_node",
    "save_only_model", "save_steps", "save_strategy", "save_total_limit", "seed", "skip_memory_metrics", "tf32",
    "torch_compile", "torch_compile_backend", "torch_compile_mode", "torch_empty_cache_steps", "trackio_bucket_id",
    "trackio_space_id", "trackio_static_space_id", "train_sampling_strategy", "use_cache", "use_cpu",
    "warmup_steps", "weight_decay",
}
# The TrainingArguments fields that govern predictions handed to `compute_metrics`: the diffusion trainers' evaluation
# computes their loss alone (prediction_step returns no logits: masked-diffusion logits are not next-token predictions).
PREDICTIONS = {name: "evaluation returns the diffusion loss only (no logits or labels to gather or concatenate)"
               for name in ("prediction_loss_only", "include_for_metrics", "eval_do_concat_batches",
                            "batch_eval_metrics", "label_names", "eval_use_gather_object")}
LOADED_MODEL_ONLY = ("the trainer takes a loaded model (a name is refused); the llada-hf CLI reads it when it loads "
                     "the model")

# Per config: the parent config, our table of refused fields, the fields our code reads in place of the parent's
# (field -> the proof: a test of this file or "module::test"), the parent's own fields that its code (kept by our
# trainer) reads, and the irrelevant ones with the reason.
CLASSIFICATION = {
    "pretraining": dict(
        config=MaskedDiffusionConfig, parent=TrainingArguments, refused=PRETRAINING_REFUSED_FIELDS,
        ours={}, parent_reads=set(), irrelevant=PREDICTIONS,
    ),
    "sft": dict(
        config=MaskedDiffusionSFTConfig, parent=SFTConfig, refused=SFT_REFUSED_FIELDS,
        ours={
            "eos_token": "test_sft_eos_token_ends_and_pads_the_answers",
            "pad_to_multiple_of": "test_sft_pad_to_multiple_of_rounds_the_batch_length_with_trained_eos",
            "router_aux_loss_coef": ("tests.trainers.test_family_training::"
                                     "test_the_load_balancing_loss_adds_its_coefficient_times_the_switch_loss"),
        },
        parent_reads={"model_init_kwargs", "trust_remote_code", "chat_template_path", "dataset_text_field",
                      "dataset_kwargs", "dataset_num_proc", "max_length", "truncation_mode", "shuffle_dataset",
                      "activation_offloading"},
        irrelevant=PREDICTIONS,
    ),
    "vrpo": dict(
        config=VRPOConfig, parent=DPOConfig, refused=VRPO_REFUSED_FIELDS,
        ours={
            "beta": "test_vrpo_beta_scales_the_preference_score",
            "label_smoothing": "test_vrpo_label_smoothing_is_conservative_dpo",
            "pad_token": "test_vrpo_pad_token_pads_the_batches",
            "pad_to_multiple_of": "test_vrpo_max_length_and_pad_to_multiple_of_shape_the_batches",
            "max_length": "test_vrpo_max_length_and_pad_to_multiple_of_shape_the_batches",
            "truncation_mode": "test_vrpo_max_length_and_pad_to_multiple_of_shape_the_batches",
            "loss_type": "tests.trainers.test_vrpo::test_loss_equals_the_vrpo_loss_computed_by_hand",
            "loss_weights": "tests.trainers.test_vrpo::test_loss_equals_the_vrpo_loss_computed_by_hand",
            "precompute_ref_log_probs": "tests.trainers.test_vrpo::test_precomputed_reference_keeps_its_noise",
        },
        parent_reads={"disable_dropout", "dataset_num_proc", "precompute_ref_batch_size", "activation_offloading"},
        irrelevant={**PREDICTIONS, "trust_remote_code": LOADED_MODEL_ONLY},
    ),
    "grpo": dict(
        config=DiffuGRPOConfig, parent=GRPOConfig, refused=GRPO_REFUSED_FIELDS,
        ours={
            "temperature": "test_grpo_sampler_fields_reach_the_rollouts",
            "top_k": "test_grpo_sampler_fields_reach_the_rollouts",
            "top_p": "test_grpo_sampler_fields_reach_the_rollouts",
            "generation_kwargs": "test_grpo_sampler_fields_reach_the_rollouts",
            "max_completion_length": "test_grpo_sampler_fields_reach_the_rollouts",
            "beta": "tests.trainers.test_grpo::test_lora_trains_the_adapter_and_the_reference_is_the_base",
            "num_iterations": "tests.trainers.test_grpo::test_old_and_reference_logps_use_the_mask_of_their_iteration",
        },
        # TRL's GRPO machinery, kept: sampling of prompts and groups, rewards, advantages, the loss on our
        # log-probabilities (and entropies, aux loss), logging, evaluation
        parent_reads={
            "disable_dropout", "num_generations", "num_generations_eval", "shuffle_dataset", "generation_batch_size",
            "steps_per_generation", "chat_template_kwargs", "epsilon", "delta", "epsilon_high",
            "sapo_temperature_neg", "sapo_temperature_pos", "vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg",
            "vespo_lambda_neg", "importance_sampling_level", "reward_weights", "multi_objective_aggregation",
            "scale_rewards", "loss_type", "mask_truncated_completions", "top_entropy_quantile", "entropy_coef",
            "use_adaptive_entropy", "entropy_coef_min", "entropy_coef_max", "entropy_coef_delta", "entropy_target",
            "off_policy_mask_threshold", "use_bias_correction_kl", "log_completions", "log_multimodal",
            "num_completions_to_print", "log_unique_prompts", "log_completions_hub_repo", "router_aux_loss_coef",
            "average_tokens_across_devices", *PREDICTIONS,
        },
        irrelevant={"trust_remote_code": LOADED_MODEL_ONLY},
    ),
}


def classes(entry) -> dict[str, set[str]]:
    ta = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {
        "refused": set(entry["refused"]),
        "ours": set(entry["ours"]),
        "parent_reads": entry["parent_reads"] | (TRAINER_READS & ta),
        "irrelevant": set(entry["irrelevant"]),
    }


@pytest.mark.parametrize("name", list(CLASSIFICATION))
def test_every_parent_field_is_classified(name):
    entry = CLASSIFICATION[name]
    kinds = classes(entry)
    overlap = {field: [k for k, names in kinds.items() if field in names]
               for field in set().union(*kinds.values())}
    assert {field: where for field, where in overlap.items() if len(where) > 1} == {}
    unclassified = {f.name for f in dataclasses.fields(entry["parent"])} - set().union(*kinds.values())
    assert unclassified == set(), f"classify these {entry['parent'].__name__} fields for {name}"


@pytest.mark.parametrize("name", list(CLASSIFICATION))
def test_each_proof_named_elsewhere_exists(name):
    for field, proof in CLASSIFICATION[name]["ours"].items():
        module, _, function = proof.rpartition("::")
        where = importlib.import_module(module) if module else globals()
        target = getattr(where, function, None) if module else where.get(function)
        assert callable(target), f"{field}: no test {proof}"


BAD_VALUES = {"completion_only_loss": False, "eval_packing": True, "model_init_kwargs": {"dtype": "float32"},
              "liger_kernel_config": {"rms_norm": True}, "router_aux_loss_coef": 0.01, "ld_alpha": 0.5,
              "min_p": 0.1, "cache_implementation": "static", "max_tool_calling_iterations": 2,
              "transformers_continuous_batching_config": {"max_batch_tokens": 64}, "pad_to_multiple_of": 8,
              "pad_token": "t5", "loss_type": "dft"}


def bad_value(field, default):
    """A value of `field` other than its `default`, of its kind."""
    if field in BAD_VALUES:
        return BAD_VALUES[field]
    if isinstance(default, bool):
        return not default
    if default is None:
        return 1
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default + 0.25
    return {"bfd": "wrapped", "reverse_kl": "js_divergence", "colocate": "server", "nll": "dft",
            "auto": 8}.get(default, f"{default}-other")


BASE = {
    MaskedDiffusionConfig: {},
    MaskedDiffusionSFTConfig: {},
    VRPOConfig: {},
    DiffuGRPOConfig: dict(num_generations=2, max_completion_length=8, per_device_train_batch_size=2),
}
REFUSALS = [(name, field) for name, entry in CLASSIFICATION.items() for field in entry["refused"]]


@pytest.mark.parametrize("name, field", REFUSALS, ids=[f"{n}-{f}" for n, f in REFUSALS])
def test_a_refused_field_is_named_in_one_line(name, field):
    entry = CLASSIFICATION[name]
    config, fields = entry["config"], {f.name: f for f in dataclasses.fields(entry["config"])}
    if field not in fields:
        pytest.skip(f"{field} is not a field of {config.__name__} in this release")
    default = fields[field].default
    config(output_dir="unused", use_cpu=True, **BASE[config])  # the default passes
    value = bad_value(field, entry["refused"][field][0][0] if default is dataclasses.MISSING else default)
    with pytest.raises(ValueError) as error:
        config(output_dir="unused", use_cpu=True, **BASE[config], **{field: value})
    message = str(error.value)
    assert field in message and "\n" not in message
    older = {("sft", "packing"), ("sft", "padding_free"), ("sft", "completion_only_loss"), ("vrpo", "padding_free")}
    if (name, field) not in older:  # those older checks name the field and the value to set
        assert f"{field}={value!r}" in message


# ------------------------------------------------------------------------------------------------------------ SFT
def sft_trainer(tmp_path, tokenizer=None, **overrides):
    values = dict(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=4, max_steps=1, report_to="none",
                  use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0)
    values.update(overrides)
    dataset = Dataset.from_dict({"prompt": ["t1 t2", "t3", "t4 t5 t6", "t7"],
                                 "completion": [" t8 t9 t10", " t11", " t12 t13", " t14 t15 t16 t17"]})
    return MaskedDiffusionSFTTrainer(tiny_model(), args=MaskedDiffusionSFTConfig(**values), train_dataset=dataset,
                                     processing_class=tokenizer or tiny_chat_tokenizer())


def test_sft_eos_token_ends_and_pads_the_answers(tmp_path):
    """eos_token='t59' (an end-of-turn token, special as in real tokenizers): every answer ends with id 59 (TRL adds
    it), and the collator pads the answers with 59, not with the tokenizer's own EOS 61."""
    from tokenizers import AddedToken

    tokenizer = tiny_chat_tokenizer()
    tokenizer.add_tokens([AddedToken("t59", special=True)])
    trainer = sft_trainer(tmp_path, tokenizer, eos_token="t59")
    rows = [trainer.train_dataset[i] for i in range(4)]
    assert all(row["input_ids"][-1] == 59 for row in rows)
    batch = trainer.data_collator(rows)
    lengths = [len(row["input_ids"]) for row in rows]
    padding = torch.arange(batch["input_ids"].shape[1])[None] >= torch.tensor(lengths)[:, None]
    assert padding.any() and (batch["input_ids"][padding] == 59).all()
    assert not (batch["input_ids"] == EOS).any()
    default = sft_trainer(tmp_path / "default")
    assert (default.data_collator(rows)["input_ids"][padding] == EOS).all()


def test_sft_pad_to_multiple_of_rounds_the_batch_length_with_trained_eos(tmp_path):
    trainer = sft_trainer(tmp_path, pad_to_multiple_of=8)
    rows = [trainer.train_dataset[i] for i in range(4)]
    longest = max(len(row["input_ids"]) for row in rows)
    assert longest % 8 != 0
    batch = trainer.data_collator(rows)
    width = batch["input_ids"].shape[1]
    assert width == -(-longest // 8) * 8
    assert (batch["input_ids"][:, longest:] == EOS).all() and batch["maskable"][:, longest:].all()
    assert batch["answer_lengths"].tolist() == batch["maskable"].sum(-1).tolist()
    for row, example in enumerate(rows):  # answers (and their EOS padding) maskable, prompts never
        prompt = sum(label == -100 for label in example["labels"])
        assert not batch["maskable"][row, :prompt].any() and batch["maskable"][row, prompt:].all()
    trainer.train()  # the loss step takes the rounded batches
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])


# ----------------------------------------------------------------------------------------------------------- VRPO
def vrpo_trainer(tmp_path, tokenizer=None, **overrides):
    values = dict(output_dir=str(tmp_path / "vrpo"), per_device_train_batch_size=2, max_steps=1, report_to="none",
                  use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0, elbo_samples=2)
    values.update(overrides)
    pairs = Dataset.from_dict({"prompt": ["t1 t2", "t3", "t4 t5 t6", "t7"],
                               "chosen": [" t8 t9", " t11", " t12 t13", " t14"],
                               "rejected": [" t9 t8", " t10 t12", " t13", " t15 t16"]})
    return VRPOTrainer(tiny_model(0), ref_model=tiny_model(1), args=VRPOConfig(**values), train_dataset=pairs,
                       processing_class=tokenizer or tiny_chat_tokenizer())


def scores_and_loss(trainer, rows=(0, 2, 1, 3)):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in rows])
    trainer.model.train()
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    return outputs["scores"].double(), loss.double()


def test_vrpo_beta_scales_the_preference_score(tmp_path):
    """Same data, noise and models: the score beta * (ratio difference) doubles with beta."""
    low, _ = scores_and_loss(vrpo_trainer(tmp_path / "a", beta=0.25))
    high, _ = scores_and_loss(vrpo_trainer(tmp_path / "b", beta=0.5))
    assert low.abs().min() > 0
    torch.testing.assert_close(high, 2 * low, rtol=1e-5, atol=1e-7)


def test_vrpo_label_smoothing_is_conservative_dpo(tmp_path):
    """loss = mean(-(1 - e) log sigmoid(s) - e log sigmoid(-s)) over the pairs' scores s (cDPO, TRL's formula)."""
    e = 0.2
    trainer = vrpo_trainer(tmp_path, label_smoothing=e, beta=0.5)
    scores, loss = scores_and_loss(trainer)
    expected = (-(1 - e) * F.logsigmoid(scores) - e * F.logsigmoid(-scores)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)
    plain_scores, plain = scores_and_loss(vrpo_trainer(tmp_path / "plain", beta=0.5))
    torch.testing.assert_close(plain_scores, scores)  # the same estimates, another loss
    torch.testing.assert_close(plain, -F.logsigmoid(scores).mean(), rtol=1e-5, atol=1e-7)
    assert abs(float(plain - loss)) > 1e-4
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\), got 0.5"):
        VRPOConfig(output_dir="unused", use_cpu=True, label_smoothing=0.5)


def test_vrpo_pad_token_pads_the_batches(tmp_path):
    tokenizer = tiny_chat_tokenizer()
    trainer = vrpo_trainer(tmp_path, tokenizer=tokenizer, pad_token="t5")
    assert tokenizer.pad_token == "t5"
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    padding = batch["attention_mask"] == 0
    assert padding.any() and (batch["input_ids"][padding] == 5).all()
    with pytest.raises(ValueError, match=r"^pad_token='nope' is not a token of the tokenizer"):
        vrpo_trainer(tmp_path / "bad", pad_token="nope")


def test_vrpo_max_length_and_pad_to_multiple_of_shape_the_batches(tmp_path):
    rows = list(range(4))
    plain = vrpo_trainer(tmp_path / "plain")
    width = plain.data_collator([plain.train_dataset[i] for i in rows])["input_ids"].shape[1]
    assert width > 4 and width % 16 != 0
    rounded = vrpo_trainer(tmp_path / "rounded", pad_to_multiple_of=16)
    assert rounded.data_collator([rounded.train_dataset[i] for i in rows])["input_ids"].shape[1] == 16
    for mode in ("keep_start", "keep_end"):  # the chosen answer of pair 0, cut to 4 tokens at its end or start
        short = vrpo_trainer(tmp_path / mode, max_length=4, truncation_mode=mode)
        example = short.train_dataset[0]
        whole = list(example["prompt_ids"]) + list(example["chosen_ids"])
        assert len(whole) > 4
        batch = short.data_collator([short.train_dataset[i] for i in rows])
        assert batch["input_ids"].shape[1] == 4
        assert batch["input_ids"][0].tolist() == (whole[:4] if mode == "keep_start" else whole[-4:])


# ----------------------------------------------------------------------------------------------------------- GRPO
def grpo_trainer(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=4,
                  max_completion_length=8, max_steps=1, report_to="none", use_cpu=True, save_strategy="no",
                  disable_tqdm=True, seed=0, temperature=1.0)
    values.update(overrides)
    prompts = Dataset.from_dict({"prompt": [[{"role": "user", "content": words(range(i, i + 2))}]
                                            for i in range(1, 5)]})
    return DiffuGRPOTrainer(tiny_model(), reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                            args=DiffuGRPOConfig(**values), train_dataset=prompts,
                            processing_class=tiny_chat_tokenizer())


def rollouts(trainer, prompt=(57, 3, 4, 59, 58), copies=4):
    calls = []
    generate = trainer.model.generate

    def spy(input_ids, attention_mask=None, **kwargs):
        calls.append(kwargs)
        return generate(input_ids, attention_mask=attention_mask, **kwargs)

    trainer.model.generate = spy
    completions, _ = trainer._generate_single_turn([list(prompt)] * copies, None, {}, copies)
    return completions, calls[0]


def test_grpo_sampler_fields_reach_the_rollouts(tmp_path):
    """temperature and generation_kwargs arrive in model.generate; top_k=1 or a tiny top_p makes the sampled copies
    of a prompt identical (sampling from one candidate), where the full distribution makes them differ;
    max_completion_length bounds the completions."""
    free, _ = rollouts(grpo_trainer(tmp_path / "free"))
    assert len({tuple(c) for c in free}) > 1
    for overrides in (dict(top_k=1), dict(top_p=1e-6)):
        same, _ = rollouts(grpo_trainer(tmp_path / next(iter(overrides)), **overrides))
        assert len({tuple(c) for c in same}) == 1, overrides
    completions, kwargs = rollouts(grpo_trainer(tmp_path / "kw", temperature=0.7, max_completion_length=4,
                                                generation_kwargs={"logits_eos_inf": True}))
    assert kwargs["temperature"] == 0.7 and kwargs["logits_eos_inf"] is True and kwargs["max_new_tokens"] == 4
    assert all(len(c) == 4 and EOS not in c for c in completions)  # logits_eos_inf: EOS never sampled

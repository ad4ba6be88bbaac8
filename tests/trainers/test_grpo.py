import random

import pytest
import torch
from datasets import Dataset

from tests.utils import run_two_cpu_processes, tiny_chat_tokenizer, tiny_model, words
from trainers.grpo import DiffuGRPOConfig, DiffuGRPOTrainer, exact_match_reward

MASK, EOS, EOT = 60, 61, 59


def grpo_config(tmp_path, **overrides) -> DiffuGRPOConfig:
    values = dict(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
                  max_completion_length=8, max_steps=2, learning_rate=1e-2, report_to="none", use_cpu=True,
                  logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0)
    values.update(overrides)
    return DiffuGRPOConfig(**values)


def prompt_set():
    """Chat prompts of different lengths (left padding in every batch)."""
    return Dataset.from_dict({"prompt": [[{"role": "user", "content": words(range(i, i + 1 + i % 3))}]
                                         for i in range(1, 9)]})


def length_reward(completions, **kwargs):
    return [float(len(c[-1]["content"].split())) for c in completions]


def trainer_for(tmp_path, model=None, reward_funcs=length_reward, **overrides):
    return DiffuGRPOTrainer(model if model is not None else tiny_model(), reward_funcs=reward_funcs,
                            args=grpo_config(tmp_path, **overrides), train_dataset=prompt_set(),
                            processing_class=tiny_chat_tokenizer())


def generation_inputs(trainer, rows=(0, 0, 1, 1)):
    """A generation batch as TRL's sampler hands it over: each prompt repeated num_generations times."""
    return [trainer.train_dataset[i] for i in rows]


def by_hand_logps(model, ids, attention, prompt_mask, completion_length):
    """Row by row: prompt tokens of `prompt_mask` and the whole completion replaced by the mask id, one forward pass,
    log-softmax (float64) at the completion positions, gathered at the completion tokens."""
    rows = []
    prompt_length = ids.shape[1] - completion_length
    for row in range(ids.shape[0]):
        noisy = ids[row].clone()
        for i in range(prompt_length):
            if prompt_mask[row, i]:
                noisy[i] = MASK
        noisy[prompt_length:] = MASK
        logits = model(noisy[None], attention_mask=attention[row][None]).logits[0]
        log_probs = torch.log_softmax(logits.double(), -1)
        rows.append([log_probs[prompt_length + j, ids[row, prompt_length + j]].item()
                     for j in range(completion_length)])
    return torch.tensor(rows, dtype=torch.float64)


def test_cpu_defaults_and_d1_defaults():
    args = DiffuGRPOConfig(output_dir="unused", use_cpu=True)
    assert args.bf16 is False and args.activation_checkpointing is False
    assert args.p_mask_prompt == 0.15 and args.remasking == "low_confidence"


@pytest.mark.parametrize("overrides, message", [
    (dict(p_mask_prompt=1.0), r"p_mask_prompt must be in \[0, 1\), got 1.0"),
    (dict(p_mask_prompt=-0.1), r"p_mask_prompt must be in \[0, 1\), got -0.1"),
    (dict(temperature=0.0), r"temperature=0 with remasking='low_confidence' makes the num_generations=2"),
    (dict(block_length=3), r"max_completion_length \(8\) must be a multiple of block_length \(3\); e.g. "
                           r"block_length=2"),
    (dict(block_length=4, steps=3), r"steps \(3\) must be a multiple of the number of blocks \(2 = "
                                    r"max_completion_length 8 / block_length 4\)"),
    (dict(steps=0), r"`steps` must be a positive integer, got 0"),
    (dict(remasking="best"), r"`remasking` must be one of .*got 'best'"),
    (dict(kv_cache="full"), r"`kv_cache` must be None or one of .*got 'full'"),
    (dict(threshold=1.5), r"`threshold` must be in \(0, 1\], got 1.5"),
    (dict(threshold=0.9, remasking="random"), r"use remasking in \('low_confidence', 'margin'\), not 'random'"),
    (dict(cfg_scale=-1.0), r"`cfg_scale` must be a finite number >= 0"),
    (dict(generation_kwargs={"factor": 1.0}, threshold=0.9), r"Set either `threshold` or `factor`"),
    (dict(use_vllm=True), r"use_vllm"),
    (dict(min_p=0.1), r"min_p=0.1"),
    (dict(sync_ref_model=True), r"sync_ref_model=True is not supported"),
])
def test_bad_settings_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        grpo_config(tmp_path, **overrides)


def test_the_rollout_settings_are_checked_by_the_generation_config_of_the_model_family(tmp_path):
    """The config checks LLaDA's rules; the trainer those of the model's own sampler (LLaDA 2: confidence remasking
    and the prefix cache only), naming the generation config and the setting."""
    from transformers import AutoModel

    from tests.trainers.test_family_training import LLADA2_DIR, LLADA2_IDS, chat_tokenizer

    with pytest.raises(ValueError, match=r"^DiffuGRPOConfig's rollouts \(LLaDAGenerationConfig\): `remasking`"):
        grpo_config(tmp_path, remasking="best")
    llada2 = AutoModel.from_pretrained(LLADA2_DIR)
    for overrides, message in ((dict(remasking="margin"), r"`remasking='margin'`: LLaDA 2 commits by confidence only"),
                               (dict(kv_cache="dual"), r"`kv_cache` must be None or one of \('prefix',\), got 'dual'"),
                               (dict(cfg_scale=1.0), r"`cfg_scale` \(1.0\): LLaDA 2's sampler has no classifier-free")):
        args = grpo_config(tmp_path, **overrides)  # LLaDA's sampler takes them
        with pytest.raises(ValueError, match=r"^DiffuGRPOConfig's rollouts \(LLaDA2GenerationConfig\): " + message):
            DiffuGRPOTrainer(llada2, reward_funcs=length_reward, args=args, train_dataset=prompt_set(),
                             processing_class=chat_tokenizer(LLADA2_IDS))
    trainer = DiffuGRPOTrainer(llada2, reward_funcs=length_reward, args=grpo_config(tmp_path),
                               train_dataset=prompt_set(), processing_class=chat_tokenizer(LLADA2_IDS))
    assert trainer.diffusion_generation_kwargs()["mask_token_id"] == LLADA2_IDS["mask"]


def test_greedy_proposals_with_random_remasking_are_allowed(tmp_path):
    assert grpo_config(tmp_path, temperature=0.0, remasking="random").temperature == 0.0


def test_the_mask_id_comes_from_the_tokenizer_when_the_config_has_none(tmp_path):
    model = tiny_model(mask_token_id=None)
    trainer = trainer_for(tmp_path, model=model)
    assert model.config.mask_token_id == MASK and trainer.diffusion_generation_kwargs()["mask_token_id"] == MASK
    tokenizer = tiny_chat_tokenizer()
    tokenizer.mask_token = None
    with pytest.raises(ValueError, match=r"no mask_token_id and the tokenizer \(processing_class\) has no mask_token"):
        DiffuGRPOTrainer(tiny_model(mask_token_id=None), reward_funcs=length_reward, args=grpo_config(tmp_path),
                         train_dataset=prompt_set(), processing_class=tokenizer)


def test_bad_models_and_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not a name"):
        DiffuGRPOTrainer("GSAI-ML/LLaDA-8B-Instruct", reward_funcs=length_reward, args=grpo_config(tmp_path))
    with pytest.raises(ValueError, match="Pass reward_funcs"):
        trainer_for(tmp_path, reward_funcs=[])
    from trl import GRPOConfig

    with pytest.raises(TypeError, match="args must be a DiffuGRPOConfig"):
        DiffuGRPOTrainer(tiny_model(), reward_funcs=length_reward,
                         args=GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False),
                         train_dataset=prompt_set(), processing_class=tiny_chat_tokenizer())


def test_per_token_logps_equal_the_d1_estimate_computed_by_hand(tmp_path):
    trainer = trainer_for(tmp_path, p_mask_prompt=0.5)
    model = trainer.model.eval()
    # two left-padded prompts, completions right-padded (0 in the attention mask past the first EOS)
    ids = torch.tensor([[EOS, EOS, 57, 3, 4, 5, 58, 7, 8, EOT, EOS],
                        [57, 3, 4, 5, 6, 7, 8, 58, 9, EOS, EOS]])
    attention = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                              [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]])
    completion_length, seeds = 4, torch.tensor([12345, 987654321])
    prompt_length = ids.shape[1] - completion_length
    with torch.no_grad():
        logps, entropies, _ = trainer.per_token_logps(model, ids, attention, completion_length, seeds, iteration=0,
                                                      compute_entropy=True)
        mask = trainer.prompt_noise_mask(attention, prompt_length, seeds, 0)
        expected = by_hand_logps(model, ids, attention, mask, completion_length)
    assert mask.any() and not mask.all()
    scored = attention[:, prompt_length:].bool()
    assert torch.allclose(logps.double()[scored], expected[scored], atol=1e-5)
    assert (logps[~scored] == 0).all() and (entropies[~scored] == 0).all()
    assert (entropies[scored] > 0).all()
    # a row alone (no padding) gets the same mask and the same log-probs
    alone = slice(2, None)
    with torch.no_grad():
        row_logps, _, _ = trainer.per_token_logps(model, ids[:1, alone], attention[:1, alone], completion_length,
                                                  seeds[:1], iteration=0)
    assert torch.equal(trainer.prompt_noise_mask(attention[:1, alone], prompt_length - 2, seeds[:1], 0),
                       mask[:1, alone.start:prompt_length])
    assert torch.allclose(row_logps, logps[:1], atol=1e-6)


def test_prompt_masks_rate_iterations_and_padding(tmp_path):
    trainer = trainer_for(tmp_path)
    rows, length = 64, 200
    seeds = trainer.row_mask_seeds(rows, training=True)
    assert len(set(seeds.tolist())) == rows
    full = torch.ones(rows, length, dtype=torch.long)
    first = trainer.prompt_noise_mask(full, length, seeds, 0)
    assert abs(first.float().mean().item() - 0.15) < 0.015  # 12800 draws: the standard error is 0.003
    assert torch.equal(first, trainer.prompt_noise_mask(full, length, seeds, 0))  # deterministic
    second = trainer.prompt_noise_mask(full, length, seeds, 1)
    assert not torch.equal(first, second)  # a new mask for each inner iteration
    assert abs((first & second).float().mean().item() - 0.15 ** 2) < 0.01  # and independent of the first
    # left padding is never masked, and does not move a row's mask
    padded = torch.cat([torch.zeros(rows, 5, dtype=torch.long), full], dim=1)
    shifted = trainer.prompt_noise_mask(padded, length + 5, seeds, 0)
    assert not shifted[:, :5].any() and torch.equal(shifted[:, 5:], first)
    # p_mask_prompt = 0: the prompt is never masked
    trainer.args.p_mask_prompt = 0.0
    assert not trainer.prompt_noise_mask(full, length, seeds, 0).any()


def test_old_and_reference_logps_use_the_mask_of_their_iteration(tmp_path):
    """The reference is a frozen copy of the policy and no update has happened: at inner iteration k the policy, the
    old policy and the reference see the same prompt mask exactly when the KL and the log-ratio are exactly 0."""
    trainer = trainer_for(tmp_path, beta=0.1, num_iterations=2, p_mask_prompt=0.5)
    assert trainer.ref_model is not None and not any(p.requires_grad for p in trainer.ref_model.parameters())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer._generate_and_score_completions(generation_inputs(trainer))
    old, ref, seeds = batch["old_per_token_logps"], batch["ref_per_token_logps"], batch["mask_seeds"]
    completion_length = batch["completion_ids"].shape[1]
    assert old.shape == ref.shape == (4, 2, completion_length)
    assert torch.equal(old, ref)  # same weights, same masks
    scored = batch["completion_mask"].bool()
    assert not torch.allclose(old[:, 0][scored], old[:, 1][scored])  # the two iterations' masks differ
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    for k in range(2):
        with torch.no_grad():
            direct, _, _ = trainer.per_token_logps(trainer.model, ids, attention, completion_length, seeds, k)
        assert torch.allclose(direct[scored], old[:, k][scored], atol=1e-6)
        trainer._step = k * trainer.args.steps_per_generation  # TRL's step counter: iteration k of the buffer
        trainer._metrics["train"].clear()
        trainer.compute_loss(trainer.model, batch)
        assert trainer._metrics["train"]["kl"][-1] == pytest.approx(0.0, abs=1e-7)
        assert trainer._metrics["train"]["clip_ratio/region_mean"][-1] == 0.0
    trainer._step = 0


def test_completions_of_a_prompt_differ_and_rollouts_use_the_diffusion_settings(tmp_path):
    trainer = trainer_for(tmp_path, max_completion_length=8, steps=4, block_length=4, remasking="random",
                          temperature=0.9, kv_cache="prefix", per_device_train_batch_size=8, num_generations=4)
    calls = []
    generate = trainer.model.generate

    def spy(input_ids, attention_mask=None, **kwargs):
        calls.append((input_ids.clone(), attention_mask.clone(), kwargs))
        return generate(input_ids, attention_mask=attention_mask, **kwargs)

    trainer.model.generate = spy
    short, long = [57, 3, 59, 58], [57, 3, 4, 5, 59, 58]
    completions, logprobs = trainer._generate_single_turn([short] * 4 + [long] * 4, None, {}, 4)
    assert logprobs is None and len(completions) == 8
    assert len({tuple(c) for c in completions[:4]}) > 1 and len({tuple(c) for c in completions[4:]}) > 1
    (input_ids, attention, kwargs), = calls
    assert input_ids[0].tolist() == [EOS, EOS] + short and attention[0].tolist() == [0, 0, 1, 1, 1, 1]
    assert input_ids[4].tolist() == long and attention[4].all()
    assert {k: kwargs[k] for k in ("max_new_tokens", "steps", "block_length", "remasking", "temperature",
                                   "kv_cache", "mask_token_id")} == dict(
        max_new_tokens=8, steps=4, block_length=4, remasking="random", temperature=0.9, kv_cache="prefix",
        mask_token_id=MASK)
    assert all(len(c) <= 8 for c in completions)
    assert all(EOS not in c[:-1] for c in completions)  # cut after the first EOS (kept, as TRL does)


def test_random_remasking_makes_greedy_proposals_differ_within_a_group(tmp_path):
    trainer = trainer_for(tmp_path, temperature=0.0, remasking="random", per_device_train_batch_size=8,
                          num_generations=8)
    completions, _ = trainer._generate_single_turn([[57, 3, 4, 59, 58]] * 8, None, {}, 8)
    assert len({tuple(c) for c in completions}) > 1


def tiny_reward_model():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(5)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=EOS)
    return LlamaForSequenceClassification(config).eval()


def test_training_with_a_callable_and_a_reward_model(tmp_path):
    """TRL's semantics: each function's mean is logged, the reward is their (weighted) sum, the policy moves."""
    model = tiny_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = DiffuGRPOTrainer(model, reward_funcs=[length_reward, tiny_reward_model()],
                               args=grpo_config(tmp_path, max_steps=2, beta=0.05),
                               train_dataset=prompt_set(), processing_class=tiny_chat_tokenizer(),
                               reward_processing_classes=[None, tiny_chat_tokenizer()])
    trainer.train()
    logs = [e for e in trainer.state.log_history if "reward" in e]
    assert len(logs) == 2
    for entry in logs:
        means = [v for k, v in entry.items() if k.startswith("rewards/") and k.endswith("/mean")]
        assert len(means) == 2 and entry["reward"] == pytest.approx(sum(means), abs=1e-5)
        assert entry["rewards/length_reward/mean"] > 0
        for key in ("kl", "entropy", "clip_ratio/region_mean", "completions/mean_length", "frac_reward_zero_std"):
            assert key in entry
    assert any(not torch.equal(initial[k], v) for k, v in trainer.model.state_dict().items())


def test_lora_trains_the_adapter_and_the_reference_is_the_base(tmp_path):
    from peft import LoraConfig

    base_copy = tiny_model()
    trainer = DiffuGRPOTrainer(
        tiny_model(), reward_funcs=length_reward, args=grpo_config(tmp_path, beta=0.1, max_steps=2),
        train_dataset=prompt_set(), processing_class=tiny_chat_tokenizer(),
        peft_config=LoraConfig(r=4, lora_alpha=8, init_lora_weights=False))
    assert trainer.ref_model is None
    targets = {name.split(".lora_A")[0] for name, _ in trainer.model.named_parameters() if ".lora_A." in name}
    assert targets and all(".blocks." in name for name in targets)  # LLaDA's default targets, not the head
    frozen = {k: v.clone() for k, v in trainer.model.named_parameters() if not v.requires_grad}
    adapters = {k: v.clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
    assert adapters and all("lora_" in k for k in adapters)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)  # the base is frozen
    assert any(not torch.equal(adapters[k], after[k]) for k in adapters)  # the adapter trained
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer._generate_and_score_completions(generation_inputs(trainer))
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    scored = batch["completion_mask"].bool()
    width = batch["completion_ids"].shape[1]
    with torch.no_grad():
        base, _, _ = trainer.per_token_logps(base_copy, ids, attention, width, batch["mask_seeds"], 0)
        adapted, _, _ = trainer.per_token_logps(trainer.model, ids, attention, width, batch["mask_seeds"], 0)
    assert torch.allclose(batch["ref_per_token_logps"][:, 0][scored], base[scored], atol=1e-5)
    assert not torch.allclose(adapted[scored], base[scored], atol=1e-4)


def test_exact_match_reward():
    completions = [[{"role": "assistant", "content": " 1 2 3<|eot_id|>junk"}], "1 2 4", " 42 ", "1 2 3 4"]
    assert exact_match_reward(completions, answer=["1 2 3", "1 2 3", 42, "1 2 3"]) == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.slow
def test_two_cpu_processes_train_and_log_the_same_metrics(tmp_path):
    from pathlib import Path

    worker = Path(__file__).with_name("grpo_distributed_worker.py")
    ranks = run_two_cpu_processes(worker, str(tmp_path))
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    differing = {k for a, b in zip(ranks[0]["logs"], ranks[1]["logs"]) for k in a if a[k] != b[k]}
    assert differing <= {"step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second"}, differing
    for key, tensor in ranks[0]["state"].items():
        assert torch.equal(tensor, ranks[1]["state"][key]), key  # the processes stay in step
    assert any(not torch.equal(tensor, ranks[0]["initial"][key]) for key, tensor in ranks[0]["state"].items())
    assert len({tuple(r) for r in ranks[0]["mask_seeds"] + ranks[1]["mask_seeds"]}) == 2  # own masks per process
    single = trainer_for(tmp_path / "single", per_device_train_batch_size=8, num_generations=4, max_steps=2,
                         beta=0.05)
    single.train()
    single_keys = {k for e in single.state.log_history if "reward" in e for k in e}
    assert {k for e in ranks[0]["logs"] for k in e} == single_keys


def copy_prompts(count: int, seed: int, digits: int = 3):
    rng = random.Random(seed)
    return [[rng.randrange(3, 13) for _ in range(digits)] for _ in range(count)]


def greedy_accuracy(model, tokenizer, rows) -> float:
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": words(x)}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for x in rows]
    ids = torch.tensor(prompts)  # every prompt has the same length
    out = model.eval().generate(ids, max_new_tokens=8, steps=8, block_length=8, temperature=0.0)
    return sum(row[: len(x) + 1].tolist() == x + [EOT] for row, x in zip(out[:, ids.shape[1]:], rows)) / len(rows)


def copy_reward(completions, answer, **kwargs):
    return [float(c[-1]["content"].split(f"t{EOT}")[0].strip() == a) for c, a in zip(completions, answer)]


@pytest.mark.slow
@pytest.mark.converges
def test_diffu_grpo_raises_reward_and_accuracy_on_the_copy_task(tmp_path):
    """A briefly SFT'd tiny model (middling accuracy) learns the copy task from an exact-match reward alone."""
    from llada_cli.local_data import StopAtAccuracy
    from trainers import MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer

    tokenizer = tiny_chat_tokenizer()
    train, held_out, probe = copy_prompts(512, seed=0), copy_prompts(64, seed=1), copy_prompts(64, seed=2)
    chats = [[{"role": "user", "content": words(x)}] for x in train]
    sft = MaskedDiffusionSFTTrainer(
        tiny_model(0, d_model=64, mlp_hidden_size=128),
        MaskedDiffusionSFTConfig(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=16, max_steps=200,
                                 learning_rate=1e-2, report_to="none", use_cpu=True, logging_steps=100,
                                 save_strategy="no", disable_tqdm=True, seed=0),
        train_dataset=Dataset.from_dict({"prompt": chats, "completion": [[{"role": "assistant", "content": words(x)}]
                                                                         for x in train]}),
        processing_class=tokenizer,
        # where a fixed number of SFT steps lands differs across CPUs (accuracy rises steeply): pin it by accuracy
        callbacks=[StopAtAccuracy(lambda m: greedy_accuracy(m, tokenizer, probe), target=0.2, every=2)])
    sft.train()
    before = greedy_accuracy(sft.model, tokenizer, held_out)
    trainer = DiffuGRPOTrainer(
        sft.model, reward_funcs=copy_reward,
        args=grpo_config(tmp_path, per_device_train_batch_size=64, num_generations=8, max_steps=600,
                         learning_rate=1e-3, num_iterations=2, beta=0.02, temperature=1.0, logging_steps=10),
        train_dataset=Dataset.from_dict({"prompt": chats, "answer": [words(x) for x in train]}),
        processing_class=tokenizer)
    trainer.train()
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    quarter = len(rewards) // 4
    first, last = sum(rewards[:quarter]) / quarter, sum(rewards[-quarter:]) / quarter
    after = greedy_accuracy(trainer.model, tokenizer, held_out)
    print(f"SFT steps {sft.state.global_step}; mean reward first/last quarter {first:.3f} -> {last:.3f}; "
          f"greedy accuracy {before:.3f} -> {after:.3f}")
    assert 0.05 <= before <= 0.6  # a middling start (measured 0.14 after 44 SFT steps)
    # measured (600 steps): reward +0.32 and accuracy +0.34 with the GRPO seeds 1 and 3, the weakest of 0-3 at 300 steps
    assert last >= first + 0.15
    assert after >= before + 0.15


def test_inner_iterations_follow_trls_buffer_and_evaluation_runs(tmp_path):
    """steps_per_generation=2, μ=2: one generation batch serves 4 micro-steps, iterations 0, 0, 1, 1; evaluation
    scores with iteration 0 and logs TRL's metrics."""
    trainer = DiffuGRPOTrainer(tiny_model(), reward_funcs=length_reward,
                               args=grpo_config(tmp_path, beta=0.1, num_iterations=2, steps_per_generation=2,
                                                max_steps=6, eval_strategy="steps", eval_steps=6,
                                                per_device_eval_batch_size=4),
                               train_dataset=prompt_set(), eval_dataset=prompt_set(),
                               processing_class=tiny_chat_tokenizer())
    policy_iterations = []
    per_token_logps = trainer.per_token_logps

    def recording(model, *args, **kwargs):
        if torch.is_grad_enabled():
            policy_iterations.append(args[4])
        return per_token_logps(model, *args, **kwargs)

    trainer.per_token_logps = recording
    trainer.train()
    assert policy_iterations == [0, 0, 1, 1, 0, 0]
    evaluation = next(e for e in trainer.state.log_history if "eval_loss" in e)
    for key in ("eval_reward", "eval_kl", "eval_entropy", "eval_rewards/length_reward/mean"):
        assert key in evaluation


def test_rollouts_with_activation_checkpointing_warn_nothing_about_upstream_names(tmp_path):
    """TRL turns checkpointing off and on around each rollout under names transformers >= 5.23 deprecates: those
    FutureWarnings (one pair per rollout) are about code the user cannot change, and are silenced."""
    import warnings

    trainer = trainer_for(tmp_path, activation_checkpointing=True, max_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert not [m for m in messages if "checkpointing" in m], messages
    assert trainer.state.global_step == 1

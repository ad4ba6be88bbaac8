"""The trainers, LoRA and the likelihood code on every LLaDA family member (tiny official-format fixtures, fp32, CPU).

LLaDA-MoE trains with LLaDA's masked-diffusion objective plus the routers' load-balancing loss; LLaDA 2 with the
block-diffusion SFT objective of inclusionAI's dFactory recipe, whose loss is checked here against a computation
that never builds the [noisy; clean] layout: one block-causal forward pass per masked token.
"""

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import AutoModel

import trainers.base as trainer_base
from tests.utils import tiny_chat_tokenizer, tiny_model, word_tokenizer, words
from trainers import (
    MaskedDiffusionConfig,
    MaskedDiffusionSFTConfig,
    MaskedDiffusionSFTTrainer,
    MaskedDiffusionTrainer,
    block_diffusion_attention_mask,
    lora_target_parameters,
    resolve_mask_token_id,
    with_llada_defaults,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MOE_DIR = FIXTURES / "lladamoe-tiny-official"
LLADA2_DIR = FIXTURES / "llada2-tiny-official"
# ids of the fixtures (their READMEs): the official configs do not store the mask id
MOE_IDS = dict(mask=150, eos=147, bos=146)
LLADA2_IDS = dict(mask=155, eos=128, bos=129)  # LLaDA 2 has no bos; 129 is an unused id for the word tokenizer


def load_moe():
    return AutoModel.from_pretrained(MOE_DIR, mask_token_id=MOE_IDS["mask"])


def load_llada2():
    return AutoModel.from_pretrained(LLADA2_DIR, mask_token_id=LLADA2_IDS["mask"])


MEMBERS = {"llada_moe": (load_moe, MOE_IDS), "llada2": (load_llada2, LLADA2_IDS)}
member_params = pytest.mark.parametrize("member", ["llada_moe", "llada2"])


def chat_tokenizer(ids: dict):
    """Word tokenizer over the fixtures' 160 ids; chat roles t140 (user), t141 (assistant), end of turn t142."""
    tokenizer = word_tokenizer(vocab_size=160, mask_id=ids["mask"], eos_id=ids["eos"], bos_id=ids["bos"])
    tokenizer.chat_template = (
        "{% for m in messages %}{{ 't140' if m['role'] == 'user' else 't141' }} {{ m['content'] }} t142 "
        "{% endfor %}{% if add_generation_prompt %}t141 {% endif %}"
    )
    return tokenizer


def pairs_dataset(n: int = 8, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 6, (n, 2), generator=generator).tolist()
    prompts = [torch.randint(0, 120, (a,), generator=generator).tolist() for a, _ in lengths]
    answers = [torch.randint(0, 120, (b,), generator=generator).tolist() for _, b in lengths]
    return Dataset.from_dict({"prompt": [words(p) for p in prompts], "completion": [" " + words(a) for a in answers]})


def token_corpus(documents: int = 32) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    starts = torch.randint(0, 60, (documents,), generator=generator).tolist()
    return Dataset.from_dict({"input_ids": [list(range(s, s + 20)) for s in starts]})


def pretrain_config(tmp_path, **overrides) -> MaskedDiffusionConfig:
    values = dict(output_dir=str(tmp_path / "pretrain"), block_size=16, per_device_train_batch_size=4, max_steps=3,
                  learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no", seed=0,
                  random_length_probability=0.0, disable_tqdm=True, use_cpu=True)
    values.update(overrides)
    return MaskedDiffusionConfig(**values)


def sft_config(tmp_path, **overrides) -> MaskedDiffusionSFTConfig:
    values = dict(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=4, max_steps=3, learning_rate=1e-3,
                  report_to="none", use_cpu=True, logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0)
    values.update(overrides)
    return MaskedDiffusionSFTConfig(**values)


def changed_parameters(model, before: dict) -> set[str]:
    return {name for name, tensor in model.named_parameters() if not torch.equal(tensor.detach(), before[name])}


# --- LLaDA-MoE: masked diffusion plus the load-balancing loss ------------------------------------------------------


def test_pretraining_on_llada_moe_logs_the_load_balancing_loss_and_trains_the_routers(tmp_path):
    model = load_moe()
    before = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}
    trainer = MaskedDiffusionTrainer(model, pretrain_config(tmp_path), train_dataset=token_corpus())
    assert trainer.aux_loss_coef(model) == pytest.approx(0.01)  # the official config's router_aux_loss_coef
    trainer.train()
    steps = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(steps) == 3 and all(entry["aux_loss"] > 0 for entry in steps)
    changed = changed_parameters(model, before)
    assert "model.layers.1.mlp.gate.weight" in changed and "model.layers.1.mlp.experts.gate_up_proj" in changed


def test_the_load_balancing_loss_adds_its_coefficient_times_the_switch_loss(tmp_path):
    """The trainer's loss with coefficient c minus its loss with 0 is c times the Switch-Transformer loss, computed
    here by counting, expert by expert, the top-k choices and the mean router probability over every MoE layer."""
    model = load_moe().train()
    seen = {}
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.update(ids=kwargs["input_ids"]),
                                    with_kwargs=True)
    batch = {"input_ids": torch.tensor(token_corpus(4)["input_ids"])[:, :16], "example_id": torch.arange(4)}
    losses = {}
    for coef in (0.0, 0.5):
        trainer = MaskedDiffusionTrainer(model, pretrain_config(tmp_path, router_aux_loss_coef=coef),
                                         train_dataset=token_corpus())
        with torch.no_grad():
            losses[coef] = trainer.compute_loss(model, batch).item()
    with torch.no_grad():
        router_logits = model(input_ids=seen["ids"], output_router_logits=True).router_logits
    num_experts, top_k = model.config.num_experts, model.config.num_experts_per_tok
    logits = torch.cat(router_logits).double()
    probs, chosen = logits.softmax(-1), logits.topk(top_k, dim=-1).indices
    hand = 0.0
    for slot in range(top_k):
        for expert in range(num_experts):
            share = (chosen[:, slot] == expert).double().mean().item()
            hand += share * probs[:, expert].mean().item()
    hand *= num_experts
    assert len(router_logits) == 2  # layers 1 and 2 (layer 0 is dense)
    assert losses[0.5] - losses[0.0] == pytest.approx(0.5 * hand, rel=1e-4)


def test_sft_on_llada_moe_without_the_load_balancing_loss(tmp_path):
    model = load_moe()
    trainer = MaskedDiffusionSFTTrainer(model, sft_config(tmp_path, router_aux_loss_coef=0.0),
                                        train_dataset=pairs_dataset(), processing_class=chat_tokenizer(MOE_IDS))
    assert trainer.training_objective(model) == "masked_diffusion"
    trainer.train()
    steps = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(steps) == 3 and all("aux_loss" not in entry for entry in steps)
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in steps)


def test_a_load_balancing_loss_for_a_dense_model_is_refused(tmp_path):
    trainer = MaskedDiffusionTrainer(tiny_model(), pretrain_config(tmp_path, router_aux_loss_coef=0.1),
                                     train_dataset=token_corpus())
    with pytest.raises(ValueError, match="router_aux_loss_coef=0.1 needs a mixture-of-experts model"):
        trainer.aux_loss_coef(trainer.model)


@pytest.mark.parametrize("overrides, message", [
    (dict(objective="ar"), "objective must be one of masked_diffusion, block_diffusion"),
    (dict(diffusion_block_size=0), "diffusion_block_size must be >= 1"),
    (dict(noise_range_low=0.9, noise_range_high=0.8), "noise_range_low"),
    (dict(router_aux_loss_coef=-1.0), "router_aux_loss_coef must be >= 0"),
])
def test_bad_family_settings_are_rejected(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        sft_config(tmp_path, **overrides)


# --- block diffusion (LLaDA 2's dFactory recipe) --------------------------------------------------------------------


def test_block_diffusion_mask_follows_the_three_rules():
    length, block = 5, 2
    mask = block_diffusion_attention_mask(length, block)
    for q in range(2 * length):
        for k in range(2 * length):
            q_clean, k_clean = q >= length, k >= length
            q_block, k_block = (q % length) // block, (k % length) // block
            if not q_clean:  # a noisy token: its own noisy block, and the clean blocks before it
                expected = (not k_clean and k_block == q_block) or (k_clean and k_block < q_block)
            else:  # a clean token: clean blocks up to its own, never the noisy copy
                expected = k_clean and k_block <= q_block
            assert bool(mask[q, k]) == expected, (q, k)
    # dFactory's documentation figure (block size 2, L = 4): the first noisy row sees its block only
    assert block_diffusion_attention_mask(4, 2)[0].tolist() == [True, True, False, False, False, False, False, False]


def hand_block_diffusion_loss(model, clean: torch.Tensor, noisy: torch.Tensor, masked: torch.Tensor,
                              block: int) -> float:
    """Per masked token: the clean blocks before its block, then its noisy block, under a block-causal mask (each
    block sees itself and the blocks before it, the decoding-time layout), its CE at that position; the sum over the
    masked tokens of the batch divided by their number."""
    total, count = 0.0, 0
    for row, position in masked.nonzero().tolist():
        start = position // block * block
        end = min(start + block, clean.shape[1])
        sequence = torch.cat([clean[row, :start], noisy[row, start:end]])[None]
        blocks = torch.arange(end) // block
        causal = (blocks[None, :] <= blocks[:, None])[None, None]
        with torch.no_grad():
            logits = model(input_ids=sequence, attention_mask=causal).logits[0, position]
        total += F.cross_entropy(logits.double()[None], clean[row, position][None]).item()
        count += 1
    return total / count


def block_diffusion_case(tmp_path, model, ids: dict, block: int = 4):
    """The SFT trainer's block-diffusion loss of one fixed batch (its noise recorded) and the hand value."""
    seen = {}

    def recording_forward_process(input_ids, mask_token_id, p_mask, **kwargs):
        noisy, masked = forward_process(input_ids, mask_token_id, p_mask, **kwargs)
        seen.update(clean=input_ids, noisy=noisy, masked=masked, p_mask=p_mask, maskable=kwargs["maskable"])
        return noisy, masked

    forward_process = trainer_base.forward_process
    trainer_base.forward_process = recording_forward_process
    try:
        trainer = MaskedDiffusionSFTTrainer(
            model, sft_config(tmp_path, objective="block_diffusion", diffusion_block_size=block,
                              router_aux_loss_coef=0.0),
            train_dataset=pairs_dataset(), processing_class=chat_tokenizer(ids),
        )
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        model.train()
        with torch.no_grad():
            loss = trainer.compute_loss(model, batch).item()
    finally:
        trainer_base.forward_process = forward_process
    model.eval()
    assert seen["masked"].any() and not (seen["masked"] & ~seen["maskable"]).any()
    assert ((seen["p_mask"] >= 0.3) & (seen["p_mask"] <= 0.8)).all()  # dFactory's noise range
    assert seen["clean"].shape[1] > block  # several blocks
    return loss, hand_block_diffusion_loss(model, seen["clean"], seen["noisy"], seen["masked"], block)


def test_block_diffusion_loss_equals_the_hand_computation_on_dense_llada(tmp_path):
    """The objective needs only a model that takes 4-D masks and position ids: the dense LLaDA checks it too."""
    model = tiny_model()
    seen = {}
    forward_process = trainer_base.forward_process

    def recording_forward_process(input_ids, mask_token_id, p_mask, **kwargs):
        noisy, masked = forward_process(input_ids, mask_token_id, p_mask, **kwargs)
        seen.update(clean=input_ids, noisy=noisy, masked=masked)
        return noisy, masked

    trainer_base.forward_process = recording_forward_process
    try:
        dataset = Dataset.from_dict({"prompt": ["t1 t2 t3", "t4", "t5 t6", "t7 t8 t9 t10"],
                                     "completion": [" t11 t12 t13 t14", " t15 t16", " t17 t18 t19 t20 t21", " t22"]})
        trainer = MaskedDiffusionSFTTrainer(model, sft_config(tmp_path, objective="block_diffusion",
                                                              diffusion_block_size=4),
                                            train_dataset=dataset, processing_class=tiny_chat_tokenizer())
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        with torch.no_grad():
            loss = trainer.compute_loss(model.train(), batch).item()
    finally:
        trainer_base.forward_process = forward_process
    hand = hand_block_diffusion_loss(model.eval(), seen["clean"], seen["noisy"], seen["masked"], 4)
    assert loss == pytest.approx(hand, rel=1e-5)


@member_params
def test_block_diffusion_loss_equals_the_hand_computation(tmp_path, member):
    load, ids = MEMBERS[member]
    loss, hand = block_diffusion_case(tmp_path, load(), ids)
    assert loss == pytest.approx(hand, rel=1e-5)


def test_llada2_trains_with_block_diffusion_by_default_and_without_the_load_balancing_loss(tmp_path):
    model = load_llada2()
    trainer = MaskedDiffusionSFTTrainer(model, sft_config(tmp_path), train_dataset=pairs_dataset(),
                                        processing_class=chat_tokenizer(LLADA2_IDS))
    assert trainer.training_objective(model) == "block_diffusion" and trainer.aux_loss_coef(model) == 0.0
    before = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}
    trainer.train()
    steps = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(steps) == 3 and all("aux_loss" not in entry for entry in steps)
    assert changed_parameters(model, before)


def test_pretraining_runs_on_llada2(tmp_path):
    model = load_llada2()
    trainer = MaskedDiffusionTrainer(model, pretrain_config(tmp_path, diffusion_block_size=4),
                                     train_dataset=token_corpus())
    trainer.train()
    steps = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(steps) == 3 and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in steps)


# --- LoRA -----------------------------------------------------------------------------------------------------------

LORA_DEFAULTS = {
    # module name suffixes the defaults adapt, per layer kind
    "llada_moe": {"attention": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
                  "dense": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
                  "moe": ("shared_expert.gate_proj", "shared_expert.up_proj", "shared_expert.down_proj")},
    "llada2": {"attention": ("attention.query_key_value", "attention.dense"),
               "dense": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
               "moe": ("mlp.shared_experts.gate_proj", "mlp.shared_experts.up_proj", "mlp.shared_experts.down_proj")},
}


@member_params
def test_default_lora_targets_are_attention_and_always_active_mlps_never_the_router(member):
    from peft import get_peft_model

    load, _ = MEMBERS[member]
    model = load()
    peft_model = get_peft_model(model, with_llada_defaults(LoraConfig(r=4), model))
    wrapped = {name.removeprefix("base_model.model.").removesuffix(".lora_A.default")
               for name, _ in peft_model.named_modules() if name.endswith("lora_A.default")}
    layers = peft_model.base_model.model.config.num_hidden_layers
    expected = set()
    kinds = LORA_DEFAULTS[member]
    for i in range(layers):
        dense = i == 0  # layer 0 is dense in both fixtures
        for suffix in kinds["attention"] + (kinds["dense"] if dense else kinds["moe"]):
            expected.add(f"model.layers.{i}.{suffix}")
    assert wrapped == expected
    assert not any(".gate." in name or name.endswith(".gate") for name in wrapped)


@member_params
def test_router_targets_are_refused(member):
    load, _ = MEMBERS[member]
    with pytest.raises(ValueError, match="MoE router"):
        with_llada_defaults(LoraConfig(r=4, target_modules=["q_proj", "gate"]), load())
    with pytest.raises(ValueError, match="MoE router"):
        with_llada_defaults(LoraConfig(r=4, target_modules="all-linear"), load())


@member_params
def test_lora_sft_on_experts_trains_adapters_only_and_the_adapter_reloads(tmp_path, member):
    load, ids = MEMBERS[member]
    model = load()
    base_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    lora = LoraConfig(r=4, lora_alpha=8, target_parameters=lora_target_parameters(model))
    trainer = MaskedDiffusionSFTTrainer(model, sft_config(tmp_path, learning_rate=5e-2),
                                        train_dataset=pairs_dataset(), processing_class=chat_tokenizer(ids),
                                        peft_config=lora)
    trainer.train()
    peft_model = trainer.model.eval()
    assert isinstance(peft_model, PeftModel)
    trained = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in name for name in trained)
    assert any("experts" in name for name in trained)  # the fused expert tensors got adapters
    moved = [name for name, p in peft_model.named_parameters() if "lora_B" in name and p.abs().sum() > 0]
    assert any("experts" in name for name in moved) and any("attention" in name or "self_attn" in name
                                                              for name in moved)
    merged_view = {name.replace("base_model.model.", "", 1).replace(".base_layer", ""): tensor
                   for name, tensor in peft_model.state_dict().items() if "lora_" not in name}
    for name, tensor in base_state.items():
        if name in merged_view:
            assert torch.equal(merged_view[name], tensor), name

    ids_in = torch.tensor([[5, 6, 7, 8, ids["mask"], ids["mask"]]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids_in).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    from hub_cards import card_for_folder

    card = str(card_for_folder(tmp_path / "adapter", "me/tiny-lora"))
    assert "| target parameters (routed experts) | mlp.experts.down_proj, mlp.experts.gate_up_proj |" in card
    reloaded = PeftModel.from_pretrained(load(), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids_in).logits, expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(load()(input_ids=ids_in).logits, expected, atol=1e-4)  # the adapter matters


# --- likelihood -----------------------------------------------------------------------------------------------------


def hand_block_log_likelihood(model, prompt: list[int], answer: list[int], block: int) -> float:
    """LLaDA 2's exact block-diffusion bound, one forward pass per block and mask subset: blocks of `block` counted
    from the first prompt token; for block k with n answer tokens and every non-empty subset S of them, weight
    1 / (|S| C(n, |S|)) times sum_{i in S} log p(x_i) read from [prompt + earlier blocks, clean; block k, S masked]
    under the block-causal mask (each block sees itself and the blocks before it)."""
    sequence, total = prompt + answer, 0.0
    for start in range(len(prompt) // block * block, len(sequence), block):
        end = min(start + block, len(sequence))
        targets = range(max(start, len(prompt)), end)
        blocks = torch.arange(end) // block
        causal = (blocks[None, :] <= blocks[:, None])[None, None]
        for count in range(1, len(targets) + 1):
            for subset in itertools.combinations(targets, count):
                canvas = sequence[:start] + [LLADA2_IDS["mask"] if i in subset else sequence[i]
                                             for i in range(start, end)]
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([canvas]), attention_mask=causal).logits[0]
                log_probs = logits.double().log_softmax(-1)
                weight = 1 / (count * math.comb(len(targets), count))
                total += weight * sum(log_probs[i, sequence[i]].item() for i in subset)
    return total


@member_params
def test_exact_log_likelihood_is_the_bound_computed_by_hand(member):
    """exact=True sums over every mask subset S of the answer: 1 / (|S| C(L, |S|)) * sum_{i in S} log p(a_i | prompt,
    answer with S masked). For a 2-token answer: weights 1/2 for {0}, {1} and {0, 1}; three forward passes here.
    LLaDA 2 (block diffusion): the same per block of 2 tokens, given the clean earlier blocks (blocks [5 6] [7 8]
    [9 10] [11 13]: answer tokens 1, 2 and 2 per block)."""
    load, ids = MEMBERS[member]
    model = load().eval()
    if member == "llada2":  # block diffusion: the bound is summed block by block
        prompt, answer = [5, 6, 7], [8, 9, 10, 11, 13]
        estimate = model.log_likelihood([(prompt, answer)], exact=True, block_length=2)[0]
        assert estimate.answer_length == 5 and estimate.std_error == 0
        assert estimate.log_likelihood == pytest.approx(hand_block_log_likelihood(model, prompt, answer, 2), rel=1e-5)
        return
    prompt, answer, mask = [5, 6, 7], [8, 9], ids["mask"]
    estimate = model.log_likelihood([(prompt, answer)], exact=True)[0]
    hand = 0.0
    with torch.no_grad():
        for subset in ([0], [1], [0, 1]):
            canvas = prompt + [mask if i in subset else token for i, token in enumerate(answer)]
            log_probs = model(input_ids=torch.tensor([canvas])).logits[0].double().log_softmax(-1)
            hand += 0.5 * sum(log_probs[len(prompt) + i, answer[i]].item() for i in subset)
    assert estimate.answer_length == 2 and estimate.std_error == 0
    assert estimate.log_likelihood == pytest.approx(hand, rel=1e-5)


@member_params
def test_lm_eval_scores_an_official_folder_with_the_model_bound(tmp_path, member):
    """The lm-eval model loads the official-format folder (its mask id from the tokenizer, which the official
    configs lack) and scores a continuation with the model's own estimator; greedy = argmax of the fully masked
    continuation, checked from the logits."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    import trainers.lm_eval_llada as lm_eval_llada

    load, ids = MEMBERS[member]
    folder = MOE_DIR if member == "llada_moe" else LLADA2_DIR
    chat_tokenizer(ids).save_pretrained(tmp_path / "tokenizer")
    lm = lm_eval_llada.LLaDAEvalModel(pretrained=str(folder), tokenizer=str(tmp_path / "tokenizer"), mc_num="8",
                                      batch_size="2", device="cpu")
    assert lm.llada.config.mask_token_id == ids["mask"]
    request = Instance(request_type="loglikelihood", doc={}, arguments=("t5 t6 t7", " t8 t9"), idx=0)
    value, greedy = lm.loglikelihood([request])[0]
    model = load().eval()
    expected = model.log_likelihood([([5, 6, 7], [8, 9])], mc_num=8, batch_size=16, seed=0)[0].log_likelihood
    assert value == pytest.approx(expected, rel=1e-5)  # a log-likelihood: compared relatively
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[5, 6, 7, ids["mask"], ids["mask"]]])).logits[0, 3:]
    assert greedy == (logits.argmax(-1).tolist() == [8, 9])

    generating = lm_eval_llada.LLaDAEvalModel(pretrained=str(folder), tokenizer=str(tmp_path / "tokenizer"),
                                              device="cpu", steps=8, block_length=8)
    request = Instance(request_type="generate_until", doc={}, idx=0,
                       arguments=("t5 t6 t7", {"until": ["t142"], "max_gen_toks": 8}))
    text = generating.generate_until([request])[0]
    assert all(word.startswith("t") for word in text.split())
    assert generating.generated_tokens == 8 and generating.forward_passes == 8  # one token per step, 8 steps


def test_sft_keeps_the_official_output_router_logits_setting(tmp_path):
    """The load-balancing loss is requested per forward: the saved config keeps the official `false`."""
    model = load_moe()
    trainer = MaskedDiffusionSFTTrainer(model, sft_config(tmp_path, max_steps=1), train_dataset=pairs_dataset(),
                                        processing_class=chat_tokenizer(MOE_IDS))
    assert trainer.aux_loss_coef(model) == pytest.approx(0.01) and model.config.output_router_logits is False
    trainer.train()
    assert [entry["aux_loss"] > 0 for entry in trainer.state.log_history if "loss" in entry] == [True]
    trainer.save_model(str(tmp_path / "saved"))
    import json

    assert json.loads((tmp_path / "saved" / "config.json").read_text())["output_router_logits"] is False


# --- the mask id: the model config's, else the tokenizer's mask token ----------------------------------------------


def load_official(member: str):
    """The official-format folder as published: its config stores no mask id."""
    model = AutoModel.from_pretrained(MOE_DIR if member == "llada_moe" else LLADA2_DIR)
    assert model.config.mask_token_id is None
    return model


@member_params
@pytest.mark.parametrize("kind", ["pretrain", "sft"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_an_official_checkpoint_trains_with_the_tokenizers_mask_token(tmp_path, monkeypatch, member, kind, lora):
    """`MaskedDiffusionTrainer(model, processing_class=tokenizer)` on a config without a mask id: every batch is
    corrupted with the tokenizer's mask token, the weights train, and the config keeps the id (saved with it)."""
    _, ids = MEMBERS[member]
    model, tokenizer = load_official(member), chat_tokenizer(ids)
    used = []
    forward_process = trainer_base.forward_process

    def recording_forward_process(input_ids, mask_token_id, p_mask, **kwargs):
        used.append(mask_token_id)
        return forward_process(input_ids, mask_token_id, p_mask, **kwargs)

    monkeypatch.setattr(trainer_base, "forward_process", recording_forward_process)
    adapters = {"peft_config": LoraConfig(r=4, lora_alpha=8)} if lora else {}
    if kind == "pretrain":
        trainer = MaskedDiffusionTrainer(model, pretrain_config(tmp_path, max_steps=2, diffusion_block_size=4),
                                         train_dataset=token_corpus(), processing_class=tokenizer, **adapters)
    else:
        trainer = MaskedDiffusionSFTTrainer(model, sft_config(tmp_path, max_steps=2), train_dataset=pairs_dataset(),
                                            processing_class=tokenizer, **adapters)
    trainable = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and (not lora or all("lora_" in name for name in trainable))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert [name for name, p in trainer.model.named_parameters()
            if name in trainable and not torch.equal(p.detach(), trainable[name])]
    assert used and set(used) == {ids["mask"]}
    assert model.config.mask_token_id == ids["mask"]
    if not lora:
        trainer.save_model(str(tmp_path / "saved"))
        import json

        assert json.loads((tmp_path / "saved" / "config.json").read_text())["mask_token_id"] == ids["mask"]


@pytest.mark.parametrize("kind", ["pretrain", "sft"])
def test_without_a_mask_id_in_the_config_or_the_tokenizer_the_error_names_both(tmp_path, kind):
    model, tokenizer = load_official("llada2"), chat_tokenizer(LLADA2_IDS)
    tokenizer.mask_token = None
    both = r"the model config has no mask_token_id and the tokenizer \(processing_class\) has no mask_token"
    with pytest.raises(ValueError, match=both):
        if kind == "pretrain":
            MaskedDiffusionTrainer(model, pretrain_config(tmp_path), train_dataset=token_corpus(),
                                   processing_class=tokenizer)
        else:
            MaskedDiffusionSFTTrainer(model, sft_config(tmp_path), train_dataset=pairs_dataset(),
                                      processing_class=tokenizer)
    with pytest.raises(ValueError, match=r"no mask_token_id and no tokenizer was given \(processing_class\)"):
        MaskedDiffusionTrainer(model, pretrain_config(tmp_path), train_dataset=token_corpus())
    assert model.config.mask_token_id is None


def test_the_config_mask_id_comes_first_and_a_tokenizer_id_outside_the_model_is_refused():
    model = load_official("llada_moe")
    model.config.mask_token_id = 151
    assert resolve_mask_token_id(model, chat_tokenizer(MOE_IDS)) == 151  # the tokenizer's 150 is not used
    model.config.mask_token_id = None
    outside = word_tokenizer(vocab_size=200, mask_id=170, eos_id=MOE_IDS["eos"], bos_id=MOE_IDS["bos"])
    with pytest.raises(ValueError, match=r"mask_token 't170' has id 170, outside the model's 160 embeddings"):
        resolve_mask_token_id(model, outside)
    assert model.config.mask_token_id is None

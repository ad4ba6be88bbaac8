"""The trainers as a Python user calls them: pre-training, SFT, LoRA, VRPO and diffu-GRPO with bad settings, bad
data, bad tokenizers, bad reward functions and bad resume paths. Each case builds a config or a trainer on a tiny
model (tests/utils.py; the official-format LLaDA-MoE fixture for the MoE rows) or trains one or two tiny steps."""

import math
import tempfile
from pathlib import Path

from bad_inputs.harness import Case

_CACHE = {}
ROOT = Path(__file__).resolve().parents[2]
USER, REPLY = {"role": "user", "content": "t1"}, {"role": "assistant", "content": "t2"}


def tmp() -> str:
    if "tmp" not in _CACHE:
        _CACHE["tmp"] = tempfile.mkdtemp(prefix="llada-sweep-train-")
    return _CACHE["tmp"]


def model():
    from tests.utils import tiny_model

    return tiny_model()


def tokenizer(chat: bool = True):
    from tests.utils import tiny_chat_tokenizer

    tok = tiny_chat_tokenizer()
    if not chat:
        tok.chat_template = None
    return tok


def common(name: str, **overrides) -> dict:
    values = dict(output_dir=f"{tmp()}/{name}", per_device_train_batch_size=2, max_steps=1, report_to="none",
                  use_cpu=True, save_strategy="no", disable_tqdm=True)
    return {**values, **overrides}


def pre_cfg(**overrides):
    from trainers import MaskedDiffusionConfig

    return MaskedDiffusionConfig(**common("pre", **{"block_size": 8, **overrides}))


def sft_cfg(**overrides):
    from trainers import MaskedDiffusionSFTConfig

    return MaskedDiffusionSFTConfig(**common("sft", **overrides))


def vrpo_cfg(**overrides):
    from trainers import VRPOConfig

    return VRPOConfig(**common("vrpo", **{"elbo_samples": 2, **overrides}))


def grpo_cfg(**overrides):
    from trainers import DiffuGRPOConfig

    values = dict(num_generations=2, max_completion_length=4)
    return DiffuGRPOConfig(**common("grpo", **{**values, **overrides}))


def ds(rows: dict):
    from datasets import Dataset

    return Dataset.from_dict(rows)


def pre(rows: dict, tok=None, **overrides):
    from trainers import MaskedDiffusionTrainer

    return MaskedDiffusionTrainer(model(), pre_cfg(**overrides), train_dataset=ds(rows),
                                  processing_class=tok or tokenizer())


def sft(rows: dict, tok=None, peft_config=None, the_model=None, **overrides):
    from trainers import MaskedDiffusionSFTTrainer

    return MaskedDiffusionSFTTrainer(the_model or model(), sft_cfg(**overrides), train_dataset=ds(rows),
                                     processing_class=tok or tokenizer(), peft_config=peft_config)


PAIRS = {"prompt": ["t1 t2", "t3", "t4 t5"], "chosen": [" t8 t9", " t11", " t12"],
         "rejected": [" t9 t8", " t10", " t13"]}
SFT_ROWS = {"prompt": ["t1 t2", "t3", "t4 t5", "t6"], "completion": [" t8 t9", " t11", " t12", " t13"]}


def vrpo(rows: dict, **overrides):
    from trainers import VRPOTrainer

    return VRPOTrainer(model(), args=vrpo_cfg(**overrides), train_dataset=ds(rows), processing_class=tokenizer())


def grpo(reward, prompts=("t1 t2", "t3"), tok=None, the_model=None, **overrides):
    from trainers import DiffuGRPOTrainer

    return DiffuGRPOTrainer(the_model or model(), reward_funcs=reward, args=grpo_cfg(**overrides),
                            train_dataset=ds({"prompt": list(prompts)}), processing_class=tok or tokenizer())


def grpo_train(reward, **overrides):
    trainer = grpo(reward, **overrides)
    trainer.train()
    return trainer


def no_args():
    return [1.0]


def too_few(completions, **kwargs):
    return [1.0]


def all_none(completions, **kwargs):
    return [None for _ in completions]


def nan_reward(completions, **kwargs):
    return [math.nan for _ in completions]


def text_reward(completions, **kwargs):
    return ["good" for _ in completions]


def length_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


def a_file() -> str:
    path = Path(tmp()) / "a_file.txt"
    path.write_text("not a checkpoint")
    return str(path)


def moe(**kwargs):
    from transformers import AutoModel

    return AutoModel.from_pretrained(ROOT / "tests/fixtures/lladamoe-tiny-official", **{"mask_token_id": 150, **kwargs})


def llada2():
    from transformers import AutoModel

    return AutoModel.from_pretrained(ROOT / "tests/fixtures/llada2-tiny-official", mask_token_id=155)


def moe_tokenizer(mask_id=150, eos_id=147, bos_id=146, mask: bool = True):
    """Word tokenizer over the fixtures' 160 ids (their READMEs: LLaDA-MoE mask 150, eos 147; LLaDA 2 mask 155,
    eos 128)."""
    from tests.utils import word_tokenizer

    tok = word_tokenizer(vocab_size=160, mask_id=mask_id, eos_id=eos_id, bos_id=bos_id)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    if not mask:
        tok.mask_token = None
    return tok


def llada2_tokenizer():
    return moe_tokenizer(mask_id=155, eos_id=128, bos_id=129)


def moe_without_mask_id():
    """The official LLaDA-MoE config stores no mask id; with a tokenizer that has no mask token either."""
    return sft({"prompt": ["t1 t2", "t3"], "completion": [" t4", " t5"]}, tok=moe_tokenizer(mask=False),
               the_model=moe(mask_token_id=None))


def sft_loss_is_finite(trainer) -> bool:
    trainer.train()
    return math.isfinite(trainer.state.log_history[-1]["train_loss"])


def lora(**kwargs):
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, **kwargs)


def trains_lora_only(trainer) -> bool:
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    return bool(trainable) and all("lora_" in name for name in trainable)


def cases() -> list[Case]:
    C = lambda *a, **k: Case("train", *a, **k)  # noqa: E731
    return [
        # --- config values: the config classes refuse them at construction ------------------------------------------
        C("pretrain mask_eps=0", lambda: pre_cfg(mask_eps=0.0), says=r"mask_eps.*\b0\.0"),
        C("sft mask_eps=NaN", lambda: sft_cfg(mask_eps=math.nan), says=r"mask_eps.*nan"),
        C("vrpo mask_eps=1.5", lambda: vrpo_cfg(mask_eps=1.5), says=r"mask_eps.*1\.5"),
        C("pretrain block_size=0", lambda: pre_cfg(block_size=0), says=r"block_size.*\b0\b"),
        C("pretrain random_length_probability=NaN", lambda: pre_cfg(random_length_probability=math.nan),
          says=r"random_length_probability.*nan"),
        C("sft random_length_probability=1.5", lambda: sft_cfg(random_length_probability=1.5),
          says=r"random_length_probability.*1\.5"),
        C("sft diffusion_block_size=0", lambda: sft_cfg(diffusion_block_size=0), says=r"diffusion_block_size.*\b0\b"),
        C("sft noise_range low > high", lambda: sft_cfg(noise_range_low=0.9, noise_range_high=0.3),
          says=r"noise_range_low.*0\.9.*noise_range_high.*0\.3"),
        C("sft objective misspelt", lambda: sft_cfg(objective="blockdiffusion"), says=r"objective.*blockdiffusion"),
        C("pretrain eval_likelihood_mc_num=-1", lambda: pre_cfg(eval_likelihood_mc_num=-1),
          says=r"eval_likelihood_mc_num.*-1"),
        C("sft router_aux_loss_coef<0", lambda: sft_cfg(router_aux_loss_coef=-0.1),
          says=r"router_aux_loss_coef.*-0\.1"),
        C("sft packing=True", lambda: sft_cfg(packing=True), says=r"packing"),
        C("vrpo beta=0 (issue)", lambda: vrpo_cfg(beta=0.0), says=r"beta.*got 0\.0"),
        C("vrpo beta=-1 (issue)", lambda: vrpo_cfg(beta=-1.0), says=r"beta.*got -1\.0"),
        C("vrpo beta as a string", lambda: vrpo_cfg(beta="0.1"), says=r"beta.*'0\.1'"),
        C("vrpo elbo_samples=0", lambda: vrpo_cfg(elbo_samples=0), says=r"elbo_samples.*\b0\b"),
        C("vrpo loss_type unknown", lambda: vrpo_cfg(loss_type="hinge"), says=r"loss_type.*hinge"),
        C("grpo num_generations=1", lambda: grpo_cfg(num_generations=1), says=r"num_generations.*\b1\b"),
        C("grpo num_generations does not divide the batch", lambda: grpo_cfg(num_generations=3),
          says=r"num_generations.*\b3\b"),
        C("grpo max_completion_length=0", lambda: grpo_cfg(max_completion_length=0),
          says=r"max_completion_length.*\b0\b"),
        C("grpo p_mask_prompt=1", lambda: grpo_cfg(p_mask_prompt=1.0), says=r"p_mask_prompt.*1\.0"),
        C("grpo block_length not dividing", lambda: grpo_cfg(max_completion_length=8, block_length=3),
          says=r"block_length.*\b3\b"),
        C("grpo steps=0", lambda: grpo_cfg(steps=0), says=r"steps.*\b0\b"),
        C("grpo temperature=NaN", lambda: grpo_cfg(temperature=math.nan), says=r"temperature.*nan"),
        C("grpo remasking misspelt", lambda: grpo_cfg(remasking="confidence"), says=r"remasking.*confidence"),
        C("grpo generation_kwargs misspelt", lambda: grpo_cfg(generation_kwargs={"treshold": 0.9}),
          says=r"treshold"),
        C("grpo temperature=0 greedy groups", lambda: grpo_cfg(temperature=0.0), says=r"temperature=0"),
        # --- datasets -----------------------------------------------------------------------------------------------
        C("sft wrong columns", lambda: sft({"question": ["t1"], "answer": ["t2"]}), says=r"question.*answer"),
        C("sft empty dataset", lambda: sft({"prompt": [], "completion": []}), says=r"(?i)empty|no rows|0 rows"),
        C("sft null completion (issue)", lambda: sft({"prompt": ["t1", "t2"], "completion": [" t3", None]}),
          says=r"Row 1 .*null 'completion'"),
        C("sft conversation without an assistant turn", lambda: sft({"messages": [[USER, REPLY], [USER]]}),
          says=r"(?i)row 1.*assistant"),
        C("sft messages without a chat template", lambda: sft({"messages": [[USER, REPLY]] * 2},
                                                              tok=tokenizer(chat=False)),
          says=r"(?i)chat.?template"),
        C("sft null content in messages", lambda: sft({"messages": [[USER, REPLY], [USER, {
            "role": "assistant", "content": None}]]}), says=r"Row 1 .*null or missing 'content'"),
        C("pretrain wrong text column", lambda: pre({"txt": ["t1 t2 t3"] * 8}), says=r"dataset_text_field"),
        C("pretrain null text", lambda: pre({"text": ["t1 t2 t3 t4 t5 t6 t7 t8 t9"] * 3 + [None]}),
          says=r"(?i)row 3.*null 'text'"),
        C("pretrain only empty strings", lambda: pre({"text": ["", "", ""]}), says=r"(?i)block_size|tokens"),
        C("vrpo missing rejected column", lambda: vrpo({"prompt": ["t1"], "chosen": [" t2"]}), says=r"rejected"),
        C("vrpo chosen == rejected everywhere (issue)", lambda: vrpo({**PAIRS, "rejected": PAIRS["chosen"]}),
          says=r"chosen identical to rejected"),
        C("vrpo null rejected (issue)", lambda: vrpo({**PAIRS, "rejected": [" t1", None, " t2"]}),
          says=r"Row 1 .*null 'rejected'"),
        C("grpo null prompt (issue)", lambda: grpo(length_reward, prompts=["t1", None]),
          says=r"Row 1 .*null 'prompt'"),
        C("grpo conversational prompts without a chat template",
          lambda: grpo(length_reward, prompts=[[USER], [USER]], tok=tokenizer(chat=False)),
          says=r"(?i)chat.?template"),
        # --- reward functions ---------------------------------------------------------------------------------------
        C("grpo reward of the wrong arity", lambda: grpo_train(no_args), says=r"no_args"),
        C("grpo reward returns too few", lambda: grpo_train(too_few),
          says=r"too_few.*returned 1 rewards, but 2 were expected"),
        C("grpo reward returns all None", lambda: grpo_train(all_none), expect="warn",
          says=r"(?i)all_none|reward functions? returned None"),
        C("grpo reward returns NaN", lambda: grpo_train(nan_reward), says=r"nan_reward.*(?i:nan)"),
        C("grpo reward returns strings", lambda: grpo_train(text_reward), says=r"text_reward"),
        C("grpo reward not callable", lambda: grpo(42), says=r"reward_funcs.*42"),
        # --- LoRA ---------------------------------------------------------------------------------------------------
        C("sft LoRA target misspelt", lambda: sft(SFT_ROWS, peft_config=lora(target_modules=["q_projj"])),
          says=r"q_projj"),
        C("sft LoRA on LLaDA-MoE trains only adapters", lambda: sft(
            {"prompt": ["t1 t2", "t3"], "completion": [" t4", " t5"]}, tok=moe_tokenizer(), the_model=moe(),
            peft_config=lora()), expect="ok", check=trains_lora_only),
        C("sft LoRA on the LLaDA-MoE router", lambda: sft(
            {"prompt": ["t1 t2", "t3"], "completion": [" t4", " t5"]}, tok=moe_tokenizer(), the_model=moe(),
            peft_config=lora(target_modules=["q_proj", "gate"])), says=r"LoRA target.*'gate'.*router"),
        C("sft LoRA on the LLaDA 2 router", lambda: sft(
            {"prompt": ["t1 t2", "t3"], "completion": [" t4", " t5"]}, tok=llada2_tokenizer(), the_model=llada2(),
            peft_config=lora(target_modules="all-linear")), says=r"LoRA target.*all-linear.*router"),
        C("sft LLaDA-MoE with no mask id anywhere", moe_without_mask_id, says=r"mask_token_id"),
        C("sft LLaDA 2 objective misspelt", lambda: sft(
            {"prompt": ["t1 t2", "t3"], "completion": [" t4", " t5"]}, tok=llada2_tokenizer(), the_model=llada2(),
            objective="block-diffusion"), says=r"objective.*block-diffusion"),
        C("sft LLaDA 2 one block-diffusion step", lambda: sft(
            {"prompt": ["t1 t2", "t3"], "completion": [" t4", " t5"]}, tok=llada2_tokenizer(), the_model=llada2(),
            diffusion_block_size=4), expect="ok", check=sft_loss_is_finite),
        C("grpo LLaDA 2 rollouts with remasking=random", lambda: grpo(
            length_reward, tok=llada2_tokenizer(), the_model=llada2(), remasking="random"),
          says=r"LLaDA2GenerationConfig.*remasking.*'random'"),
        C("grpo LLaDA 2 rollouts with factor (LLaDA 2 has none)", lambda: grpo(
            length_reward, tok=llada2_tokenizer(), the_model=llada2(), generation_kwargs={"factor": 1.0}),
          says=r"LLaDA2GenerationConfig.*factor=1\.0.*does not take `factor`"),
        C("grpo LLaDA 2 rollouts with threshold", lambda: grpo(
            length_reward, tok=llada2_tokenizer(), the_model=llada2(), generation_kwargs={"threshold": 0.8}),
          expect="ok", check=lambda trainer: trainer.diffusion_generation_kwargs()["threshold"] == 0.8),
        # --- resume -------------------------------------------------------------------------------------------------
        C("resume_from_checkpoint missing", lambda: sft(SFT_ROWS).train(
            resume_from_checkpoint=f"{tmp()}/no-such-checkpoint"),
          says=r"resume_from_checkpoint=.*no-such-checkpoint' does not exist"),
        C("resume_from_checkpoint a file", lambda: sft(SFT_ROWS).train(resume_from_checkpoint=a_file()),
          says=r"resume_from_checkpoint=.*a_file\.txt' is a file, not a checkpoint folder"),
        # --- valid inputs must work ---------------------------------------------------------------------------------
        C("vrpo beta=0.25 is used", lambda: vrpo_cfg(beta=0.25), expect="ok", check=lambda c: c.beta == 0.25),
        C("sft one step changes the weights", lambda: _sft_step_changes(), expect="ok", check=bool),
    ]


def _sft_step_changes() -> bool:
    trainer = sft(SFT_ROWS, learning_rate=1e-2, max_steps=3, seed=1)  # a step may mask nothing; three do not
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    return any(not (before[k] == after[k]).all() for k in before) and math.isfinite(
        trainer.state.log_history[-1].get("train_loss", math.nan))

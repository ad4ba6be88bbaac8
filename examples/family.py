"""Every LLaDA family member, natively (no trust_remote_code): load the official checkpoint folder, generate, score
a continuation with the likelihood bound, fine-tune with LoRA for a few steps (the member's own objective), save and
reload the adapter. By default on each member's tiny official-format test checkpoint: no download, seconds on a CPU.

    python examples/family.py --member llada       # LLaDA 8B's architecture (dense)
    python examples/family.py --member llada-moe   # LLaDA-MoE-7B-A1B's (masked diffusion + load-balancing loss)
    python examples/family.py --member llada2      # LLaDA 2.0's (block diffusion, dFactory's SFT recipe)
    python examples/family.py --member llada2.1    # LLaDA 2.1's: the same model, generating with token editing
    # a real checkpoint (its folder or Hub id; its tokenizer is the model's own):
    python examples/family.py --member llada2 --model inclusionAI/LLaDA2.0-mini --dtype bfloat16
"""

import argparse
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerFast

import modeling_llada  # noqa: F401  (registers the family with the Auto classes)
from trainers import MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer, lora_target_parameters

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
# the tiny checkpoints and their special ids (the official LLaDA-MoE / LLaDA 2 configs do not store the mask id)
MEMBERS = {
    "llada": dict(folder=FIXTURES / "llada-tiny-official", vocab=320, mask=300, eos=301),
    "llada-moe": dict(folder=FIXTURES / "lladamoe-tiny-official", vocab=160, mask=150, eos=147),
    "llada2": dict(folder=FIXTURES / "llada2-tiny-official", vocab=160, mask=155, eos=128),
    # LLaDA 2.1 has LLaDA 2.0's architecture and checkpoint format; what differs is the sampler (token editing)
    "llada2.1": dict(folder=FIXTURES / "llada2-tiny-official", vocab=160, mask=155, eos=128,
                     generate=dict(threshold=0.5, editing_threshold=0.6, max_post_steps=4)),
}


def word_tokenizer(vocab: int, mask: int, eos: int) -> PreTrainedTokenizerFast:
    """For the tiny checkpoints, which ship no tokenizer: words "w0".."w{vocab-1}", a chat template of three ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=f"w{eos}", pad_token=f"w{eos}",
                                        mask_token=f"w{mask}")
    user, assistant, end = 100, 101, 102
    tokenizer.chat_template = (
        f"{{% for m in messages %}}{{{{ 'w{user}' if m['role'] == 'user' else 'w{assistant}' }}}} "
        f"{{{{ m['content'] }}}} w{end} {{% endfor %}}{{% if add_generation_prompt %}}w{assistant} {{% endif %}}"
    )
    return tokenizer


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", choices=sorted(MEMBERS), default="llada-moe")
    parser.add_argument("--model", help="official checkpoint folder or Hub id; default: the member's tiny one")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--steps", type=int, default=3, help="LoRA fine-tuning steps")
    parser.add_argument("--output_dir", default=None, help="where the adapter goes; default: a temporary folder")
    args, _ = parser.parse_known_args(argv)  # tolerates the trainer flags CI appends (--report_to none, ...)
    member = MEMBERS[args.member]
    source = args.model or member["folder"]

    if args.model:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source, dtype=getattr(torch, args.dtype))
    else:
        tokenizer = word_tokenizer(member["vocab"], member["mask"], member["eos"])
        model = AutoModel.from_pretrained(source, dtype=getattr(torch, args.dtype), mask_token_id=member["mask"])
    print(f"{args.member}: {type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} parameters")

    # 1. generation: the member's own sampler behind one `generate` (prompt + answer come back)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "w5 w6 w7"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
    #    (LLaDA 2.1: already written tokens are rewritten when the model is confident of another one)
    out = model.eval().generate(prompt, max_new_tokens=16, steps=16, block_length=8, **member.get("generate", {}))
    print("generated:", tokenizer.decode(out[0, prompt.shape[1]:]))

    # 2. the likelihood bound of a continuation (what lm-eval's loglikelihood uses)
    estimate = model.log_likelihood([(prompt[0].tolist(), [8, 9, 10])], mc_num=16, seed=0)[0]
    print(f"log p(answer | prompt) >= {estimate.log_likelihood:.3f} (standard error {estimate.std_error:.3f})")

    # 3. LoRA SFT: the trainers pick the member's objective (block diffusion for LLaDA 2) and LoRA targets
    #    (attention and always-active MLPs; the routed experts here too, through PEFT's target_parameters)
    data = Dataset.from_dict({"prompt": [f"w{i} w{i + 1}" for i in range(16)],
                              "completion": [f" w{i + 2} w{i + 3}" for i in range(16)]})
    output = Path(args.output_dir or tempfile.mkdtemp(prefix="llada-family-"))
    trainer = MaskedDiffusionSFTTrainer(
        model.train(),
        MaskedDiffusionSFTConfig(output_dir=str(output), max_steps=args.steps, per_device_train_batch_size=4,
                                 learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none",
                                 disable_tqdm=True, bf16=args.dtype == "bfloat16"),
        train_dataset=data, processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_parameters=lora_target_parameters(model)),
    )
    trainer.train()
    losses = [round(entry["loss"], 4) for entry in trainer.state.log_history if "loss" in entry]
    print(f"objective: {trainer.training_objective(model)}; losses: {losses}")
    trainer.model.save_pretrained(output / "adapter")

    # 4. the adapter reloads onto a fresh copy of the base model
    base = AutoModel.from_pretrained(source, dtype=getattr(torch, args.dtype),
                                     **({} if args.model else {"mask_token_id": member["mask"]}))
    reloaded = PeftModel.from_pretrained(base, output / "adapter").eval()
    with torch.no_grad():
        same = torch.allclose(reloaded(input_ids=prompt).logits, trainer.model.eval()(input_ids=prompt).logits,
                              atol=1e-4)
    print(f"adapter saved to {output / 'adapter'} and reloaded: {'same logits' if same else 'DIFFERENT logits'}")
    if not same:
        raise SystemExit("the reloaded adapter does not reproduce the trained model")
    return {"losses": losses, "objective": trainer.training_objective(model), "adapter": str(output / "adapter")}


if __name__ == "__main__":
    main()

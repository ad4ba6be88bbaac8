"""What the paper-claim experiments share: an equal-shape LLaDA / Llama pair, one set of optimiser settings for both,
the autoregressive side of training, and the two per-token negative log-likelihoods that are compared.

The LLaDA side is this project's model and trainers; the autoregressive side is transformers' stock
`LlamaForCausalLM` trained with the stock `Trainer` / TRL `SFTTrainer`. Both get the same width, depth, heads,
vocabulary, data order, optimiser, schedule and number of optimiser steps; only the objective differs.
"""

import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from modeling_llada import LLaDAConfig, LLaDAModelLM


def model_pair(tokenizer, d_model: int, n_layers: int, n_heads: int, mlp_hidden_size: int, max_length: int,
               seed: int) -> tuple[LLaDAModelLM, LlamaForCausalLM]:
    """A fresh LLaDA and a fresh Llama of the same shape (untied embeddings and head in both), each initialised
    from `seed`. Raises if their parameter counts differ by more than 5%."""
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    llada = LLaDAModelLM(LLaDAConfig(
        d_model=d_model, n_layers=n_layers, n_heads=n_heads, mlp_hidden_size=mlp_hidden_size, vocab_size=vocab,
        embedding_size=vocab, max_sequence_length=max_length, mask_token_id=tokenizer.mask_token_id,
        rope_theta=10000.0, weight_tying=False, **ids,
    ))
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(LlamaConfig(
        hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
        num_key_value_heads=n_heads, intermediate_size=mlp_hidden_size, vocab_size=vocab,
        max_position_embeddings=max_length, rms_norm_eps=llada.config.rms_norm_eps, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **ids,
    ))
    counts = count(llada), count(llama)
    if abs(counts[0] - counts[1]) > 0.05 * max(counts):
        raise AssertionError(f"parameter counts differ by more than 5%: LLaDA {counts[0]:,}, Llama {counts[1]:,}")
    return llada, llama


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def describe_pair(llada, llama) -> str:
    a, b = count(llada), count(llama)
    return (f"parameters: LLaDA {a:,} | autoregressive Llama {b:,} | difference {abs(a - b) / max(a, b):.2%} "
            f"(d_model {llada.config.d_model}, {llada.config.n_layers} layers, {llada.config.n_heads} heads, "
            f"MLP {llada.config.mlp_hidden_size}, vocabulary {llada.config.vocab_size})")


def optimiser_settings(steps: int, batch_size: int, learning_rate: float, seed: int, warmup_steps: int) -> dict:
    """The TrainingArguments fields both models share (AdamW, cosine schedule, fp32, same batches in the same
    order: the sampler is seeded by `seed` and both datasets have the same rows)."""
    return dict(
        max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=learning_rate,
        lr_scheduler_type="cosine", warmup_steps=warmup_steps, weight_decay=0.0, adam_beta2=0.95,
        max_grad_norm=1.0, seed=seed, data_seed=seed, use_cpu=not torch.cuda.is_available(), bf16=False,
        report_to="none", save_strategy="no", logging_steps=max(1, steps // 20), disable_tqdm=True,
        dataloader_num_workers=0,
    )


def collate_ar_blocks(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Equal-length token blocks -> next-token prediction batches (the model shifts the labels itself)."""
    ids = torch.tensor([example["input_ids"] for example in examples], dtype=torch.long)
    return {"input_ids": ids, "labels": ids.clone()}


def pretrain_ar(model, blocks, output_dir: str, callbacks=(), **settings) -> Trainer:
    """Next-token pre-training of the Llama baseline on `blocks` (a dataset of equal-length `input_ids`)."""
    args = TrainingArguments(output_dir=output_dir, **settings)
    trainer = Trainer(model=model, args=args, train_dataset=blocks, data_collator=collate_ar_blocks,
                      callbacks=list(callbacks))
    trainer.train()
    return trainer


@torch.no_grad()
def ar_nll_per_token(model, blocks: list[list[int]], batch_size: int = 64) -> float:
    """Exact -log p(x_2..x_n | x_1) per token of an autoregressive model, averaged over all scored tokens."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        ids = torch.tensor(blocks[start : start + batch_size], dtype=torch.long, device=model.device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
        tokens += ids[:, 1:].numel()
    model.train(was_training)
    return total / tokens


@torch.no_grad()
def llada_nll_bound_per_token(model, blocks: list[list[int]], mc_num: int, seed: int) -> float:
    """LLaDA's upper bound on -log p(x_2..x_n | x_1) per token (REFERENCE.md section 6), from `model.log_likelihood`:
    the same quantity the autoregressive model scores exactly, so the two numbers are comparable."""
    was_training = model.training
    model.eval()
    estimates = model.log_likelihood([(block[:1], block[1:]) for block in blocks], mc_num=mc_num, seed=seed)
    model.train(was_training)
    return -sum(e.log_likelihood for e in estimates) / sum(e.answer_length for e in estimates)

"""The `llada-hf` subcommands and the example scripts share these entry points: argument parsing (TRL-style flags or
`--config file.yaml`) plus the library calls, nothing else."""

import sys
from dataclasses import dataclass, field

import torch
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from .loading import load_dataset_arg, load_model_and_tokenizer, load_tokenizer
from .local_data import addition_task, python_docs_corpus


@dataclass
class PretrainScriptArguments(ScriptArguments):
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id or local data files (json/jsonl/csv/parquet/txt); default: the Python docs corpus."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer; default: the model's, or a new BPE for a fresh preset model."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code files shipped with the model."})


@dataclass
class SFTScriptArguments(ScriptArguments):
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id or local data files (json/jsonl/csv/parquet); default: a local addition task."},
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer; default: the model's."})


def pretrain(argv: list[str] | None = None) -> None:
    """Masked-diffusion pre-training (see examples/pretrain.py for examples)."""
    from . import MaskedDiffusionConfig, MaskedDiffusionTrainer

    parser = TrlParser((PretrainScriptArguments, MaskedDiffusionConfig, ModelConfig), prog="llada-hf pretrain")
    parser.set_defaults(block_size=128, per_device_train_batch_size=16, max_steps=200, learning_rate=1e-3,
                        warmup_steps=20, logging_steps=20, save_steps=100, report_to="none")
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    if script_args.dataset_name is None:
        dataset = python_docs_corpus()
    else:
        dataset = load_dataset_arg(script_args.dataset_name, script_args.dataset_config,
                                   script_args.dataset_train_split)
    model, tokenizer = load_model_and_tokenizer(
        model_args.model_name_or_path or "llada-tiny", script_args.tokenizer_name_or_path,
        lambda: dataset[training_args.dataset_text_field], model_args.dtype, model_args.attn_implementation,
        script_args.trust_remote_code, training_args.seed,
    )
    trainer = MaskedDiffusionTrainer(model, training_args, train_dataset=dataset, processing_class=tokenizer,
                                     peft_config=get_peft_config(model_args))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)  # weights, code files, tokenizer, card


def sft(argv: list[str] | None = None) -> None:
    """Response-only masked-diffusion SFT, full or LoRA (see examples/sft.py for examples)."""
    from . import MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer

    parser = TrlParser((SFTScriptArguments, MaskedDiffusionSFTConfig, ModelConfig), prog="llada-hf sft")
    parser.set_defaults(per_device_train_batch_size=16, max_steps=200, learning_rate=1e-3, warmup_steps=20,
                        logging_steps=20, save_steps=100, max_length=256, report_to="none")
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    if script_args.dataset_name is None:
        dataset = addition_task(2000, seed=training_args.seed).remove_columns("answer")
    else:
        dataset = load_dataset_arg(script_args.dataset_name, script_args.dataset_config,
                                   script_args.dataset_train_split)
    model, tokenizer = load_model_and_tokenizer(
        model_args.model_name_or_path or "llada-tiny", script_args.tokenizer_name_or_path,
        lambda: python_docs_corpus()["text"], model_args.dtype, model_args.attn_implementation,
        training_args.trust_remote_code, training_args.seed,
    )
    trainer = MaskedDiffusionSFTTrainer(model, training_args, train_dataset=dataset, processing_class=tokenizer,
                                        peft_config=get_peft_config(model_args))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)  # weights, code files, tokenizer, card


def _generation_parser(prog: str, description: str):
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("model", help="a LLaDA checkpoint: Hub id or folder")
    parser.add_argument("--trust_remote_code", action="store_true")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16, float16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--live", action=argparse.BooleanOptionalAction, default=True,
                        help="show the denoising live in the terminal (default on)")
    for name, kind in (("max_new_tokens", int), ("steps", int), ("block_length", int), ("temperature", float),
                       ("top_k", int), ("top_p", float), ("cfg_scale", float), ("remasking", str),
                       ("threshold", float), ("factor", float), ("kv_cache", str)):
        parser.add_argument(f"--{name}", type=kind, default=None)
    for flag in ("logits_eos_inf", "confidence_eos_eot_inf", "early_exit"):
        parser.add_argument(f"--{flag}", action="store_true", default=None)
    return parser


_GENERATION_FIELDS = ("max_new_tokens", "steps", "block_length", "temperature", "top_k", "top_p", "cfg_scale",
                      "remasking", "threshold", "factor", "kv_cache", "logits_eos_inf", "confidence_eos_eot_inf",
                      "early_exit")


def _stop_ids(tokenizer, model) -> list[int]:
    ids = model.generation_config.eos_token_id or tokenizer.eos_token_id
    return list(ids) if isinstance(ids, (list, tuple)) else [ids]


def _load_for_generation(args):
    from transformers import AutoModel

    import modeling_llada  # noqa: F401

    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if args.device == "cuda" else torch.float32)
    try:
        model = AutoModel.from_pretrained(args.model, trust_remote_code=args.trust_remote_code, dtype=dtype)
    except OSError as error:
        raise SystemExit(f"llada-hf: cannot load the model {args.model!r}: {error}") from None
    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    kwargs = {name: getattr(args, name) for name in _GENERATION_FIELDS if getattr(args, name) is not None}
    return model.to(args.device).eval(), tokenizer, kwargs


def generate(argv: list[str] | None = None) -> str:
    """Generate from a prompt (chat template applied when the tokenizer has one, unless --raw)."""
    from .live_view import DenoisingView

    parser = _generation_parser("llada-hf generate", "Generate with a LLaDA model.")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--raw", action="store_true", help="do not apply the chat template")
    args = parser.parse_args(argv)
    model, tokenizer, kwargs = _load_for_generation(args)
    if tokenizer.chat_template and not args.raw:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tokenizer(args.prompt, return_tensors="pt")["input_ids"]
    stops = _stop_ids(tokenizer, model)
    streamer = DenoisingView(tokenizer, model.config.mask_token_id, stop_token_ids=stops) if args.live else None
    try:
        out = model.generate(ids.to(args.device), streamer=streamer, **kwargs)
    except ValueError as error:
        raise SystemExit(f"llada-hf generate: {error}") from None
    text = _answer_text(tokenizer, out[0, ids.shape[1]:].tolist(), stops)
    if not args.live:
        print(text)
    return text


def _answer_text(tokenizer, ids: list[int], stops: list[int]) -> str:
    cut = next((i for i, token in enumerate(ids) if token in stops), len(ids))
    return tokenizer.decode(ids[:cut], skip_special_tokens=True).strip()


def chat(argv: list[str] | None = None, inputs=None) -> list[dict]:
    """Multi-turn chat with a chat-template model, showing the denoising live. Empty line or /exit ends."""
    from .live_view import DenoisingView

    parser = _generation_parser("llada-hf chat", "Chat with a LLaDA model.")
    args = parser.parse_args(argv)
    model, tokenizer, kwargs = _load_for_generation(args)
    if not tokenizer.chat_template:
        raise SystemExit(f"llada-hf chat: the tokenizer of {args.model!r} has no chat template; use "
                         "`llada-hf generate --raw` instead.")
    read = inputs if inputs is not None else _read_lines()
    messages = []
    for line in read:
        line = line.strip()
        if not line or line == "/exit":
            break
        messages.append({"role": "user", "content": line})
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"].to(args.device)
        stops = _stop_ids(tokenizer, model)
        streamer = DenoisingView(tokenizer, model.config.mask_token_id, stop_token_ids=stops) if args.live else None
        try:
            out = model.generate(ids, streamer=streamer, **kwargs)
        except ValueError as error:
            raise SystemExit(f"llada-hf chat: {error}") from None
        answer = _answer_text(tokenizer, out[0, ids.shape[1]:].tolist(), stops)
        if not args.live:
            print(f"assistant: {answer}")
        messages.append({"role": "assistant", "content": answer})
    return messages


def _read_lines():
    while True:
        try:
            yield input("you: ")
        except EOFError:
            return


def publish(argv: list[str] | None = None) -> int:
    from hub_cards.publish import main

    return main(argv)


def evaluate(argv: list[str] | None = None) -> dict:
    try:
        from .lm_eval_llada import main
    except ImportError as error:
        raise SystemExit(f"llada-hf eval needs lm-evaluation-harness: pip install 'llada-hf[eval]' ({error}).")
    return main(argv)


def main(argv: list[str] | None = None) -> int:
    """`llada-hf <command> ...`"""
    from .quickstart import quickstart

    commands = {"quickstart": quickstart, "pretrain": pretrain, "sft": sft, "generate": generate, "chat": chat,
                "publish": publish, "eval": evaluate}
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        usage = "usage: llada-hf {" + ",".join(commands) + "} [options]   (llada-hf <command> --help for each)"
        if argv and argv[0] not in ("-h", "--help"):
            print(f"llada-hf: unknown command {argv[0]!r}\n{usage}", file=sys.stderr)
            return 2
        print(usage)
        return 0
    result = commands[argv[0]](argv[1:])
    return result if isinstance(result, int) else 0

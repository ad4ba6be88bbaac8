"""The `llada-hf` subcommands and the example scripts share these entry points: argument parsing (TRL-style flags or
`--config file.yaml`) plus the library calls, nothing else.

Errors. What the user passed is checked before anything heavy is loaded (the config file, the model folder or Hub id
and its model_type, the tokenizer, the dataset file and columns, --dtype, --device); a mistake raises `ValueError` or
`OSError` (`FileNotFoundError`) whose message names the setting, the value and what to pass instead. `main` prints
such an error as one line on stderr, `llada-hf <command>: <message>`, and exits with status 2 (argparse's usage
errors keep argparse's own message and status 2). Any other exception is a bug: one line too, `llada-hf <command>:
internal error: <type>: <message>`, status 1. With the environment variable LLADA_HF_DEBUG=1 every error propagates
with its full traceback.
"""

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from .loading import (
    DTYPES,
    PRESETS,
    check_adapter_source,
    check_llada_checkpoint,
    check_model_source,
    load_dataset_arg,
    load_model_and_tokenizer,
    load_tokenizer,
)
from .local_data import addition_task, python_docs_corpus

DEBUG_ENV = "LLADA_HF_DEBUG"


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


def _check_config_file(parser, argv: list[str]) -> list[str]:
    """`--config file.yaml` (or `--config=file.yaml`) must name a YAML file of `setting: value` pairs whose settings
    the command knows; checked here so that a mistake names --config and the file. Returns argv in the form TRL
    reads (`--config file.yaml`)."""
    import yaml

    argv = [part for arg in argv for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]
    if "--config" not in argv:
        return argv
    index = argv.index("--config")
    if index + 1 == len(argv) or argv[index + 1].startswith("--"):
        raise ValueError(f"--config needs the path of a YAML file of settings, e.g. `{parser.prog} --config "
                         "run.yaml`.")
    path = Path(argv[index + 1])
    if not path.is_file():
        raise FileNotFoundError(f"--config {str(path)!r}: no such file" + (" (it is a folder)" if path.is_dir() else "")
                                + "; pass a YAML file of `setting: value` lines.")
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or error
        raise ValueError(f"--config {str(path)!r} is not valid YAML: {problem}{where}.") from None
    if not isinstance(config, dict):
        raise ValueError(f"--config {str(path)!r} must hold `setting: value` lines (a YAML mapping); it holds a "
                         f"{type(config).__name__}.")
    known = {action.dest for action in parser._actions} | {"env"}  # TRL reads `env:` as environment variables
    unknown = sorted(str(key) for key in config if key not in known)
    if unknown:
        raise ValueError(f"--config {str(path)!r}: unknown settings {unknown}; `{parser.prog} --help` lists the valid "
                         "ones.")
    return argv


def _check_dataset(check, dataset, dataset_name: str | None, *args) -> None:
    """Run a trainer's dataset check before the model is loaded; its message then also names --dataset_name."""
    try:
        check(dataset, *args)
    except ValueError as error:
        if dataset_name is None:
            raise
        raise ValueError(f"--dataset_name {dataset_name!r}: {error}") from None


def pretrain(argv: list[str] | None = None) -> None:
    """Masked-diffusion pre-training (see examples/pretrain.py for examples)."""
    from trainers import MaskedDiffusionConfig, MaskedDiffusionTrainer
    from trainers.pretraining import check_pretraining_dataset

    parser = TrlParser((PretrainScriptArguments, MaskedDiffusionConfig, ModelConfig), prog="llada-hf pretrain")
    parser.set_defaults(block_size=128, per_device_train_batch_size=16, max_steps=200, learning_rate=1e-3,
                        warmup_steps=20, logging_steps=20, save_steps=100, report_to="none")
    argv = _check_config_file(parser, sys.argv[1:] if argv is None else argv)
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    model_name = model_args.model_name_or_path or "llada-tiny"
    if script_args.dataset_name is None:
        dataset = python_docs_corpus()
    else:
        dataset = load_dataset_arg(script_args.dataset_name, script_args.dataset_config,
                                   script_args.dataset_train_split)
    text_field = training_args.dataset_text_field
    _check_dataset(check_pretraining_dataset, dataset, script_args.dataset_name, text_field)
    if model_name in PRESETS and not script_args.tokenizer_name_or_path and text_field not in dataset.column_names:
        raise ValueError(f"--model_name_or_path {model_name!r} is a fresh model whose tokenizer is trained on the "
                         f"dataset's text column {text_field!r}, which this tokenized dataset lacks; pass "
                         "--tokenizer_name_or_path with the tokenizer that made its input_ids.")
    model, tokenizer = load_model_and_tokenizer(
        model_name, script_args.tokenizer_name_or_path, lambda: dataset[text_field], model_args.dtype,
        model_args.attn_implementation, script_args.trust_remote_code, training_args.seed,
    )
    trainer = MaskedDiffusionTrainer(model, training_args, train_dataset=dataset, processing_class=tokenizer,
                                     peft_config=get_peft_config(model_args))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)  # weights, code files, tokenizer, card


def sft(argv: list[str] | None = None) -> None:
    """Response-only masked-diffusion SFT, full or LoRA (see examples/sft.py for examples)."""
    from trainers import MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer
    from trainers.sft import check_sft_dataset

    parser = TrlParser((SFTScriptArguments, MaskedDiffusionSFTConfig, ModelConfig), prog="llada-hf sft")
    parser.set_defaults(per_device_train_batch_size=16, max_steps=200, learning_rate=1e-3, warmup_steps=20,
                        logging_steps=20, save_steps=100, max_length=256, report_to="none")
    argv = _check_config_file(parser, sys.argv[1:] if argv is None else argv)
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    if script_args.dataset_name is None:
        dataset = addition_task(2000, seed=training_args.seed).remove_columns("answer")
    else:
        dataset = load_dataset_arg(script_args.dataset_name, script_args.dataset_config,
                                   script_args.dataset_train_split)
    _check_dataset(check_sft_dataset, dataset, script_args.dataset_name, "train", training_args.dataset_text_field)
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
    parser.add_argument("--tokenizer", default=None, help="Hub id or folder of the tokenizer; default: the model's")
    parser.add_argument("--trust_remote_code", action="store_true")
    parser.add_argument("--dtype", default=None, choices=DTYPES, help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda, cuda:1, mps; default: cuda when available")
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


def check_device(device: str, setting: str = "--device") -> torch.device:
    """The torch device named `device`; a `ValueError` naming it when torch does not know it or it is not there."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{setting} {device!r} is not a device name; use cpu, cuda, cuda:<index> or mps.") from None
    if resolved.type == "cpu":
        return resolved
    # torch.cuda, torch.xpu, ... (mps reports through torch.backends)
    backend = torch.backends.mps if resolved.type == "mps" else getattr(torch, resolved.type, None)
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        name = {"cuda": "CUDA", "mps": "Apple MPS"}.get(resolved.type, repr(resolved.type))
        if resolved.type == "cuda" and not torch.version.cuda:
            name += f" device is available (this torch {torch.__version__} is built without CUDA)"
        else:
            name += " device is available"
        raise ValueError(f"{setting} {device!r}: no {name}; use --device cpu.")
    count = backend.device_count() if hasattr(backend, "device_count") else None
    if resolved.index is not None and count is not None and resolved.index >= count:
        raise ValueError(f"{setting} {device!r}: this machine has {count} {resolved.type} device(s), "
                         f"{resolved.type}:0 to {resolved.type}:{count - 1}.")
    return resolved


def _load_for_generation(args, command: str):
    """Check the arguments, then load the tokenizer (cheap, so its mistakes show first) and the model."""
    from transformers import AutoModel

    import modeling_llada  # noqa: F401

    device = check_device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    check_model_source(args.model, "model")
    check_llada_checkpoint(args.model, "model")
    setting, source = ("--tokenizer", args.tokenizer) if args.tokenizer else ("model", args.model)
    tokenizer = load_tokenizer(source, args.trust_remote_code, setting, "--tokenizer")
    if command == "chat" and not tokenizer.chat_template:
        raise ValueError(f"{setting} {source!r}: its tokenizer has no chat template, which chat needs; use "
                         "`llada-hf generate --raw`, or pass --tokenizer with a tokenizer that has one.")
    try:
        model = AutoModel.from_pretrained(args.model, trust_remote_code=args.trust_remote_code, dtype=dtype)
    except OSError as error:  # missing or unreadable weights, a failed download: what failed, then why
        raise OSError(f"model {args.model!r}: cannot load the model: {' '.join(str(error).split())}") from error
    kwargs = {name: getattr(args, name) for name in _GENERATION_FIELDS if getattr(args, name) is not None}
    return model.to(device).eval(), tokenizer, kwargs


def generate(argv: list[str] | None = None) -> str:
    """Generate from a prompt (chat template applied when the tokenizer has one, unless --raw)."""
    from .live_view import DenoisingView

    parser = _generation_parser("llada-hf generate", "Generate with a LLaDA model.")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--raw", action="store_true", help="do not apply the chat template")
    args = parser.parse_args(argv)
    model, tokenizer, kwargs = _load_for_generation(args, "generate")
    if tokenizer.chat_template and not args.raw:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tokenizer(args.prompt, return_tensors="pt")["input_ids"]
    stops = _stop_ids(tokenizer, model)
    streamer = DenoisingView(tokenizer, model.config.mask_token_id, stop_token_ids=stops) if args.live else None
    out = model.generate(ids.to(model.device), streamer=streamer, **kwargs)  # a bad setting: ValueError, one line
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
    model, tokenizer, kwargs = _load_for_generation(args, "chat")
    read = inputs if inputs is not None else _read_lines()
    messages = []
    for line in read:
        line = line.strip()
        if not line or line == "/exit":
            break
        messages.append({"role": "user", "content": line})
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"].to(model.device)
        stops = _stop_ids(tokenizer, model)
        streamer = DenoisingView(tokenizer, model.config.mask_token_id, stop_token_ids=stops) if args.live else None
        out = model.generate(ids, streamer=streamer, **kwargs)
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
    from .publish import main

    return main(argv)


def evaluate(argv: list[str] | None = None) -> dict:
    import argparse

    try:
        from .evaluate import main
    except ImportError as error:
        raise SystemExit(f"llada-hf eval needs lm-evaluation-harness: pip install 'llada-hf[eval]' ({error}).")
    # the model and adapter are checked before lm-eval starts (its own parser handles --help and the rest)
    sources = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    sources.add_argument("--model")
    sources.add_argument("--peft")
    known, _ = sources.parse_known_args(argv)
    if known.model:
        check_model_source(known.model, "--model")
        check_llada_checkpoint(known.model, "--model")
    if known.peft:
        check_adapter_source(known.peft, "--peft")
    return main(argv)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


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
    name = argv[0]
    try:
        result = commands[name](argv[1:])
    except (ValueError, OSError) as error:  # a mistake in what was passed: the message says what to change
        if _debug():
            raise
        print(f"llada-hf {name}: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if _debug():
            raise
        print(f"llada-hf {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: one line still; the traceback on request
        if _debug():
            raise
        print(f"llada-hf {name}: internal error: {type(error).__name__}: {_one_line(error)} (run again with "
              f"{DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0

"""`llada-hf generate` and `chat`: a LLaDA model answers a prompt (or a conversation), the denoising drawn live.

Every diffusion setting of `model.generate` is a flag (README, "Generation"); its choices and defaults are the model's
generation config classes' (`llada_cli.sampler_settings`, a torch-free copy). An unset flag leaves the setting to
the checkpoint's generation_config.json, and the value after "else" in its help applies when that does not set it
either.

Importing this module is cheap (argparse only): `--help` answers at once; torch, transformers and the model are
imported by the commands after the arguments are parsed, and checked before the model is loaded.
"""

import argparse

from ._args import add_flag, new_parser
from .sampler_settings import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULTS,
    DTYPES,
    FIELDS,
    KV_CACHE_MODES,
    LLADA2_DEFAULTS,
    REMASKING_STRATEGIES,
)

_FROM_CONFIG = "default: the checkpoint's generation_config"


def _else(value, llada2=None) -> str:
    """`default: the checkpoint's generation_config, else <value>` (and LLaDA 2's own default when it differs)."""
    return f"{_FROM_CONFIG}, else {value}" + (f"; for LLaDA 2: {llada2}" if llada2 is not None else "")


def _generation_parser(prog: str, description: str):
    """The flags generate and chat share (building it imports nothing: `--device auto` is resolved when loading)."""
    parser = new_parser(prog, description)
    parser.add_argument("model", help="a LLaDA checkpoint: Hub id or local folder")
    add_flag(parser, "tokenizer", metavar="NAME_OR_PATH",
             help="Hub id or folder of the tokenizer; default: the model's")
    add_flag(parser, "trust_remote_code", action="store_true",
             help="allow running the Python code files a checkpoint ships (its config's auto_map)")
    add_flag(parser, "dtype", choices=(*DTYPES, "auto"),
             help="dtype of the weights (auto: the checkpoint's own); default: bfloat16 on CUDA, float32 elsewhere")
    add_flag(parser, "device", default="auto",
             help="where the model runs: cpu, cuda, cuda:1, mps, ...; auto: cuda when available, else cpu")
    add_flag(parser, "live", action=argparse.BooleanOptionalAction, default=True,
             help="redraw the answer in the terminal at every denoising step (masked positions as ░); off: print "
                  "only the answer")
    add_flag(parser, "max_new_tokens", type=int, metavar="N",
             help=f"answer length: masked positions appended to the prompt; {_else(DEFAULT_MAX_NEW_TOKENS)}")
    add_flag(parser, "steps", type=int, metavar="N",
             help="denoising steps in total (a forward pass each), a multiple of the number of blocks; "
                  + _else("max_new_tokens (one token per step)",
                          f"{LLADA2_DEFAULTS['steps']} steps per block"))
    add_flag(parser, "block_length", type=int, metavar="N",
             help="blocks of this many positions are filled left to right (max_new_tokens must be a multiple of it); "
                  + _else("max_new_tokens (one block)", LLADA2_DEFAULTS["block_length"]))
    add_flag(parser, "temperature", type=float,
             help="0 proposes the most likely token, > 0 samples (float64 Gumbel noise); "
                  + _else(f"{DEFAULTS['temperature']:g}"))
    add_flag(parser, "top_k", type=int, metavar="K",
             help=f"with temperature > 0, sample among the K most likely tokens only; {_else('no limit')}")
    add_flag(parser, "top_p", type=float, metavar="P",
             help=f"with temperature > 0, sample from the nucleus of probability mass P; {_else('1 (no limit)')}")
    add_flag(parser, "cfg_scale", type=float, metavar="W",
             help="classifier-free guidance weight (the unconditional row has the prompt masked; 0 is off); "
                  + _else(f"{DEFAULTS['cfg_scale']:g}"))
    add_flag(parser, "remasking", choices=REMASKING_STRATEGIES,
             help="which proposals are committed first: low_confidence (the most probable), random, margin (top-1 "
                  "minus top-2 probability), entropy (the lowest entropy); " + _else(DEFAULTS["remasking"]))
    add_flag(parser, "threshold", type=float,
             help="parallel decoding: every step commits each masked position of the block whose confidence reaches "
                  "this (e.g. 0.9; --steps is then unused); " + _else("off", LLADA2_DEFAULTS["threshold"]))
    add_flag(parser, "factor", type=float,
             help="parallel decoding, factor-based: commit the n most confident positions with (n + 1)(1 - c_n) < "
                  f"factor (e.g. 1.0); {_else('off')}")
    add_flag(parser, "kv_cache", choices=KV_CACHE_MODES,
             help="approximate key/value caching, refreshed at every block: prefix (the prompt and finished blocks) or "
                  "dual (also the positions after the block); "
                  + _else("off (the exact sampler)", f"{LLADA2_DEFAULTS['kv_cache']}, exact under its block-causal "
                                                     "mask"))
    add_flag(parser, "editing_threshold", type=float,
             help="LLaDA 2.1 token editing: a written token of the block is rewritten when the model gives another "
                  f"token more than this probability (e.g. 0.9; LLaDA 2 models only); {_else('off')}")
    add_flag(parser, "max_post_steps", type=int, metavar="N",
             help="LLaDA 2.1 token editing: editing-only steps after a block's last mask is filled (LLaDA 2 models "
                  f"only); {_else(LLADA2_DEFAULTS['max_post_steps'])}")
    add_flag(parser, "logits_eos_inf", action=argparse.BooleanOptionalAction,
             help=f"never propose an EOS token; {_else('off')}")
    add_flag(parser, "confidence_eos_eot_inf", action=argparse.BooleanOptionalAction,
             help=f"commit EOS proposals only after everything else in the block; {_else('off')}")
    add_flag(parser, "early_exit", action=argparse.BooleanOptionalAction,
             help="once the answer has an EOS with no mask before it, fill the rest with EOS and stop; "
                  + _else("off"))
    add_flag(parser, "do_sample", action=argparse.BooleanOptionalAction,
             help="sample at --temperature (1.0 when it is 0) rather than propose the most likely token; off: greedy "
                  "whatever the temperature; default: on when --temperature > 0 is given, else the checkpoint's "
                  "generation_config")
    add_flag(parser, "seed", type=int,
             help="seed of the sampler (temperature > 0 or random remasking): the same seed, the same answer; "
                  "default: drawn from torch's random generator")
    return parser


def build_generate_parser():
    """The parser of `llada-hf generate` (cheap: no torch)."""
    parser = _generation_parser("llada-hf generate", "Generate an answer to a prompt with a LLaDA model, showing the "
                                "denoising live.\n\n  llada-hf generate GSAI-ML/LLaDA-8B-Instruct --prompt \"What is "
                                "diffusion?\" \\\n      --max_new_tokens 64 --block_length 32 --steps 64")
    add_flag(parser, "prompt", required=True, help="the prompt; sent as a user message through the tokenizer's chat "
             "template when it has one (see --raw)")
    add_flag(parser, "raw", action="store_true", help="feed the prompt as plain text, without the chat template")
    return parser


def build_chat_parser():
    """The parser of `llada-hf chat` (cheap: no torch)."""
    parser = _generation_parser("llada-hf chat", "Chat with a LLaDA model (its tokenizer needs a chat template), "
                                "showing the denoising live.\nAn empty line or /exit ends the chat.\n\n"
                                "  llada-hf chat GSAI-ML/LLaDA-8B-Instruct --max_new_tokens 128 --block_length 32")
    add_flag(parser, "system_prompt", metavar="TEXT",
             help="a system message put before the conversation; default: none")
    return parser


def generation_kwargs(args) -> dict:
    """The `model.generate` kwargs the flags set (unset ones are left to the checkpoint's generation_config). A
    temperature > 0 given on the command line samples even when the generation_config says `do_sample: false` (as
    transformers writes by default), unless --no-do_sample."""
    kwargs = {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}
    if kwargs.get("temperature", 0) > 0 and "do_sample" not in kwargs:
        kwargs["do_sample"] = True
    return kwargs


def _stop_ids(tokenizer, model) -> list[int]:
    """Where an answer ends: the generation config's EOS ids, the tokenizer's EOS, the chat template's end of turn."""
    from modeling_llada.answers_llada import end_token_ids

    return end_token_ids(model.generation_config.eos_token_id, tokenizer)


def _answer_text(tokenizer, ids: list[int], stops: list[int]) -> str:
    import torch

    from modeling_llada.answers_llada import decode_answers

    return decode_answers(tokenizer, torch.tensor([ids]), stops, [])[0].strip()


def _load_for_generation(args, command: str):
    """Check the arguments, then load the tokenizer (cheap, so its mistakes show first) and the model."""
    import torch
    from transformers import AutoModel

    import modeling_llada  # noqa: F401
    from modeling_llada.mask_id import resolve_mask_token_id

    from .loading import check_device, check_llada_checkpoint, check_model_source, load_tokenizer

    device = check_device(args.device)
    if args.dtype == "auto":
        dtype = "auto"
    elif args.dtype:
        dtype = getattr(torch, args.dtype)
    else:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
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
    resolve_mask_token_id(model, tokenizer)  # the official LLaDA-MoE / LLaDA 2 configs store none
    return model.to(device).eval(), tokenizer, generation_kwargs(args)


def _answer(model, tokenizer, ids, live: bool, kwargs: dict) -> str:
    """Generate the answer to the prompt `ids` (drawn live when `live`) and return its text."""
    from .live_view import DenoisingView

    stops = _stop_ids(tokenizer, model)
    streamer = DenoisingView(tokenizer, model.config.mask_token_id, stop_token_ids=stops) if live else None
    out = model.generate(ids.to(model.device), streamer=streamer, **kwargs)  # a bad setting: ValueError, one line
    return _answer_text(tokenizer, out[0, ids.shape[1]:].tolist(), stops)


def generate(argv: list[str] | None = None) -> str:
    """Generate from a prompt (chat template applied when the tokenizer has one, unless --raw)."""
    args = build_generate_parser().parse_args(argv)
    model, tokenizer, kwargs = _load_for_generation(args, "generate")
    if tokenizer.chat_template and not args.raw:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tokenizer(args.prompt, return_tensors="pt")["input_ids"]
    text = _answer(model, tokenizer, ids, args.live, kwargs)
    if not args.live:
        print(text)
    return text


def chat(argv: list[str] | None = None, inputs=None) -> list[dict]:
    """Multi-turn chat with a chat-template model, showing the denoising live. Empty line or /exit ends."""
    args = build_chat_parser().parse_args(argv)
    model, tokenizer, kwargs = _load_for_generation(args, "chat")
    read = inputs if inputs is not None else _read_lines()
    messages = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []
    for line in read:
        line = line.strip()
        if not line or line == "/exit":
            break
        messages.append({"role": "user", "content": line})
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"]
        answer = _answer(model, tokenizer, ids, args.live, kwargs)
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

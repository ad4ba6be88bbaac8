"""The `llada-hf` subcommands and the example scripts share these entry points: argument parsing (TRL-style flags or
`--config file.yaml`) plus the library calls, nothing else.

Errors. What the user passed is checked before anything heavy is loaded (the config file, the model folder or Hub id
and its model_type, the tokenizer, the dataset file and columns, --dtype, --device); a mistake raises `ValueError` or
`OSError` (`FileNotFoundError`) whose message names the setting, the value and what to pass instead. `main` (in
`llada_cli.main`, also importable from here) prints such an error as one line on stderr, `llada-hf <command>:
<message>`, and exits with status 2 (argparse's usage errors keep argparse's own message and status 2). Any other
exception is a bug: one line too, `llada-hf <command>: internal error: <type>: <message>`, status 1. With the
environment variable LLADA_HF_DEBUG=1 every error propagates with its full traceback.

Importing this module is cheap (no torch, transformers or TRL), so that `llada-hf --help` and `generate --help`
answer at once: `_import_heavy()` binds torch, TRL's parser, the loaders and the script-argument dataclasses as
globals of this module when a command first needs them (an attribute lookup from outside, such as
`commands.PretrainScriptArguments`, does it too).
"""

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import help_cache
from ._args import add_flag, new_parser
from .main import DEBUG_ENV, _debug, _one_line, main  # noqa: F401  (the entry point's historical home)

if TYPE_CHECKING:  # bound at run time by _import_heavy()
    import torch
    from trl import ModelConfig, TrlParser, get_peft_config

    from .loading import (
        PRESETS,
        check_adapter_source,
        check_llada_checkpoint,
        check_model_source,
        load_dataset_arg,
        load_model_and_tokenizer,
        load_tokenizer,
    )
    from .local_data import addition_task, python_docs_corpus

# --dtype of generate and chat; equal to loading.DTYPES (a test checks), spelled out so that building the parser
# imports nothing
GENERATION_DTYPES = ("float32", "bfloat16", "float16")
_HEAVY_NAMES = frozenset({
    "torch", "ModelConfig", "ScriptArguments", "TrlParser", "get_peft_config", "DTYPES", "PRESETS",
    "check_adapter_source", "check_llada_checkpoint", "check_model_source", "load_dataset_arg",
    "load_model_and_tokenizer", "load_tokenizer", "addition_task", "python_docs_corpus", "PretrainScriptArguments",
    "SFTScriptArguments", "DPOScriptArguments", "copy_preference_task",
})


_EXPERTS_HELP = ("with --use_peft on LLaDA-MoE or LLaDA 2: adapt the routed experts too (their fused weights, through "
                 "PEFT's target_parameters); the defaults adapt attention, the dense MLPs and the shared experts, "
                 "never the router")


def _check_lora_flags(model_args, script_args) -> None:
    """Before anything is loaded: --lora_target_experts needs --use_peft."""
    if script_args.lora_target_experts and not model_args.use_peft:
        raise ValueError("--lora_target_experts adapts the experts with LoRA; add --use_peft.")
    if script_args.lora_target_experts and model_args.lora_dropout:
        raise ValueError(f"--lora_target_experts: PEFT's LoRA on the fused expert weights has no dropout, and "
                         f"--lora_dropout is {model_args.lora_dropout} (the default is 0.05); add --lora_dropout 0.")


def _peft_config(model_args, script_args, model):
    """TRL's LoRA config from the flags (None without --use_peft), plus the routed experts with
    --lora_target_experts."""
    from trainers import lora_target_parameters

    config = get_peft_config(model_args)
    if script_args.lora_target_experts:
        _check_lora_flags(model_args, script_args)
        targets = lora_target_parameters(model)
        if not targets:
            raise ValueError(f"--lora_target_experts: {type(model).__name__} has no routed experts (only LLaDA-MoE "
                             "and LLaDA 2 do); drop the flag.")
        config.target_parameters = targets
    return config


def _script_argument_classes(ScriptArguments) -> dict:  # noqa: N803 (TRL's class)
    """The script-argument dataclasses of pretrain and sft (subclasses of TRL's ScriptArguments, hence built here)."""

    @dataclass
    class PretrainScriptArguments(ScriptArguments):
        dataset_name: str | None = field(
            default=None,
            metadata={"help": "Hub id or local data files (json/jsonl/csv/parquet/txt); default: the Python docs "
                              "corpus."},
        )
        tokenizer_name_or_path: str | None = field(
            default=None, metadata={"help": "Tokenizer; default: the model's, or a new BPE for a fresh preset model."}
        )
        trust_remote_code: bool = field(default=False, metadata={"help": "Allow code files shipped with the model."})
        lora_target_experts: bool = field(default=False, metadata={"help": _EXPERTS_HELP})

    @dataclass
    class SFTScriptArguments(ScriptArguments):
        dataset_name: str | None = field(
            default=None,
            metadata={"help": "Hub id or local data files (json/jsonl/csv/parquet); default: a local addition task."},
        )
        tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer; default: the model's."})
        lora_target_experts: bool = field(default=False, metadata={"help": _EXPERTS_HELP})
        sample_answers: int = field(
            default=3,
            metadata={"help": "After training, print the model's answers to this many prompts (held-out ones when "
                              "there is an eval dataset) next to the expected ones; 0 turns it off."},
        )

    @dataclass
    class DPOScriptArguments(ScriptArguments):
        dataset_name: str | None = field(
            default=None,
            metadata={"help": "Hub id or local data files (json/jsonl/csv/parquet) of preference pairs (prompt, "
                              "chosen, rejected); default: a local copy task (the correct copy preferred over one "
                              "with a digit changed)."},
        )
        tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer; default: the model's."})

    classes = {"PretrainScriptArguments": PretrainScriptArguments, "SFTScriptArguments": SFTScriptArguments,
               "DPOScriptArguments": DPOScriptArguments}
    for name, cls in classes.items():
        cls.__qualname__ = name  # llada_cli.commands.<name>, as if defined at the top (pickle finds it there)
    return classes


def _import_heavy() -> None:
    """Bind torch, TRL, the loaders and the script-argument dataclasses as globals of this module, as imports at its
    top would (the first call takes seconds; later ones nothing)."""
    namespace = globals()
    if "SFTScriptArguments" in namespace:
        return
    import torch
    from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

    from . import loading, local_data

    namespace.update(torch=torch, ModelConfig=ModelConfig, ScriptArguments=ScriptArguments, TrlParser=TrlParser,
                     get_peft_config=get_peft_config)
    namespace.update({name: getattr(loading, name) for name in (
        "DTYPES", "PRESETS", "check_adapter_source", "check_llada_checkpoint", "check_model_source", "load_dataset_arg",
        "load_model_and_tokenizer", "load_tokenizer")})
    namespace.update(addition_task=local_data.addition_task, python_docs_corpus=local_data.python_docs_corpus,
                     copy_preference_task=local_data.copy_preference_task)
    namespace.update(_script_argument_classes(ScriptArguments))  # last: its presence means everything is bound


def __getattr__(name: str):
    if name in _HEAVY_NAMES:
        _import_heavy()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    # TRL reads `env:` as environment variables; `config:` inside a config file is no setting
    known = ({action.dest for action in parser._actions} - {"config"}) | {"env"}
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


class TrainingHelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """TRL's help format (every flag shows its default), keeping the line breaks of the description and examples;
    a None default is not shown when the help already says what happens by default."""

    def _get_help_string(self, action):
        if action.default is None and "default" in (action.help or "").lower():
            return action.help
        return super()._get_help_string(action)


_CONFIG_HELP = ("a YAML file of `setting: value` lines, any of the flags below (plus `env:`, a mapping of "
                "environment variables to set); flags given on the command line override it")
_MODEL_HELP = ("a LLaDA checkpoint to start from (Hub id or folder), or a preset for a fresh model: {presets}")

PRETRAIN_DESCRIPTION = """\
Masked-diffusion pre-training of a LLaDA model: a fresh preset model or a checkpoint, on a text dataset packed
into blocks. Every flag of transformers' TrainingArguments and TRL's ModelConfig (LoRA: --use_peft) applies, plus
the diffusion settings; or put them in a YAML file (--config). The defaults below are a small CPU run."""
PRETRAIN_EXAMPLES = """\
examples:
  # a fresh tiny model on the Python docs (no download), a minute or two on a CPU
  llada-hf pretrain --output_dir runs/pretrain
  # any LLaDA checkpoint and dataset (on several GPUs: accelerate launch examples/pretrain.py, same flags)
  llada-hf pretrain --model_name_or_path GSAI-ML/LLaDA-8B-Base --dataset_name allenai/c4 \\
      --dataset_config en --block_size 4096 --bf16 --output_dir runs/c4
  # the same flags from a YAML file of `setting: value` lines
  llada-hf pretrain --config pretrain.yaml"""
SFT_DESCRIPTION = """\
Response-only masked-diffusion fine-tuning (SFT) of a LLaDA model, full or LoRA (--use_peft): only the answer is
masked and learned. The dataset has `prompt`/`completion` or `messages` columns. Every flag of TRL's SFTConfig and
ModelConfig applies, plus the diffusion settings; or put them in a YAML file (--config). The defaults below are a
small CPU run."""
SFT_EXAMPLES = """\
examples:
  # a fresh tiny model on a checkable addition task (no download)
  llada-hf sft --output_dir runs/sft
  # LoRA on a pre-trained checkpoint (LLaDA's block projections by default)
  llada-hf sft --model_name_or_path runs/pretrain --use_peft --lora_r 16 --output_dir runs/sft-lora
  # a chat dataset from the Hub (on several GPUs: accelerate launch examples/sft.py, same flags)
  llada-hf sft --model_name_or_path GSAI-ML/LLaDA-8B-Instruct --dataset_name trl-lib/Capybara \\
      --bf16 --use_peft --output_dir runs/capybara
  # the same flags from a YAML file of `setting: value` lines
  llada-hf sft --config sft.yaml"""

DPO_DESCRIPTION = """\
Preference optimisation of a LLaDA model with VRPO (LLaDA 1.5): DPO with each log-likelihood replaced by a
variance-reduced Monte-Carlo ELBO of the response (optimal allocation and antithetic sampling by default), full or
LoRA (--use_peft; the reference is then the base with the adapter disabled). The dataset has TRL's `prompt`/
`chosen`/`rejected` columns. Every flag of TRL's DPOConfig and ModelConfig applies, plus the VRPO settings; or put
them in a YAML file (--config). `--loss_type sigmoid sft --loss_weights 1 0.5` adds TRL's "sft" term: the
masked-diffusion SFT loss of the chosen answers. The defaults below are a small CPU run; examples/vrpo.py runs SFT
then VRPO on the SFT model's own mistakes and reports the accuracies before and after."""
DPO_EXAMPLES = """\
examples:
  # a fine-tuned model on the local copy-task preferences (no download)
  llada-hf dpo --model_name_or_path runs/sft --output_dir runs/vrpo
  # LoRA on LLaDA-8B-Instruct with a Hub preference dataset (on several GPUs: accelerate launch, same flags)
  llada-hf dpo --model_name_or_path GSAI-ML/LLaDA-8B-Instruct --dataset_name trl-lib/ultrafeedback_binarized \\
      --bf16 --use_peft --elbo_samples 8 --output_dir runs/llada-vrpo
  # the same flags from a YAML file of `setting: value` lines
  llada-hf dpo --config dpo.yaml"""


def _training_parser(command: str, classes: tuple, description: str, epilog: str, **defaults):
    """TRL's parser of `classes` (both spellings of every flag, defaults shown), with `--config` listed and our
    defaults."""
    parser = TrlParser(classes, prog=f"llada-hf {command}", description=description, epilog=epilog,
                       formatter_class=TrainingHelpFormatter, allow_abbrev=False)
    # TRL reads --config itself (parse_args_and_config) but does not list it: listed here, right after --help. Its
    # default is SUPPRESS so that it never lands in the parsed namespace.
    config = parser.add_argument("--config", metavar="FILE.yaml", default=argparse.SUPPRESS, help=_CONFIG_HELP)
    for actions in (parser._actions, parser._optionals._group_actions):
        actions.remove(config)
        actions.insert(1, config)
    model = next(action for action in parser._actions if action.dest == "model_name_or_path")
    model.help = _MODEL_HELP.format(presets=", ".join(PRESETS))
    parser.set_defaults(model_name_or_path="llada-tiny", report_to="none", **defaults)
    return parser


def build_pretrain_parser():
    """The parser of `llada-hf pretrain` (imports transformers and TRL: seconds; its help text is cached)."""
    _import_heavy()
    from trainers import MaskedDiffusionConfig

    return _training_parser(
        "pretrain", (PretrainScriptArguments, MaskedDiffusionConfig, ModelConfig), PRETRAIN_DESCRIPTION,
        PRETRAIN_EXAMPLES, block_size=128, per_device_train_batch_size=16, max_steps=200, learning_rate=1e-3,
        warmup_steps=20, logging_steps=20, save_steps=100,
    )


def build_sft_parser():
    """The parser of `llada-hf sft` (imports transformers and TRL: seconds; its help text is cached)."""
    _import_heavy()
    from trainers import MaskedDiffusionSFTConfig

    return _training_parser(
        "sft", (SFTScriptArguments, MaskedDiffusionSFTConfig, ModelConfig), SFT_DESCRIPTION, SFT_EXAMPLES,
        per_device_train_batch_size=16, max_steps=200, learning_rate=1e-3, warmup_steps=20, logging_steps=20,
        save_steps=100, max_length=256,
    )


def build_dpo_parser():
    """The parser of `llada-hf dpo` (imports transformers and TRL: seconds; its help text is cached)."""
    _import_heavy()
    from trainers import VRPOConfig

    return _training_parser(
        "dpo", (DPOScriptArguments, VRPOConfig, ModelConfig), DPO_DESCRIPTION, DPO_EXAMPLES,
        per_device_train_batch_size=16, max_steps=100, learning_rate=5e-4, beta=0.5, logging_steps=10,
        save_steps=50, max_length=256,
    )


def dpo(argv: list[str] | None = None) -> None:
    """VRPO preference optimisation, full or LoRA (see examples/vrpo.py for a run with before/after accuracies)."""
    from trainers import VRPOTrainer
    from trainers.vrpo import check_preference_dataset

    parser = build_dpo_parser()
    help_cache.warm("dpo", parser)  # the next `llada-hf dpo --help` is then fast
    argv = _check_config_file(parser, sys.argv[1:] if argv is None else argv)
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    if script_args.dataset_name is None:
        dataset = copy_preference_task(2000, 4, seed=training_args.seed)
    else:
        dataset = load_dataset_arg(script_args.dataset_name, script_args.dataset_config,
                                   script_args.dataset_train_split)
    _check_dataset(check_preference_dataset, dataset, script_args.dataset_name, "train")
    model, tokenizer = load_model_and_tokenizer(
        model_args.model_name_or_path or "llada-tiny", script_args.tokenizer_name_or_path,
        lambda: python_docs_corpus()["text"], model_args.dtype, model_args.attn_implementation,
        training_args.trust_remote_code, training_args.seed,
    )
    trainer = VRPOTrainer(model, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=get_peft_config(model_args))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)


def pretrain(argv: list[str] | None = None) -> None:
    """Masked-diffusion pre-training (see examples/pretrain.py for examples)."""
    from trainers import MaskedDiffusionTrainer
    from trainers.pretraining import check_pretraining_dataset

    parser = build_pretrain_parser()
    help_cache.warm("pretrain", parser)  # the next `llada-hf pretrain --help` is then fast
    argv = _check_config_file(parser, sys.argv[1:] if argv is None else argv)
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    _check_lora_flags(model_args, script_args)
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
                                     peft_config=_peft_config(model_args, script_args, model))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir, dataset_name=script_args.dataset_name or "Python docs (local)")


def sft(argv: list[str] | None = None) -> None:
    """Response-only masked-diffusion SFT, full or LoRA (see examples/sft.py for examples)."""
    from trainers import MaskedDiffusionSFTTrainer
    from trainers.sft import check_sft_dataset

    parser = build_sft_parser()
    help_cache.warm("sft", parser)  # the next `llada-hf sft --help` is then fast
    argv = _check_config_file(parser, sys.argv[1:] if argv is None else argv)
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    _check_lora_flags(model_args, script_args)
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
                                        peft_config=_peft_config(model_args, script_args, model))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir, dataset_name=script_args.dataset_name or "addition task (local)")
    _print_sample_answers(trainer, script_args.sample_answers)


def _print_sample_answers(trainer, count: int) -> None:
    """What the fine-tuned model answers to a few prompts (held-out ones when there is an eval dataset); the trainer
    warns when every answer is empty."""
    if count < 1 or not trainer.is_world_process_zero():
        return
    source = "held-out" if trainer.eval_dataset is not None else "training"
    samples = trainer.sample_answers(count)
    print(f"\nSample answers of the fine-tuned model ({len(samples)} {source} prompts, greedy):")
    for sample in samples:
        prompt = " ".join(sample["prompt"].split())
        print(f"  prompt:   {prompt[-200:]}\n  answer:   {sample['answer'] or '(empty)'}\n"
              f"  expected: {sample['reference']}")


# generate and chat: every diffusion setting of `model.generate` (README, "Generation"); unset, the checkpoint's
# generation_config.json decides, and the value after "else" applies when it does not set it either
_FROM_CONFIG = "default: the checkpoint's generation_config"
REMASKING = ("low_confidence", "random", "margin", "entropy")  # modeling_llada.generation_llada's strategies
KV_CACHES = ("prefix", "dual")


def _generation_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags generate and chat share (building it imports nothing: `--device auto` is resolved when loading)."""
    parser = new_parser(prog, description)
    parser.add_argument("model", help="a LLaDA checkpoint: Hub id or local folder")
    add_flag(parser, "tokenizer", metavar="NAME_OR_PATH",
             help="Hub id or folder of the tokenizer; default: the model's")
    add_flag(parser, "trust_remote_code", action="store_true",
             help="allow running the Python code files a checkpoint ships (its config's auto_map)")
    add_flag(parser, "dtype", choices=(*GENERATION_DTYPES, "auto"),
             help="dtype of the weights (auto: the checkpoint's own); default: bfloat16 on CUDA, float32 elsewhere")
    add_flag(parser, "device", default="auto",
             help="where the model runs: cpu, cuda, cuda:1, mps, ...; auto: cuda when available, else cpu")
    add_flag(parser, "live", action=argparse.BooleanOptionalAction, default=True,
             help="redraw the answer in the terminal at every denoising step (masked positions as ░); off: print "
                  "only the answer")
    add_flag(parser, "max_new_tokens", type=int, metavar="N",
             help=f"answer length: masked positions appended to the prompt; {_FROM_CONFIG}, else 128")
    add_flag(parser, "steps", type=int, metavar="N",
             help="denoising steps in total (a forward pass each), a multiple of the number of blocks; "
                  f"{_FROM_CONFIG}, else max_new_tokens (one token per step)")
    add_flag(parser, "block_length", type=int, metavar="N",
             help="blocks of this many positions are filled left to right (max_new_tokens must be a multiple of it); "
                  f"{_FROM_CONFIG}, else max_new_tokens (one block)")
    add_flag(parser, "temperature", type=float,
             help=f"0 proposes the most likely token, > 0 samples (float64 Gumbel noise); {_FROM_CONFIG}, else 0")
    add_flag(parser, "top_k", type=int, metavar="K",
             help=f"with temperature > 0, sample among the K most likely tokens only; {_FROM_CONFIG}, else no limit")
    add_flag(parser, "top_p", type=float, metavar="P",
             help=f"with temperature > 0, sample from the nucleus of probability mass P; {_FROM_CONFIG}, else 1 "
                  "(no limit)")
    add_flag(parser, "cfg_scale", type=float, metavar="W",
             help="classifier-free guidance weight (the unconditional row has the prompt masked; 0 is off); "
                  f"{_FROM_CONFIG}, else 0")
    add_flag(parser, "remasking", choices=REMASKING,
             help="which proposals are committed first: low_confidence (the most probable), random, margin (top-1 "
                  f"minus top-2 probability), entropy (the lowest entropy); {_FROM_CONFIG}, else low_confidence")
    add_flag(parser, "threshold", type=float,
             help="parallel decoding: every step commits each masked position of the block whose confidence reaches "
                  f"this (e.g. 0.9; --steps is then unused); {_FROM_CONFIG}, else off")
    add_flag(parser, "factor", type=float,
             help="parallel decoding, factor-based: commit the n most confident positions with (n + 1)(1 - c_n) < "
                  f"factor (e.g. 1.0); {_FROM_CONFIG}, else off")
    add_flag(parser, "kv_cache", choices=KV_CACHES,
             help="approximate key/value caching, refreshed at every block: prefix (the prompt and finished blocks) or "
                  f"dual (also the positions after the block); {_FROM_CONFIG}, else off (the exact sampler)")
    add_flag(parser, "editing_threshold", type=float,
             help="LLaDA 2.1 token editing: a written token of the block is rewritten when the model gives another "
                  f"token more than this probability (e.g. 0.9; LLaDA 2 models only); {_FROM_CONFIG}, else off")
    add_flag(parser, "max_post_steps", type=int, metavar="N",
             help="LLaDA 2.1 token editing: editing-only steps after a block's last mask is filled (LLaDA 2 models "
                  f"only); {_FROM_CONFIG}")
    add_flag(parser, "logits_eos_inf", action=argparse.BooleanOptionalAction,
             help=f"never propose an EOS token; {_FROM_CONFIG}, else off")
    add_flag(parser, "confidence_eos_eot_inf", action=argparse.BooleanOptionalAction,
             help=f"commit EOS proposals only after everything else in the block; {_FROM_CONFIG}, else off")
    add_flag(parser, "early_exit", action=argparse.BooleanOptionalAction,
             help="once the answer has an EOS with no mask before it, fill the rest with EOS and stop; "
                  f"{_FROM_CONFIG}, else off")
    add_flag(parser, "do_sample", action=argparse.BooleanOptionalAction,
             help="sample at --temperature (1.0 when it is 0) rather than propose the most likely token; off: greedy "
                  "whatever the temperature; default: on when --temperature > 0 is given, else the checkpoint's "
                  "generation_config")
    add_flag(parser, "seed", type=int,
             help="seed of the sampler (temperature > 0 or random remasking): the same seed, the same answer; "
                  "default: drawn from torch's random generator")
    return parser


def build_generate_parser() -> argparse.ArgumentParser:
    """The parser of `llada-hf generate` (cheap: no torch)."""
    parser = _generation_parser("llada-hf generate", "Generate an answer to a prompt with a LLaDA model, showing the "
                                "denoising live.\n\n  llada-hf generate GSAI-ML/LLaDA-8B-Instruct --prompt \"What is "
                                "diffusion?\" \\\n      --max_new_tokens 64 --block_length 32 --steps 64")
    add_flag(parser, "prompt", required=True, help="the prompt; sent as a user message through the tokenizer's chat "
             "template when it has one (see --raw)")
    add_flag(parser, "raw", action="store_true", help="feed the prompt as plain text, without the chat template")
    return parser


def build_chat_parser() -> argparse.ArgumentParser:
    """The parser of `llada-hf chat` (cheap: no torch)."""
    parser = _generation_parser("llada-hf chat", "Chat with a LLaDA model (its tokenizer needs a chat template), "
                                "showing the denoising live.\nAn empty line or /exit ends the chat.\n\n"
                                "  llada-hf chat GSAI-ML/LLaDA-8B-Instruct --max_new_tokens 128 --block_length 32")
    add_flag(parser, "system_prompt", metavar="TEXT",
             help="a system message put before the conversation; default: none")
    return parser


_GENERATION_FIELDS = ("max_new_tokens", "steps", "block_length", "temperature", "top_k", "top_p", "cfg_scale",
                      "remasking", "threshold", "factor", "kv_cache", "editing_threshold", "max_post_steps",
                      "logits_eos_inf", "confidence_eos_eot_inf", "early_exit", "do_sample", "seed")


def generation_kwargs(args) -> dict:
    """The `model.generate` kwargs the flags set (unset ones are left to the checkpoint's generation_config). A
    temperature > 0 given on the command line samples even when the generation_config says `do_sample: false` (as
    transformers writes by default), unless --no-do_sample."""
    kwargs = {name: getattr(args, name) for name in _GENERATION_FIELDS if getattr(args, name) is not None}
    if kwargs.get("temperature", 0) > 0 and "do_sample" not in kwargs:
        kwargs["do_sample"] = True
    return kwargs


def _stop_ids(tokenizer, model) -> list[int]:
    """Where an answer ends: the generation config's EOS ids, the tokenizer's EOS, the chat template's end of turn."""
    from modeling_llada.answers import end_token_ids

    return end_token_ids(model.generation_config.eos_token_id, tokenizer)


def check_device(device: str, setting: str = "--device") -> "torch.device":
    """The torch device named `device` (auto: cuda when available, else cpu); a `ValueError` naming it when torch does
    not know it or it is not there."""
    _import_heavy()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
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
    _import_heavy()
    from transformers import AutoModel

    import modeling_llada  # noqa: F401

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
    from .loading import fill_mask_token_id

    fill_mask_token_id(model, tokenizer)
    return model.to(device).eval(), tokenizer, generation_kwargs(args)


def generate(argv: list[str] | None = None) -> str:
    """Generate from a prompt (chat template applied when the tokenizer has one, unless --raw)."""
    args = build_generate_parser().parse_args(argv)
    from .live_view import DenoisingView

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
    import torch

    from modeling_llada.answers import decode_answers

    return decode_answers(tokenizer, torch.tensor([ids]), stops, [])[0].strip()


def chat(argv: list[str] | None = None, inputs=None) -> list[dict]:
    """Multi-turn chat with a chat-template model, showing the denoising live. Empty line or /exit ends."""
    args = build_chat_parser().parse_args(argv)
    from .live_view import DenoisingView

    model, tokenizer, kwargs = _load_for_generation(args, "chat")
    read = inputs if inputs is not None else _read_lines()
    messages = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []
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


def quickstart(argv: list[str] | None = None) -> int | dict:
    """`llada-hf quickstart`: 0 when fine-tuning beat the untrained model, else 1 (llada_cli.quickstart.main)."""
    from .quickstart import main

    return main(argv)


def publish(argv: list[str] | None = None) -> int:
    from .publish import main

    return main(argv)


def evaluate(argv: list[str] | None = None) -> dict:
    try:
        from .evaluate import main
    except ImportError as error:
        raise SystemExit(f"llada-hf eval needs lm-evaluation-harness: pip install 'llada-hf[eval]' ({error}).")
    # the model and adapter are checked before lm-eval starts (its own parser handles --help and the rest)
    _import_heavy()
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

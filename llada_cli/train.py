"""`llada-hf pretrain`, `sft` and `dpo`: TRL-style flags (or `--config file.yaml`) plus the library's trainers,
nothing else; `llada_cli.grpo` shares the parser and loading steps here.

What the user passed is checked before anything heavy is loaded (the config file, the model folder or Hub id and its
model_type, the tokenizer, the dataset file and columns, the LoRA flags); a mistake raises `ValueError` or `OSError`
whose message names the setting, the value and what to pass instead (`llada_cli.main` prints it as one line).

Importing this module is cheap: TRL, the trainers and the loaders are imported inside the functions that need them
(building a parser lists transformers' TrainingArguments: seconds, so its help text is cached by `help_cache`).
"""

import argparse
import math
import sys
from pathlib import Path

from . import help_cache
from ._args import TrainingHelpFormatter, check_output_dir

_CONFIG_HELP = ("a YAML file of `setting: value` lines, any of the flags below (plus `env:`, a mapping of "
                "environment variables to set); flags given on the command line override it; default: none (the "
                "flags and their defaults alone)")
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


# -- what every training command shares -------------------------------------------------------------------------------

def training_parser(command: str, script_arguments, config_class, description: str, epilog: str, **defaults):
    """TRL's parser of the script arguments, the trainer's config and ModelConfig (both spellings of every flag,
    defaults shown, one-line usage errors), with `--config` listed and our defaults."""
    from trl import ModelConfig

    from .loading import PRESETS
    from .training_arguments import TrainingParser

    parser = TrainingParser((script_arguments, config_class, ModelConfig), prog=f"llada-hf {command}",
                            description=description, epilog=epilog, formatter_class=TrainingHelpFormatter,
                            allow_abbrev=False)
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


def check_config_file(parser, argv: list[str]) -> list[str]:
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


def parse_training_args(command: str, parser, argv: list[str] | None) -> tuple:
    """(script arguments, training arguments, model arguments) from the command line and `--config`; the parser's
    help is cached on the way (the next `llada-hf <command> --help` is then fast)."""
    help_cache.warm(command, parser)
    argv = check_config_file(parser, sys.argv[1:] if argv is None else argv)
    *parsed, unknown = parser.parse_args_and_config(args=argv, return_remaining_strings=True)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    check_output_dir(getattr(parsed[1], "output_dir", None))
    if len(parsed) > 2:
        check_lora_values(parsed[2])
        check_model_flags(parsed[2])
    return tuple(parsed)


QLORA_EXTRA = 'pip install "llada-hf[qlora]"'
BNB_4BIT_QUANT_TYPES = ("nf4", "fp4")


def _quantized(model_args) -> bool:
    return bool(getattr(model_args, "load_in_4bit", False) or getattr(model_args, "load_in_8bit", False))


def check_model_flags(model_args) -> None:
    """Before anything is loaded: --model_revision only with a Hub id, and the quantization flags (--load_in_4bit /
    --load_in_8bit with their --bnb_4bit_* settings) only where they take effect: one of the two, on a checkpoint (not
    a fresh preset), with --use_peft, with bitsandbytes installed."""
    from .loading import PRESETS

    name = model_args.model_name_or_path or "llada-tiny"
    local = name in PRESETS or Path(name).expanduser().exists()
    revision = getattr(model_args, "model_revision", "main")
    if local and revision not in (None, "main"):
        what = "a fresh preset" if name in PRESETS else "a local folder"
        raise ValueError(f"--model_revision {revision!r} selects a Hub branch, tag or commit, but --model_name_or_path "
                         f"{name!r} is {what} (no revisions); drop --model_revision or pass a Hub id.")
    check_lora_model_flags(model_args)
    four, eight = getattr(model_args, "load_in_4bit", False), getattr(model_args, "load_in_8bit", False)
    if four and eight:
        raise ValueError("--load_in_4bit and --load_in_8bit are both set; pass one of them (4-bit: QLoRA).")
    quant_type = getattr(model_args, "bnb_4bit_quant_type", "nf4")
    if quant_type not in BNB_4BIT_QUANT_TYPES:
        raise ValueError(f"--bnb_4bit_quant_type {quant_type!r} is not a bitsandbytes 4-bit type; choose nf4 or fp4.")
    if not four:
        set_4bit = [flag for flag, value, default in (
            ("--bnb_4bit_quant_type", quant_type, "nf4"),
            ("--use_bnb_nested_quant", getattr(model_args, "use_bnb_nested_quant", False), False),
            ("--bnb_4bit_quant_storage", getattr(model_args, "bnb_4bit_quant_storage", None), None))
            if value != default]
        if set_4bit:
            raise ValueError(f"{', '.join(set_4bit)} set(s) how a 4-bit model is quantized; add --load_in_4bit, or "
                             "drop them.")
    if not (four or eight):
        return
    flag = "--load_in_4bit" if four else "--load_in_8bit"
    if name in PRESETS:
        raise ValueError(f"{flag} quantizes a trained checkpoint, but --model_name_or_path {name!r} is a fresh preset "
                         "(random weights); train it first, then pass its folder (or a Hub id) with the flag.")
    if not model_args.use_peft:
        raise ValueError(f"{flag} freezes the base in {4 if four else 8} bits, so only adapters can train; add "
                         "--use_peft (QLoRA), or drop the flag for full fine-tuning.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ValueError(f"{flag} needs bitsandbytes, which is not installed; {QLORA_EXTRA}.") from None


# TRL ModelConfig's LoRA fields (the ones a TRL release has are checked); they only act with --use_peft
LORA_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_target_parameters",
               "lora_modules_to_save", "lora_task_type", "use_rslora", "use_dora")


def check_lora_model_flags(model_args) -> None:
    """The LoRA flags only where they take effect: with --use_peft; --lora_task_type CAUSAL_LM (how PEFT wraps every
    LLaDA model; another task type would change the wrapper, not the training); --lora_target_parameters (LoRA on
    parameters, PEFT's ParamWrapper) without dropout and without DoRA, which PEFT's ParamWrapper lacks."""
    import dataclasses

    from trl import ModelConfig

    defaults = {field.name: field.default for field in dataclasses.fields(ModelConfig)}
    if not getattr(model_args, "use_peft", False):
        set_lora = [f"--{name}" for name in LORA_FIELDS
                    if name in defaults and getattr(model_args, name, defaults[name]) != defaults[name]]
        if set_lora:
            raise ValueError(f"{', '.join(set_lora)} set(s) the LoRA adapters, but --use_peft is off (full "
                             "fine-tuning); add --use_peft, or drop them.")
        return
    task_type = getattr(model_args, "lora_task_type", "CAUSAL_LM")
    if task_type is not None and str(task_type) != "CAUSAL_LM":
        raise ValueError(f"--lora_task_type {task_type!r}: LLaDA's adapters wrap its masked-diffusion LM as PEFT's "
                         "CAUSAL_LM (the only task type they train and reload as); drop the flag or pass CAUSAL_LM.")
    parameters = getattr(model_args, "lora_target_parameters", None)
    if parameters:
        if model_args.lora_dropout:
            raise ValueError(f"--lora_target_parameters {list(parameters)}: PEFT's LoRA on parameters has no dropout, "
                             f"and --lora_dropout is {model_args.lora_dropout} (the default is 0.05); add "
                             "--lora_dropout 0.")
        if model_args.use_dora:
            raise ValueError(f"--use_dora with --lora_target_parameters {list(parameters)}: PEFT's LoRA on parameters "
                             "has no DoRA; drop one of them.")


def quantization_config(model_args):
    """The transformers `BitsAndBytesConfig` of TRL's ModelConfig flags (as TRL's `get_quantization_config` builds
    it: the 4-bit compute dtype is --dtype, float32 for auto); None without --load_in_4bit / --load_in_8bit."""
    if not _quantized(model_args):
        return None
    import torch
    from transformers import BitsAndBytesConfig

    from .loading import resolve_dtype

    if model_args.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=model_args.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=model_args.use_bnb_nested_quant,
        bnb_4bit_compute_dtype=resolve_dtype(model_args.dtype) or torch.float32,
        bnb_4bit_quant_storage=model_args.bnb_4bit_quant_storage or "uint8",
    )


def check_lora_values(model_args) -> None:
    """With --use_peft: --lora_r a positive count, --lora_alpha a positive number, --lora_dropout in [0, 1) (named as
    flags, before anything is loaded; PEFT would name its own field `r` after the model is loaded)."""
    if not getattr(model_args, "use_peft", False):
        return
    rank, alpha, dropout = (getattr(model_args, name, None) for name in ("lora_r", "lora_alpha", "lora_dropout"))
    if rank is not None and rank < 1:
        raise ValueError(f"--lora_r must be a positive integer (the adapters' rank; e.g. 16), got {rank}.")
    if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"--lora_alpha must be a finite number > 0 (the adapters' scale is alpha / r; e.g. 32), got "
                         f"{alpha}.")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ValueError(f"--lora_dropout must be in [0, 1), got {dropout}.")


def training_dataset(script_args, default):
    """The dataset of --dataset_name (local data files or a Hub id), or `default()` without one."""
    if script_args.dataset_name is None:
        return default()
    from .loading import load_dataset_arg

    return load_dataset_arg(script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split)


def check_dataset(check, dataset, dataset_name: str | None, *args) -> None:
    """Run a trainer's dataset check before the model is loaded; its message then also names --dataset_name."""
    try:
        check(dataset, *args)
    except ValueError as error:
        if dataset_name is None:
            raise
        raise ValueError(f"--dataset_name {dataset_name!r}: {error}") from None


def load_model(model_args, script_args, trust_remote_code: bool, seed: int, texts=None):
    """The model (a preset, a folder or a Hub id) and its tokenizer; a fresh preset's tokenizer is trained on
    `texts()` (default: the Python docs)."""
    from .loading import load_model_and_tokenizer
    from .local_data import python_docs_corpus

    name = model_args.model_name_or_path or "llada-tiny"
    local = Path(name).expanduser().exists()  # a folder has no revisions (check_model_flags refuses one)
    return load_model_and_tokenizer(
        name, script_args.tokenizer_name_or_path, texts or (lambda: python_docs_corpus()["text"]), model_args.dtype,
        model_args.attn_implementation, trust_remote_code, seed,
        revision=None if local else getattr(model_args, "model_revision", None),
        quantization_config=quantization_config(model_args),
    )


def check_lora_flags(model_args, script_args) -> None:
    """Before anything is loaded: --lora_target_experts needs --use_peft."""
    if script_args.lora_target_experts and not model_args.use_peft:
        raise ValueError("--lora_target_experts adapts the experts with LoRA; add --use_peft.")
    if script_args.lora_target_experts and getattr(model_args, "use_dora", False):
        raise ValueError("--use_dora with --lora_target_experts: PEFT's LoRA on the fused expert weights has no DoRA; "
                         "drop one of them.")
    if script_args.lora_target_experts and model_args.lora_dropout:
        raise ValueError(f"--lora_target_experts: PEFT's LoRA on the fused expert weights has no dropout, and "
                         f"--lora_dropout is {model_args.lora_dropout} (the default is 0.05); add --lora_dropout 0.")


def peft_config(model_args, script_args, model):
    """TRL's LoRA config from the flags (None without --use_peft), plus the routed experts with
    --lora_target_experts."""
    from trl import get_peft_config

    from trainers import lora_target_parameters

    config = get_peft_config(model_args)
    if getattr(script_args, "lora_target_experts", False):
        check_lora_flags(model_args, script_args)
        targets = lora_target_parameters(model)
        if not targets:
            raise ValueError(f"--lora_target_experts: {type(model).__name__} has no routed experts (only LLaDA-MoE "
                             "and LLaDA 2 do); drop the flag.")
        given = list(getattr(config, "target_parameters", None) or [])  # --lora_target_parameters: kept
        config.target_parameters = given + [target for target in targets if target not in given]
    if config is not None:
        check_lora_targets(config, model)
    return config


def check_lora_targets(config, model) -> None:
    """--lora_modules_to_save and --lora_target_parameters must each name something in `model` (PEFT skips a name
    that matches nothing, silently)."""
    from trainers.peft_utils import unmatched_lora_targets

    for field, names in unmatched_lora_targets(config, model).items():
        raise ValueError(f"--lora_{field} {names}: nothing in {type(model).__name__} has that name, so it would be "
                         "ignored; name modules (or, for target_parameters, parameters) of the model, or drop it.")


# -- the commands ------------------------------------------------------------------------------------------------------

def build_pretrain_parser():
    """The parser of `llada-hf pretrain` (imports transformers and TRL: seconds; its help text is cached)."""
    from trainers import MaskedDiffusionConfig

    from .training_arguments import PretrainScriptArguments

    return training_parser(
        "pretrain", PretrainScriptArguments, MaskedDiffusionConfig, PRETRAIN_DESCRIPTION, PRETRAIN_EXAMPLES,
        block_size=128, per_device_train_batch_size=16, max_steps=200, learning_rate=1e-3, warmup_steps=20,
        logging_steps=20, save_steps=100,
    )


def build_sft_parser():
    """The parser of `llada-hf sft` (imports transformers and TRL: seconds; its help text is cached)."""
    from trainers import MaskedDiffusionSFTConfig

    from .training_arguments import SFTScriptArguments

    return training_parser(
        "sft", SFTScriptArguments, MaskedDiffusionSFTConfig, SFT_DESCRIPTION, SFT_EXAMPLES,
        per_device_train_batch_size=16, max_steps=200, learning_rate=1e-3, warmup_steps=20, logging_steps=20,
        save_steps=100, max_length=256,
    )


def build_dpo_parser():
    """The parser of `llada-hf dpo` (imports transformers and TRL: seconds; its help text is cached)."""
    from trainers import VRPOConfig

    from .training_arguments import DPOScriptArguments

    return training_parser(
        "dpo", DPOScriptArguments, VRPOConfig, DPO_DESCRIPTION, DPO_EXAMPLES, per_device_train_batch_size=16,
        max_steps=100, learning_rate=5e-4, beta=0.5, logging_steps=10, save_steps=50, max_length=256,
    )


def pretrain(argv: list[str] | None = None) -> None:
    """Masked-diffusion pre-training (see examples/pretrain.py for examples)."""
    from trainers import MaskedDiffusionTrainer
    from trainers.pretraining import check_pretraining_dataset

    from .loading import PRESETS
    from .local_data import python_docs_corpus

    script_args, training_args, model_args = parse_training_args("pretrain", build_pretrain_parser(), argv)
    check_lora_flags(model_args, script_args)
    model_name = model_args.model_name_or_path or "llada-tiny"
    dataset = training_dataset(script_args, python_docs_corpus)
    text_field = training_args.dataset_text_field
    check_dataset(check_pretraining_dataset, dataset, script_args.dataset_name, text_field)
    if model_name in PRESETS and not script_args.tokenizer_name_or_path and text_field not in dataset.column_names:
        raise ValueError(f"--model_name_or_path {model_name!r} is a fresh model whose tokenizer is trained on the "
                         f"dataset's text column {text_field!r}, which this tokenized dataset lacks; pass "
                         "--tokenizer_name_or_path with the tokenizer that made its input_ids.")
    model, tokenizer = load_model(model_args, script_args, script_args.trust_remote_code, training_args.seed,
                                  texts=lambda: dataset[text_field])
    trainer = MaskedDiffusionTrainer(model, training_args, train_dataset=dataset, processing_class=tokenizer,
                                     peft_config=peft_config(model_args, script_args, model))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir, dataset_name=script_args.dataset_name or "Python docs (local)")


def sft(argv: list[str] | None = None) -> None:
    """Response-only masked-diffusion SFT, full or LoRA (see examples/sft.py for examples)."""
    from trainers import MaskedDiffusionSFTTrainer
    from trainers.sft import check_sft_dataset

    from .local_data import addition_task

    script_args, training_args, model_args = parse_training_args("sft", build_sft_parser(), argv)
    check_lora_flags(model_args, script_args)
    dataset = training_dataset(script_args,
                               lambda: addition_task(2000, seed=training_args.seed).remove_columns("answer"))
    check_dataset(check_sft_dataset, dataset, script_args.dataset_name, "train", training_args.dataset_text_field)
    model, tokenizer = load_model(model_args, script_args, training_args.trust_remote_code, training_args.seed)
    trainer = MaskedDiffusionSFTTrainer(model, training_args, train_dataset=dataset, processing_class=tokenizer,
                                        peft_config=peft_config(model_args, script_args, model))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir, dataset_name=script_args.dataset_name or "addition task (local)")
    _print_sample_answers(trainer, script_args.sample_answers)


def dpo(argv: list[str] | None = None) -> None:
    """VRPO preference optimisation, full or LoRA (see examples/vrpo.py for a run with before/after accuracies)."""
    from trainers import VRPOTrainer
    from trainers.vrpo import check_preference_dataset

    from .local_data import copy_preference_task

    script_args, training_args, model_args = parse_training_args("dpo", build_dpo_parser(), argv)
    dataset = training_dataset(script_args, lambda: copy_preference_task(2000, 4, seed=training_args.seed))
    check_dataset(check_preference_dataset, dataset, script_args.dataset_name, "train")
    model, tokenizer = load_model(model_args, script_args, training_args.trust_remote_code, training_args.seed)
    trainer = VRPOTrainer(model, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=peft_config(model_args, script_args, model))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)


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

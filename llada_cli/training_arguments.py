"""The TRL-backed pieces of the training commands: their script-argument dataclasses (subclasses of TRL's
`ScriptArguments`, defined here at the top so that pickle finds them) and their parser class.

Importing this module imports TRL (seconds): `llada_cli.train` and `llada_cli.grpo` import it when a training
command runs or builds its parser, never to answer `--help` from the cache.
"""

from dataclasses import dataclass, field

from trl import ScriptArguments, TrlParser

from ._args import OneLineErrors

_EXPERTS_HELP = ("with --use_peft on LLaDA-MoE or LLaDA 2: adapt the routed experts too (their fused weights, through "
                 "PEFT's target_parameters); the defaults adapt attention, the dense MLPs and the shared experts, "
                 "never the router")
REWARD_HELP = ("reward functions: exact_match (the completion, cut at <|eot_id|>, equals the `answer` column), a "
               "function as module:function (TRL's signature: prompts, completions, **columns -> list of floats), or "
               "a reward model (Hub id or folder of a sequence-classification model); several are summed")


class TrainingParser(OneLineErrors, TrlParser):
    """TRL's parser, whose usage errors are one line like every command's."""


def _dataset(help_text: str):
    return field(default=None, metadata={"help": help_text})


def _lora_target_experts():
    return field(default=False, metadata={"help": _EXPERTS_HELP})


@dataclass
class LLaDAScriptArguments(ScriptArguments):
    """TRL's script arguments plus what every training command reads: the tokenizer."""

    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer; default: the model's."})


@dataclass
class PretrainScriptArguments(LLaDAScriptArguments):
    dataset_name: str | None = _dataset("Hub id or local data files (json/jsonl/csv/parquet/txt); default: the Python "
                                        "docs corpus.")
    tokenizer_name_or_path: str | None = field(default=None, metadata={
        "help": "Tokenizer; default: the model's, or a new BPE for a fresh preset model."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code files shipped with the model."})
    lora_target_experts: bool = _lora_target_experts()


@dataclass
class SFTScriptArguments(LLaDAScriptArguments):
    dataset_name: str | None = _dataset("Hub id or local data files (json/jsonl/csv/parquet); default: a local "
                                        "addition task.")
    lora_target_experts: bool = _lora_target_experts()
    sample_answers: int = field(
        default=3,
        metadata={"help": "After training, print the model's answers to this many prompts (held-out ones when "
                          "there is an eval dataset) next to the expected ones; 0 turns it off."},
    )


@dataclass
class DPOScriptArguments(LLaDAScriptArguments):
    dataset_name: str | None = _dataset("Hub id or local data files (json/jsonl/csv/parquet) of preference pairs "
                                        "(prompt, chosen, rejected); default: a local copy task (the correct copy "
                                        "preferred over one with a digit changed).")


@dataclass
class GRPOScriptArguments(LLaDAScriptArguments):
    dataset_name: str | None = _dataset("Hub id or local data files (json/jsonl/csv/parquet) with a `prompt` column; "
                                        "default: a local copy task (`Repeat: 3 1 4 1` -> `3 1 4 1`, in its `answer` "
                                        "column).")
    reward_funcs: list[str] = field(default_factory=lambda: ["exact_match"], metadata={"help": REWARD_HELP})
    copy_task_digits: int = field(default=4, metadata={"help": "Digits of the default copy task's strings."})

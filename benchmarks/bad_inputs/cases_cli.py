"""`llada-hf` commands run in-process, as a careless user types them: missing and unknown options, wrong types,
files that do not exist or are not what they should be, output paths that cannot be written, conflicting flags.
A usage error must end the command with exit status 2 and one line on stderr naming the option and the value (no
traceback). `serve` is the server area's. Datasets' progress bars are switched off so that stderr holds the message
alone (the tests read its last line the same way)."""

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

from bad_inputs.harness import Case

_CACHE = {}
REWARDS = ("def broken_reward(completions, **kwargs):\n    raise KeyError('answer')\n\n"
           "def length_reward(completions, **kwargs):\n    return [float(len(c)) for c in completions]\n")
TASKS = Path(__file__).resolve().parents[2] / "tests/fixtures/lm_eval_tasks"
TASK = ["--tasks", "toy_chat_sum", "--include_path", str(TASKS)]
NULL_PAIRS = ('{"prompt": "Say hi.", "chosen": " hi", "rejected": " no"}\n'
              '{"prompt": "Say yo.", "chosen": " yo", "rejected": null}\n')


def tmp() -> Path:
    if "tmp" not in _CACHE:
        folder = Path(tempfile.mkdtemp(prefix="llada-sweep-cli-"))
        files = {
            "afile": "",
            "rewards_sweep_cli.py": REWARDS,
            "null_pairs.jsonl": NULL_PAIRS,
            "bad.jsonl": '{"prompt": "Say hi.", "completion": " hi"}\n{"prompt": "Say yo.", "completion": \n',
            "empty.jsonl": "",
            "sft_ok.jsonl": '{"prompt": "Say hi.", "completion": " hi"}\n' * 4,
            "text.jsonl": '{"body": "some text to pre-train on"}\n' * 4,
            "missing_key.yaml": "lerning_rate: 0.1\n",
            "not_yaml.yaml": "learning_rate: [1, 2\n  : :\n",
            "list.yaml": "- learning_rate\n- 0.1\n",
            "eval.json": "{not json",
        }
        for name, content in files.items():
            (folder / name).write_text(content)
        (folder / "noweights").mkdir()
        from tests.utils import tiny_config

        from tests.utils import tiny_chat_tokenizer

        (folder / "noweights" / "config.json").write_text(json.dumps(tiny_config().to_dict()))
        tiny_chat_tokenizer().save_pretrained(folder / "noweights")
        (folder / "empty_dir").mkdir()
        from tests.utils import tiny_model

        tiny_model().save_pretrained(folder / "saved_noweights")  # a saved model whose weights file was lost
        tiny_chat_tokenizer().save_pretrained(folder / "saved_noweights")
        (folder / "saved_noweights" / "model.safetensors").unlink()
        _CACHE["tmp"] = folder
    return _CACHE["tmp"]


def model_folder() -> str:
    """A tiny dense LLaDA with its tokenizer, saved once."""
    folder = tmp() / "model"
    if not folder.exists():
        from tests.utils import tiny_chat_tokenizer, tiny_model

        tiny_model().save_pretrained(folder)
        tiny_chat_tokenizer().save_pretrained(folder)
    return str(folder)


def llada_hf(*argv: str, cwd: Path | None = None):
    """Run `llada-hf argv` in-process ({tmp} and {model} filled in); return (exit status, stderr)."""
    import datasets

    from llada_cli.main import DEBUG_ENV, main

    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    os.environ.pop(DEBUG_ENV, None)
    os.environ["LLADA_HF_CACHE"] = str(tmp() / "cache")
    args = [a.replace("{tmp}", str(tmp())).replace("{model}", model_folder() if "{model}" in a else "")
            for a in argv]
    import sys

    sys.path.insert(0, str(tmp()))  # the reward module
    err, out = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        os.chdir(cwd or here)  # lm-eval reads a task's data_files relative to the working folder
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                status = main(args)
            except SystemExit as exit:
                status = exit.code if isinstance(exit.code, int) else 1
    finally:
        os.chdir(here)
        sys.path.remove(str(tmp()))
    return status, err.getvalue()


def cases() -> list[Case]:
    def C(name, *argv, says, cwd=None):
        return Case("cli", name, lambda: llada_hf(*argv, cwd=cwd), expect="cli", says=says)

    out = "{tmp}/out"
    small_grpo = ["--max_steps", "1", "--per_device_train_batch_size", "2", "--num_generations", "2",
                  "--max_completion_length", "4", "--save_strategy", "no"]
    return [
        # --- commands and options that do not exist, values of the wrong type ---------------------------------------
        C("unknown command", "trian", says=r"trian"),
        C("sft unknown option", "sft", "--lerning_rate", "1e-4", "--output_dir", out, says=r"lerning_rate"),
        C("sft learning_rate not a number", "sft", "--learning_rate", "abc", "--output_dir", out,
          says=r"learning_rate.*abc"),
        C("sft bool option not a bool", "sft", "--bf16", "maybe", "--output_dir", out, says=r"bf16.*maybe"),
        C("generate option not a number", "generate", "{model}", "--prompt", "hi", "--steps", "many",
          says=r"steps.*many"),
        C("quickstart model misspelt", "quickstart", "--model", "llada3", says=r"model.*llada3"),
        # --- values out of range ------------------------------------------------------------------------------------
        C("sft mask_eps 2", "sft", "--mask_eps", "2", "--output_dir", out, says=r"mask_eps.*\b2"),
        C("pretrain block_size 0", "pretrain", "--block_size", "0", "--output_dir", out, says=r"block_size.*\b0\b"),
        C("dpo beta 0 (issue)", "dpo", "--beta", "0", "--output_dir", out, says=r"beta.*\b0"),
        C("dpo beta -1 (issue)", "dpo", "--beta", "-1", "--output_dir", out, says=r"beta.*-1"),
        C("dpo elbo_samples 0", "dpo", "--elbo_samples", "0", "--output_dir", out, says=r"elbo_samples.*\b0\b"),
        C("sft lora_r 0", "sft", "--use_peft", "--lora_r", "0", "--output_dir", out, says=r"--lora_r.*\b0\b"),
        C("sft lora_dropout 1", "sft", "--use_peft", "--lora_dropout", "1", "--output_dir", out,
          says=r"--lora_dropout.*\b1"),
        C("grpo num_generations does not divide the batch", "grpo", "--num_generations", "3",
          "--per_device_train_batch_size", "2", "--output_dir", out, says=r"num_generations.*\b3\b"),
        C("grpo max_completion_length 0", "grpo", "--max_completion_length", "0", "--output_dir", out,
          says=r"max_completion_length.*\b0\b"),
        C("generate steps 0", "generate", "{model}", "--prompt", "hi", "--steps", "0", says=r"steps.*\b0\b"),
        C("generate temperature nan", "generate", "{model}", "--prompt", "hi", "--temperature", "nan",
          says=r"temperature.*nan"),
        C("generate max_new_tokens -1", "generate", "{model}", "--prompt", "hi", "--max_new_tokens", "-1",
          says=r"max_new_tokens.*-1"),
        C("eval mc_num 0", "eval", "--model", "{model}", *TASK, "--mc_num", "0", says=r"mc_num.*\b0\b",
          cwd=TASKS),
        C("eval limit -1", "eval", "--model", "{model}", *TASK, "--limit", "-1", says=r"limit.*-1"),
        C("quickstart pretrain_steps 0", "quickstart", "--pretrain_steps", "0", "--output_dir", out,
          says=r"pretrain_steps.*\b0\b"),
        C("quickstart sft_learning_rate -1", "quickstart", "--sft_learning_rate", "-1", "--output_dir", out,
          says=r"sft_learning_rate.*-1"),
        # --- missing required options -------------------------------------------------------------------------------
        C("generate without --prompt", "generate", "{model}", says=r"--prompt"),
        C("eval without --tasks", "eval", "--model", "{model}", says=r"--tasks"),
        C("publish without repo_id", "publish", "{model}", says=r"repo_id"),
        # --- files that do not exist or are not what they should be -------------------------------------------------
        C("sft dataset file missing", "sft", "--dataset_name", "{tmp}/nowhere.jsonl", "--output_dir", out,
          says=r"nowhere\.jsonl"),
        C("sft dataset with an invalid JSON line", "sft", "--dataset_name", "{tmp}/bad.jsonl", "--output_dir", out,
          says=r"bad\.jsonl"),
        C("sft empty dataset file", "sft", "--dataset_name", "{tmp}/empty.jsonl", "--output_dir", out,
          says=r"empty\.jsonl.*(?i:empty|0 rows|no rows)"),
        C("pretrain text column missing", "pretrain", "--dataset_name", "{tmp}/text.jsonl", "--output_dir", out,
          says=r"dataset_text_field.*body"),
        C("dpo null rejected (issue)", "dpo", "--dataset_name", "{tmp}/null_pairs.jsonl", "--output_dir", out,
          says=r"null_pairs\.jsonl.*Row 1 .*null 'rejected'"),
        C("dpo max_length 8 (issue)", "dpo", "--max_length", "8", "--output_dir", out, "--max_steps", "1",
          says=r"max_length=8"),
        C("sft model folder missing", "sft", "--model_name_or_path", "{tmp}/nowhere", "--output_dir", out,
          says=r"model_name_or_path.*nowhere"),
        C("sft model folder without weights", "sft", "--model_name_or_path", "{tmp}/noweights", "--output_dir", out,
          says=r"noweights.*(?i:weights|safetensors)"),
        C("generate model folder without weights", "generate", "{tmp}/noweights", "--prompt", "hi",
          says=r"noweights.*(?i:weights|safetensors)"),
        C("generate empty model folder", "generate", "{tmp}/empty_dir", "--prompt", "hi",
          says=r"empty_dir.*config\.json"),
        C("eval model folder missing", "eval", "--model", "{tmp}/nowhere", *TASK, says=r"--model.*nowhere",
          cwd=TASKS),
        C("chat model folder missing", "chat", "{tmp}/nowhere", says=r"nowhere"),
        C("publish folder missing", "publish", "{tmp}/nowhere", "org/name", "--dry_run", says=r"nowhere"),
        C("publish folder without weights", "publish", "{tmp}/saved_noweights", "org/name", "--dry_run",
          says=r"saved_noweights.*(?i:weights|model\.safetensors)"),
        C("publish invalid repo_id", "publish", "{model}", "not a repo/id!", "--dry_run", says=r"not a repo/id!"),
        C("publish eval_results not JSON", "publish", "{model}", "org/name", "--dry_run", "--eval_results",
          "{tmp}/eval.json", says=r"eval.results.*eval\.json.*not valid JSON.*names a file"),
        C("grpo reward module missing", "grpo", "--reward_funcs", "nosuchmod_sweep:fn", "--output_dir", out,
          says=r"nosuchmod_sweep"),
        C("grpo reward function missing", "grpo", "--reward_funcs", "rewards_sweep_cli:no_such_fn", "--output_dir",
          out, says=r"no_such_fn"),
        C("grpo reward raises (issue)", "grpo", "--reward_funcs", "rewards_sweep_cli:broken_reward", "--output_dir",
          out, *small_grpo, "--disable_tqdm", "true", says=r"reward function 'broken_reward' raised KeyError"),
        C("sft config file missing", "sft", "--config", "{tmp}/nowhere.yaml", "--output_dir", out,
          says=r"nowhere\.yaml"),
        C("sft config not YAML", "sft", "--config", "{tmp}/not_yaml.yaml", "--output_dir", out, says=r"not_yaml\.yaml"),
        C("sft config a list", "sft", "--config", "{tmp}/list.yaml", "--output_dir", out, says=r"list\.yaml"),
        C("sft config unknown key", "sft", "--config", "{tmp}/missing_key.yaml", "--output_dir", out,
          says=r"lerning_rate"),
        # --- output paths -------------------------------------------------------------------------------------------
        C("sft output_dir a file (issue)", "sft", "--output_dir", "{tmp}/afile", says=r"output_dir.*afile.*file"),
        C("grpo output_dir under a file (issue)", "grpo", "--output_dir", "{tmp}/afile/run",
          says=r"output_dir.*afile/run.*file"),
        C("pretrain output_dir under a device", "pretrain", "--output_dir", "/dev/null/run",
          says=r"output_dir.*/dev/null/run"),
        C("quickstart output_dir a file", "quickstart", "--output_dir", "{tmp}/afile", says=r"output_dir.*afile"),
        C("publish staging_dir a file", "publish", "{model}", "org/name", "--dry_run", "--staging_dir",
          "{tmp}/afile", says=r"staging.dir.*afile.*is a file"),
        # --- conflicting flags --------------------------------------------------------------------------------------
        C("sft packing", "sft", "--packing", "true", "--output_dir", out, says=r"packing"),
        C("sft fp16 and bf16", "sft", "--fp16", "true", "--bf16", "true", "--use_cpu", "true", "--output_dir", out,
          says=r"fp16.*bf16|bf16.*fp16"),
        C("generate threshold and factor", "generate", "{model}", "--prompt", "hi", "--threshold", "0.9",
          "--factor", "1.0", says=r"threshold.*factor|factor.*threshold"),
        Case("cli", "publish dry run stages the model and a card", lambda: llada_hf(
            "publish", "{model}", "org/name", "--dry_run", "--staging_dir", "{tmp}/stage"), expect="ok",
            check=lambda result: result[0] == 0 and {"model.safetensors", "config.json", "README.md"} <= {
                p.name for p in (tmp() / "stage").iterdir()}),
        C("publish merge of a full model", "publish", "{model}", "org/name", "--dry_run", "--merge",
          says=r"merge"),
    ]

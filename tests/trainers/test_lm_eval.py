"""lm-evaluation-harness runs the `llada` model on tiny local tasks of each kind, before and after fine-tuning."""

import json
import textwrap

import pytest
import torch
from datasets import Dataset

pytest.importorskip("lm_eval")
import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import trainers.lm_eval_llada  # noqa: E402,F401  (registers "llada")
from tests.trainers.test_sft import sft_config  # noqa: E402
from tests.utils import tiny_chat_tokenizer, tiny_model, words  # noqa: E402
from trainers import MaskedDiffusionSFTTrainer  # noqa: E402

STOP = "t59"


def tiny_task(n: int = 8):
    """Questions of three tokens, each with one answer token; four choices (chance 0.25)."""
    generator = torch.Generator().manual_seed(0)
    questions = torch.randint(0, 40, (n, 3), generator=generator).tolist()
    answers = torch.randperm(16, generator=generator)[:n].add(40).tolist()
    rows = []
    for question, answer in zip(questions, answers):
        distractors = [a for a in answers if a != answer][:3]
        choices = sorted([answer, *distractors])
        rows.append({"question": words(question), "answer": f"t{answer}", "choices": [f"t{c}" for c in choices],
                     "label": choices.index(answer)})
    return rows


def write_tasks(folder, rows):
    data = folder / "tiny.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (folder / "tiny_mc.yaml").write_text("task: tiny_mc\n" + common + textwrap.dedent("""
        output_type: multiple_choice
        doc_to_text: "{{question}}"
        doc_to_choice: "{{choices}}"
        doc_to_target: "{{label}}"
        metric_list:
          - metric: acc
        """))
    (folder / "tiny_gen.yaml").write_text("task: tiny_gen\n" + common + textwrap.dedent(f"""
        output_type: generate_until
        doc_to_text: "{{{{question}}}}"
        doc_to_target: "{{{{answer}}}}"
        generation_kwargs:
          until: ["{STOP}"]
          max_gen_toks: 4
        filter_list:
          - name: strip
            filter:
              - function: remove_whitespace
              - function: take_first
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
        """))


def evaluate(folder, tasks_dir, **model_args):
    results = lm_eval.simple_evaluate(
        model="llada", model_args={"pretrained": str(folder), "mc_num": 8, "batch_size": 4, "steps": 4, **model_args},
        tasks=["tiny_mc", "tiny_gen"], task_manager=TaskManager(include_path=str(tasks_dir)), log_samples=False,
    )["results"]
    return results["tiny_mc"]["acc,none"], results["tiny_gen"]["exact_match,strip"]


def train_on_task(model, rows, tmp_path, **kwargs):
    dataset = Dataset.from_dict({"prompt": [r["question"] for r in rows],
                                 "completion": [f" {r['answer']} {STOP}" for r in rows]})
    trainer = MaskedDiffusionSFTTrainer(model, sft_config(tmp_path / "train", per_device_train_batch_size=8,
                                                          **{"max_steps": 300, "learning_rate": 3e-3, "warmup_steps": 10,
                                                             **kwargs.pop("config", {})}),
                                        train_dataset=dataset, processing_class=tiny_chat_tokenizer(), **kwargs)
    trainer.train()
    return trainer


@pytest.mark.slow
@pytest.mark.converges
def test_fine_tuned_model_beats_chance_on_both_task_kinds(tmp_path):
    rows = tiny_task()
    write_tasks(tmp_path, rows)
    model = tiny_model(d_model=64, mlp_hidden_size=128)
    model.save_pretrained(tmp_path / "before")
    tiny_chat_tokenizer().save_pretrained(tmp_path / "before")
    mc_before, gen_before = evaluate(tmp_path / "before", tmp_path)
    trainer = train_on_task(model, rows, tmp_path)
    trainer.save_model(str(tmp_path / "after"))
    tiny_chat_tokenizer().save_pretrained(tmp_path / "after")
    mc_after, gen_after = evaluate(tmp_path / "after", tmp_path)
    assert gen_before == 0.0 and mc_before <= 0.5
    assert mc_after >= 0.75 and gen_after >= 0.75, (mc_after, gen_after)


@pytest.mark.slow
def test_lora_adapter_is_evaluated_on_its_base(tmp_path):
    from peft import LoraConfig

    rows = tiny_task()
    write_tasks(tmp_path, rows)
    base = tiny_model(d_model=64, mlp_hidden_size=128)
    base.save_pretrained(tmp_path / "base")
    tiny_chat_tokenizer().save_pretrained(tmp_path / "base")
    trainer = train_on_task(base, rows, tmp_path, peft_config=LoraConfig(r=16, lora_alpha=32),
                            config={"learning_rate": 3e-3})
    trainer.model.save_pretrained(tmp_path / "adapter")
    mc_base, _ = evaluate(tmp_path / "base", tmp_path)
    mc_adapter, gen_adapter = evaluate(tmp_path / "base", tmp_path, peft=str(tmp_path / "adapter"))
    assert mc_adapter > max(mc_base, 0.25) and mc_adapter >= 0.75, (mc_base, mc_adapter, gen_adapter)


def test_rolling_loglikelihood_is_the_unconditional_bound(tmp_path):
    from lm_eval.api.instance import Instance

    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    tiny_chat_tokenizer().save_pretrained(tmp_path / "m")
    lm = trainers.lm_eval_llada.LLaDAEvalModel(pretrained=str(tmp_path / "m"), mc_num="16", batch_size="2")
    request = Instance(request_type="loglikelihood_rolling", doc={}, arguments=("t1 t2 t3 t4",), idx=0)
    value = lm.loglikelihood_rolling([request])[0]
    expected = model.log_likelihood([], [1, 2, 3, 4], mc_num=16).log_likelihood  # this tokenizer adds no BOS
    assert value == pytest.approx(expected, rel=1e-5)  # a log-likelihood: compared relatively


def test_unknown_model_args_raise(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    tiny_chat_tokenizer().save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="Unknown model args"):
        trainers.lm_eval_llada.LLaDAEvalModel(pretrained=str(tmp_path / "m"), num_beams=2)


@pytest.mark.slow
def test_evaluate_script_prints_results_and_generation_speed(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    rows = tiny_task()
    write_tasks(tmp_path, rows)
    tiny_model().save_pretrained(tmp_path / "m")
    tiny_chat_tokenizer().save_pretrained(tmp_path / "m")
    script = Path(__file__).resolve().parents[2] / "examples" / "evaluate.py"
    result = subprocess.run(
        [sys.executable, str(script), "--model", str(tmp_path / "m"), "--tasks", "tiny_mc,tiny_gen",
         "--include_path", str(tmp_path), "--mc_num", "4", "--steps", "4", "--output", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tiny_mc" in result.stdout and "tiny_gen" in result.stdout and "forward passes per token" in result.stdout
    summary = json.loads((tmp_path / "r.json").read_text())
    # 8 prompts x a 4-token canvas in 4 steps: one forward pass per token
    assert summary["speed"]["generated_tokens"] == 32
    assert summary["speed"]["forward_passes_per_token"] == 1.0


def test_eval_module_is_cheap_to_import_and_its_parser_follows_the_flag_conventions():
    import subprocess
    import sys

    code = ("import sys, llada_cli.evaluate; heavy = [m for m in ('torch', 'lm_eval', 'trainers', 'transformers') "
            "if m in sys.modules]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr

    from llada_cli.evaluate import build_parser

    parser = build_parser()
    flags = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    for action in flags:
        assert action.help, action.dest
        if "_" in action.dest:
            assert {f"--{action.dest}", f"--{action.dest.replace('_', '-')}"} <= set(action.option_strings)
    names = {action.dest for action in flags}
    assert {"model", "peft", "tasks", "include_path", "apply_chat_template", "trust_remote_code", "device", "dtype",
            "log_samples", "output", "max_new_tokens", "steps", "block_length"} <= names
    args = parser.parse_args(["--model", "m", "--tasks", "t", "--apply-chat-template", "--max-new-tokens", "8",
                              "--limit", "0.5"])
    assert args.apply_chat_template and args.max_new_tokens == 8 and args.limit == 0.5
    assert parser.parse_args(["--model", "m", "--tasks", "t", "--limit", "5"]).limit == 5
    assert "(default: 8)" in parser.format_help()  # --batch_size
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--tasks", "t", "--dtype", "float64"])


def test_eval_needs_an_output_file_for_the_samples():
    from llada_cli.evaluate import main

    with pytest.raises(ValueError, match="--log_samples .* --output"):
        main(["--model", "m", "--tasks", "t", "--log_samples"])


@pytest.mark.slow
def test_eval_names_unknown_tasks_before_loading_the_model(tmp_path):
    from pathlib import Path

    from llada_cli.evaluate import main

    tasks = Path(__file__).resolve().parents[1] / "fixtures" / "lm_eval_tasks"
    missing = str(tmp_path / "no-model")  # never loaded: the task names are checked first
    with pytest.raises(ValueError) as error:
        main(["--model", missing, "--tasks", "toy_chat_sum,no_such_task", "--include_path", str(tasks)])
    message = str(error.value)
    assert "unknown task 'no_such_task'" in message and "toy_chat_sum" not in message
    assert "lm-eval ls tasks" in message and "--include_path" in message
    with pytest.raises(FileNotFoundError, match="--include_path"):
        main(["--model", missing, "--tasks", "toy_chat_sum", "--include_path", str(tmp_path / "none")])

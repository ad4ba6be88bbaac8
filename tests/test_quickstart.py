"""`llada-hf quickstart` fails loudly when fine-tuning does not beat the untrained model (CI relies on it)."""

import json

import pytest

from llada_cli.main import main
from llada_cli.quickstart import QUICK, build_parser


def test_quick_settings_are_a_run_that_can_learn():
    args = build_parser().parse_args(["--quick"])
    assert args.quick and QUICK["sft_steps"] >= 100 and QUICK["eval_prompts"] >= 20
    # both spellings of the output folder
    assert build_parser().parse_args(["--output-dir", "x"]).output_dir == "x"


@pytest.mark.slow
def test_a_quickstart_that_does_not_learn_exits_1_with_one_line(tmp_path, capfd):
    output = tmp_path / "qs"
    # a learning rate of 0 leaves the model as it was (LoRA starts as the identity): accuracy after == before
    code = main(["quickstart", "--output_dir", str(output), "--pretrain_steps", "2", "--sft_steps", "2",
                 "--sft_learning_rate", "0", "--eval_prompts", "5", "--digits", "3"])
    out, err = capfd.readouterr()
    assert code == 1
    assert out.splitlines()[0].endswith(f"writing everything under {output.resolve()} (--output_dir moves it)")
    lines = [line for line in err.splitlines() if line.startswith("llada-hf quickstart:")]
    assert len(lines) == 1 and "did not improve" in lines[0]
    before = json.loads((output / "summary.json").read_text())["accuracy_before"]
    assert f"accuracy {before:.1%} before SFT, {before:.1%} after" in lines[0]
    assert "Traceback" not in err
    summary = json.loads((output / "summary.json").read_text())  # everything is still written
    assert summary["learned"] is False and summary["accuracy_after"] <= summary["accuracy_before"]
    assert (output / "hub" / "README.md").exists() and (output / "loss.png").exists()

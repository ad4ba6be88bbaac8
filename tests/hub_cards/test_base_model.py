"""An adapter's base model when publishing: checked before anything loads, named as the caller spells it
(`--base-model` on the command line, `base_model=` in Python), never looked up on the Hub when it is a folder; and
no temporary `llada-publish-*` folder outlives a publish, whether it succeeds, fails or is terminated."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from peft import LoraConfig, get_peft_model

from hub_cards import BaseModelError, publish, resolve_base_model
from llada_cli.publish import build_parser, main
from tests.hub_cards.test_publishing import saved_model
from tests.utils import tiny_chat_tokenizer, tiny_model

REPO = Path(__file__).resolve().parents[2]


def adapter_folder(folder: Path, base: str | None) -> Path:
    """A LoRA adapter (not the identity) whose adapter_config.json names `base` as its base model."""
    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["q_proj", "up_proj"]))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    model.save_pretrained(folder)
    tiny_chat_tokenizer().save_pretrained(folder)
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base
    config_path.write_text(json.dumps(config))
    return folder


@pytest.fixture
def base_folder(tmp_path) -> Path:
    saved_model(tmp_path / "base")
    return tmp_path / "base"


def leftovers(root: Path) -> list[str]:
    return sorted(path.name for path in root.glob("llada-publish-*"))


@pytest.fixture
def nothing_loads(monkeypatch) -> None:
    """Loading a model or an adapter fails the test: the base must be checked before."""
    from peft import PeftModel
    from transformers import AutoModel

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the base model was checked")

    monkeypatch.setattr(AutoModel, "from_pretrained", refuse)
    monkeypatch.setattr(PeftModel, "from_pretrained", refuse)


def base_cases(tmp_path: Path) -> dict:
    """name -> (the adapter's recorded base, the base passed, a regex of the message without the setting's name)."""
    return {
        "none recorded": (None, None, r"names no base model \(base_model_name_or_path in adapter_config.json is None"),
        "missing folder": (None, str(tmp_path / "nowhere"), r"'.*nowhere'.*: no such folder"),
        "not cached": (None, "org/not-in-the-cache", r"'org/not-in-the-cache'.*no model of that Hub id in the local "
                                                     r"cache \(offline"),
        "not a model folder": (None, str(tmp_path), r"the folder has no config.json"),
        "recorded folder gone": (str(tmp_path / "gone"), None, r"'.*gone'.*no such folder"),
    }


CASES = ["none recorded", "missing folder", "not cached", "not a model folder", "recorded folder gone"]


@pytest.mark.parametrize("case", CASES)
def test_merge_with_an_unusable_base_fails_before_loading_naming_base_model_argument(tmp_path, nothing_loads,
                                                                                      temp_root, case):
    recorded, given, message = base_cases(tmp_path)[case]
    adapter = adapter_folder(tmp_path / "adapter", recorded)
    with pytest.raises(BaseModelError, match=message) as info:
        publish(adapter, "org/merged", merge=True, base_model=given, dry_run=True)
    text = str(info.value)
    assert "base_model=" in text and "--base-model" not in text and "\n" not in text
    assert leftovers(temp_root) == []


@pytest.mark.parametrize("case", CASES)
def test_cli_merge_with_an_unusable_base_is_one_line_naming_the_flag(tmp_path, nothing_loads, temp_root, capsys,
                                                                     case):
    recorded, given, message = base_cases(tmp_path)[case]
    adapter = adapter_folder(tmp_path / "adapter", recorded)
    argv = [str(adapter), "org/merged", "--merge", "--dry-run"] + (["--base-model", given] if given else [])
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert re.search(message, captured.err), captured.err
    assert "--base-model" in captured.err and "base_model=" not in captured.err
    assert leftovers(temp_root) == []


def test_an_adapter_published_without_merge_needs_its_base_by_hub_id(tmp_path, base_folder, capsys):
    adapter = adapter_folder(tmp_path / "adapter", str(base_folder))
    with pytest.raises(ValueError, match=r"adapter's base model '.*base'.*is a local path.*Hub id") as info:
        publish(adapter, "org/lora", dry_run=True)
    assert "base_model=" in str(info.value) and "merge=True" in str(info.value)
    with pytest.raises(ValueError, match=r"base_model='.*base' is a local path"):
        publish(adapter, "org/lora", base_model=str(base_folder), dry_run=True)
    assert main([str(adapter), "org/lora", "--dry-run", "--base_model", str(base_folder)]) == 2
    err = capsys.readouterr().err
    assert f"--base-model {str(base_folder)!r} is a local path" in err and "--merge" in err
    assert "base_model=" not in err and err.count("\n") == 1
    # a recorded name the training record calls a local folder is not taken for a Hub id, even if it reads as one
    renamed = adapter_folder(tmp_path / "adapter-2", "runs/pretrain")
    (renamed / "llada_training.json").write_text(json.dumps({"base_model": {"name": "pretrain", "hub_id": None}}))
    with pytest.raises(ValueError, match="'runs/pretrain'.*is a local path"):
        publish(renamed, "org/lora", dry_run=True)
    with pytest.raises(BaseModelError, match="trained from a local folder"):
        resolve_base_model(renamed, merge=True)
    assert publish(renamed, "org/lora", base_model="org/base", dry_run=True).kind == "adapter"


def test_merging_from_a_local_folder_never_contacts_the_network(tmp_path, base_folder, temp_root, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # online: any lookup would go out
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    adapter = adapter_folder(tmp_path / "adapter", str(base_folder))
    for base_model in (str(base_folder), None):  # passed, or the adapter's own
        result = publish(adapter, "org/merged", merge=True, base_model=base_model, dry_run=True)
        assert result.kind == "model" and "model.safetensors" in result.files
        assert str(tmp_path) not in result.card and "`base` (a local folder)" in result.card
        assert ModelCard(result.card).data.base_model is None
    assert attempts == []
    assert leftovers(temp_root) == []


def test_no_temporary_folder_remains_after_a_merge_that_succeeds_or_fails(tmp_path, base_folder, temp_root,
                                                                          monkeypatch, capsys):
    from peft import PeftModel

    adapter = adapter_folder(tmp_path / "adapter", str(base_folder))
    assert publish(adapter, "org/merged", merge=True, dry_run=True).staged is None
    assert leftovers(temp_root) == []

    def broken(*args, **kwargs):
        raise RuntimeError("the merge broke half-way")

    monkeypatch.setattr(PeftModel, "from_pretrained", broken)
    with pytest.raises(RuntimeError, match="half-way"):
        publish(adapter, "org/merged", merge=True, dry_run=True)
    assert leftovers(temp_root) == []
    assert main([str(adapter), "org/merged", "--merge", "--dry-run", "--staging-dir", str(tmp_path / "kept")]) == 1
    assert "RuntimeError: the merge broke half-way" in capsys.readouterr().err
    assert leftovers(temp_root) == []


def test_a_folder_left_by_a_killed_publish_is_removed_by_the_next_one(tmp_path, temp_root):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = temp_root / f"llada-publish-{gone.pid}-abc"
    (stale / "merged").mkdir(parents=True)
    (stale / "merged" / "model.safetensors").write_bytes(b"16 GB, in real life")
    alive = temp_root / f"llada-publish-{os.getppid()}-def"  # a process that still runs: its folder stays
    alive.mkdir()
    saved_model(tmp_path / "model")
    publish(tmp_path / "model", "org/tiny", dry_run=True)
    assert leftovers(temp_root) == [alive.name]


TERMINATED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import hub_cards.publish
    from llada_cli.publish import main

    publishing = sys.modules["hub_cards.publish"]  # the package's `publish` attribute is the function

    def slow_merge(folder, output, base, *args, **kwargs):
        output.mkdir()
        (output / "model.safetensors").write_bytes(b"half-written")
        Path(sys.argv[1]).write_text("merging")
        time.sleep(60)

    publishing.merge_adapter = slow_merge
    sys.exit(main(sys.argv[2:]))
    """
)


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP"])
def test_a_terminated_cli_publish_removes_its_temporary_folders(tmp_path, base_folder, signal_name):
    if not hasattr(signal, signal_name):
        pytest.skip(f"no {signal_name} here")
    adapter = adapter_folder(tmp_path / "adapter", str(base_folder))
    root = tmp_path / "tmp"
    root.mkdir()
    ready = tmp_path / "ready"
    env = {**os.environ, "TMPDIR": str(root), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", TERMINATED, str(ready), str(adapter), "org/merged", "--merge",
                                "--dry-run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), process.communicate(timeout=60)
    assert len(leftovers(root)) == 1  # the merge is under way in its temporary folder
    process.send_signal(getattr(signal, signal_name))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "terminated" in err and "Traceback" not in err and err.count("\n") == 1
    assert leftovers(root) == []


def test_cli_parser_takes_both_spellings_documents_every_flag_and_imports_nothing_heavy(tmp_path):
    parser = build_parser()
    for action in parser._actions:
        assert action.help, action.dest
    for spelling in ("--base-model", "--base_model"):
        assert parser.parse_args(["f", "org/x", spelling, "org/base"]).base_model == "org/base"
    assert parser.parse_args(["f", "org/x", "--staging_dir", "s", "--dry_run"]).staging_dir == "s"
    text = parser.format_help()
    assert "--base_model" in text and "--base-model" in text and "(default: apache-2.0)" in text
    script = ("import sys, time\nstart = time.perf_counter()\nimport llada_cli.publish as cli\n"
              "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
              "print('SECONDS', time.perf_counter() - start)\n"
              "print('HEAVY', sorted(m for m in ('torch', 'huggingface_hub', 'transformers', 'hub_cards') "
              "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout and "--base-model" in result.stdout
    seconds = float(result.stdout.split("SECONDS ")[1].split()[0])
    assert seconds < 1.0, seconds


def test_cli_rejects_a_local_path_as_a_card_dataset(tmp_path, capsys):
    saved_model(tmp_path / "model")
    capsys.readouterr()
    assert main([str(tmp_path / "model"), "org/x", "--dry-run", "--dataset", str(tmp_path / "data.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "--dataset" in err and "not a Hub dataset id" in err and err.count("\n") == 1
    with pytest.raises(ValueError, match=r"datasets=\['data.jsonl'\] is not a Hub dataset id"):
        publish(tmp_path / "model", "org/x", dry_run=True, datasets=["data.jsonl"])

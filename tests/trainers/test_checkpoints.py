import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainerCallback

from tests.trainers.test_pretraining import config, repetitive_corpus
from tests.trainers.test_sft import sft_config, variable_length_set
from tests.utils import run_two_cpu_processes, tiny_chat_tokenizer, tiny_model
from trainers import MaskedDiffusionSFTTrainer, MaskedDiffusionTrainer
from trainers.checkpoints import missing_checkpoint_parts

WORKER = Path(__file__).with_name("checkpoint_worker.py")


def checkpointing_trainer(tmp_path, **overrides) -> MaskedDiffusionTrainer:
    """Pre-training for 6 steps with a checkpoint every 2; the output directory is tmp_path / "run"."""
    values = {"max_steps": 6, "save_strategy": "steps", "save_steps": 2, **overrides}
    return MaskedDiffusionTrainer(tiny_model(), config(Path(tmp_path), **values), train_dataset=repetitive_corpus())


def checkpointing_sft_trainer(tmp_path, **overrides) -> MaskedDiffusionSFTTrainer:
    """SFT for 2 steps with a checkpoint every 2; the output directory is tmp_path / "sft"."""
    values = {"max_steps": 2, "save_strategy": "steps", "save_steps": 2, **overrides}
    return MaskedDiffusionSFTTrainer(tiny_model(), sft_config(Path(tmp_path), **values),
                                     train_dataset=variable_length_set(), processing_class=tiny_chat_tokenizer())


@pytest.fixture(scope="module")
def complete_checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("complete")
    checkpointing_trainer(run, max_steps=2).train()
    return run / "run" / "checkpoint-2"


@pytest.mark.parametrize("build", [checkpointing_trainer, checkpointing_sft_trainer], ids=["pretraining", "sft"])
def test_a_checkpoint_is_written_aside_and_gets_its_name_only_when_complete(tmp_path, build):
    trainer = build(tmp_path, max_steps=2)
    run_dir = Path(trainer.args.output_dir)
    seen_while_saving = []
    save_rng_state = trainer._save_rng_state

    def looking_save_rng_state(output_dir):  # the save's last step before trainer_state.json
        save_rng_state(output_dir)
        seen_while_saving.append(sorted(p.name for p in run_dir.iterdir() if p.is_dir()))

    trainer._save_rng_state = looking_save_rng_state
    trainer.train()
    assert seen_while_saving == [["_checkpoint-2.partial"]]
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["checkpoint-2"]
    assert missing_checkpoint_parts(str(run_dir / "checkpoint-2")) == []


def test_resume_skips_a_newer_incomplete_checkpoint_with_a_warning(tmp_path, caplog):
    checkpointing_trainer(tmp_path, max_steps=2).train()
    run_dir = tmp_path / "run"
    shutil.copytree(run_dir / "checkpoint-2", run_dir / "checkpoint-4")
    (run_dir / "checkpoint-4" / "trainer_state.json").unlink()  # as a save killed before its last file leaves it

    trainer = checkpointing_trainer(tmp_path, max_steps=4)
    loaded, load = [], trainer._load_from_checkpoint
    trainer._load_from_checkpoint = lambda checkpoint, model=None: (loaded.append(checkpoint), load(checkpoint, model))
    with caplog.at_level(logging.WARNING, logger="trainers.checkpoints"):
        trainer.train(resume_from_checkpoint=True)
    assert loaded == [str(run_dir / "checkpoint-2")]
    assert "skipped the incomplete checkpoint-4 (it lacks trainer_state.json)" in caplog.text
    assert trainer.state.global_step == 4
    assert missing_checkpoint_parts(str(run_dir / "checkpoint-4")) == []  # the broken folder was replaced


def test_resuming_from_an_incomplete_checkpoint_path_names_what_is_missing(tmp_path):
    checkpointing_trainer(tmp_path, max_steps=2).train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    (checkpoint / "optimizer.pt").unlink()
    with pytest.raises(ValueError, match=r"checkpoint-2: the checkpoint is incomplete, it lacks the optimizer state"):
        checkpointing_trainer(tmp_path, max_steps=4).train(resume_from_checkpoint=str(checkpoint))


def test_resume_without_any_complete_checkpoint_says_what_each_lacks(tmp_path):
    (tmp_path / "run" / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"No complete checkpoint .* checkpoint-3 \(it lacks trainer_state.json"):
        checkpointing_trainer(tmp_path).train(resume_from_checkpoint=True)


def test_a_staging_folder_left_by_a_killed_save_is_removed_at_the_next_save(tmp_path, caplog):
    leftover = tmp_path / "run" / "_checkpoint-8.partial" / "checkpoint-8"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half")
    with caplog.at_level(logging.WARNING, logger="trainers.checkpoints"):
        checkpointing_trainer(tmp_path, max_steps=2).train()
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint-2"]
    assert "_checkpoint-8.partial: a checkpoint save that never finished" in caplog.text


@pytest.mark.parametrize("damage, reported", [
    (lambda c: (c / "trainer_state.json").unlink(), "trainer_state.json"),
    (lambda c: (c / "trainer_state.json").write_text("{"), "trainer_state.json (it is not readable JSON)"),
    (lambda c: (c / "model.safetensors").unlink(), "the model weights"),
    (lambda c: os.truncate(c / "model.safetensors", 1000), "a whole model.safetensors (it is truncated)"),
    (lambda c: (c / "optimizer.pt").unlink(), "the optimizer state (optimizer.pt)"),
    (lambda c: os.truncate(c / "optimizer.pt", 1000), "a whole optimizer.pt (it is truncated)"),
    (lambda c: (c / "scheduler.pt").unlink(), "the scheduler state (scheduler.pt)"),
    (lambda c: (c / "checkpoint-is-incomplete.txt").write_text("saving"), "a finished save"),
], ids=["no-state", "broken-state", "no-weights", "truncated-weights", "no-optimizer", "truncated-optimizer",
        "no-scheduler", "jit-save-unfinished"])
def test_a_checkpoint_is_complete_when_every_piece_the_trainer_loads_is_whole(complete_checkpoint, tmp_path, damage,
                                                                              reported):
    assert missing_checkpoint_parts(str(complete_checkpoint)) == []
    checkpoint = Path(shutil.copytree(complete_checkpoint, tmp_path / "checkpoint-2"))
    damage(checkpoint)
    assert [part for part in missing_checkpoint_parts(str(checkpoint)) if part.startswith(reported)]


def test_rng_states_are_optional_and_save_only_model_needs_no_optimizer(complete_checkpoint, tmp_path):
    checkpoint = Path(shutil.copytree(complete_checkpoint, tmp_path / "checkpoint-2"))
    for name in ("rng_state.pth", "optimizer.pt", "scheduler.pt"):
        (checkpoint / name).unlink()
    assert missing_checkpoint_parts(str(checkpoint), with_optimizer=False) == []


def test_rotation_and_the_best_checkpoint_are_those_of_transformers(tmp_path):
    """save_total_limit and load_best_model_at_end see the same checkpoints as with the Trainer's own saves."""

    class Record(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_save(self, args, state, control, **kwargs):
            checkpoint = Path(args.output_dir, f"checkpoint-{state.global_step}")
            saved = json.loads((checkpoint / "trainer_state.json").read_text())
            best, best_saved = (os.path.relpath(path, args.output_dir) if path else None
                                for path in (state.best_model_checkpoint, saved["best_model_checkpoint"]))
            self.seen.append((state.global_step, best, best_saved, sorted(os.listdir(args.output_dir))))

    def run(trainer_class, folder):
        record = Record()
        trainer = trainer_class(
            tiny_model(),
            config(tmp_path / folder, max_steps=8, save_strategy="steps", save_steps=2, eval_strategy="steps",
                   eval_steps=2, save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="eval_loss",
                   greater_is_better=True, per_device_eval_batch_size=16),  # the loss falls: the first is "best"
            train_dataset=repetitive_corpus(), eval_dataset=repetitive_corpus(16), callbacks=[record],
        )
        trainer.train()
        return record.seen, sorted(os.listdir(trainer.args.output_dir)), trainer.state.best_model_checkpoint

    plain = type("PlainSaves", (MaskedDiffusionTrainer,), {"_save_checkpoint": Trainer._save_checkpoint})
    ours, theirs = run(MaskedDiffusionTrainer, "atomic"), run(plain, "plain")
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]
    assert os.path.basename(ours[2]) == os.path.basename(theirs[2])
    assert any(best != f"checkpoint-{step}" for step, best, _, _ in ours[0])  # the best was not always the newest


def test_the_hub_gets_the_checkpoint_once_it_is_complete_under_its_name(tmp_path, monkeypatch):
    pushed = []
    monkeypatch.setattr(Trainer, "_push_from_checkpoint",
                        lambda self, folder: pushed.append((folder, missing_checkpoint_parts(folder))))
    trainer = checkpointing_trainer(tmp_path, max_steps=2)
    trainer.args.push_to_hub = True  # set after __init__: no repository is created
    trainer.train()
    assert pushed == [(str(tmp_path / "run" / "checkpoint-2"), [])]


@pytest.mark.slow
def test_a_run_killed_during_a_save_resumes_from_the_last_complete_checkpoint_with_the_same_weights(tmp_path):
    run_dir, marker = tmp_path / "killed" / "run", tmp_path / "saving-checkpoint-4"
    with open(tmp_path / "killed.log", "w") as log:
        killed = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / "killed"), "hang-in-save", "4",
                                   str(marker)], stdout=log, stderr=subprocess.STDOUT)
    try:
        uninterrupted = checkpointing_trainer(tmp_path / "uninterrupted")  # meanwhile, the reference run
        uninterrupted.train()
        deadline = time.monotonic() + 300
        while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), (tmp_path / "killed.log").read_text()[-4000:]
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert sorted(os.listdir(run_dir)) == ["_checkpoint-4.partial", "checkpoint-2"]  # no checkpoint-4 to trip on

    resumed = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "killed"), "resume", str(tmp_path / "out")],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "_checkpoint-4.partial: a checkpoint save that never finished" in resumed.stderr
    result = torch.load(tmp_path / "out")
    assert result["loaded"] == [str(run_dir / "checkpoint-2")]
    assert sorted(os.listdir(run_dir)) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    expected = uninterrupted.model.state_dict()
    assert result["state"].keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(result["state"][name], tensor), name


@pytest.mark.slow
def test_two_processes_publish_one_checkpoint_holding_both_rng_states(tmp_path):
    run_two_cpu_processes(WORKER, str(tmp_path), "distributed", str(tmp_path / "result.json"))
    seen = json.loads((tmp_path / "result.json").read_text())
    assert seen["output_dir"] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert {"rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"} <= set(seen["checkpoint-6"])

"""Run by tests/trainers/test_checkpoints.py in a process of its own, so that the test can kill it during a save.

    checkpoint_worker.py RUN_DIR hang-in-save STEP MARKER
        pre-train; while saving the checkpoint of step STEP, once the weights, optimizer, scheduler and RNG states are
        written (trainer_state.json is not yet), create MARKER and sleep until killed.
    checkpoint_worker.py RUN_DIR resume RESULT
        pre-train with train(resume_from_checkpoint=True); save the checkpoints loaded and the final weights to RESULT.
    torchrun --nproc_per_node 2 checkpoint_worker.py RUN_DIR distributed RESULT
        pre-train 4 steps, then resume to 6; rank 0 saves what the output directory and checkpoint-6 hold to RESULT.
"""

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.trainers.test_checkpoints import checkpointing_trainer  # noqa: E402


def hang_in_save(run_dir: Path, step: int, marker: Path) -> None:
    trainer = checkpointing_trainer(run_dir)
    save_rng_state = trainer._save_rng_state

    def slow_save_rng_state(output_dir):
        save_rng_state(output_dir)
        if trainer.state.global_step == step:
            marker.write_text(output_dir)
            time.sleep(600)

    trainer._save_rng_state = slow_save_rng_state
    trainer.train()


def resume(run_dir: Path, result: Path) -> None:
    trainer = checkpointing_trainer(run_dir)
    loaded, load = [], trainer._load_from_checkpoint

    def recording_load(checkpoint, model=None):
        loaded.append(checkpoint)
        return load(checkpoint, model)

    trainer._load_from_checkpoint = recording_load
    trainer.train(resume_from_checkpoint=True)
    torch.save({"loaded": loaded, "state": trainer.model.state_dict()}, result)


def distributed(run_dir: Path, result: Path) -> None:
    checkpointing_trainer(run_dir, max_steps=4, per_device_train_batch_size=4).train()
    checkpointing_trainer(run_dir, per_device_train_batch_size=4).train(resume_from_checkpoint=True)
    if int(os.environ["RANK"]) == 0:
        output_dir = run_dir / "run"
        result.write_text(json.dumps({"output_dir": sorted(os.listdir(output_dir)),
                                      "checkpoint-6": sorted(os.listdir(output_dir / "checkpoint-6"))}))


if __name__ == "__main__":
    run_dir, mode = Path(sys.argv[1]), sys.argv[2]
    if mode == "hang-in-save":
        hang_in_save(run_dir, int(sys.argv[3]), Path(sys.argv[4]))
    elif mode == "resume":
        resume(run_dir, Path(sys.argv[3]))
    else:
        distributed(run_dir, Path(sys.argv[3]))

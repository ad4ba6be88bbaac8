"""Run by tests/trainers/test_grpo.py under torchrun with 2 CPU processes (gloo): two diffu-GRPO steps, then each rank
writes its logged metrics, its parameters and its prompt-mask seeds for the test to compare."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.trainers.test_grpo import trainer_for  # noqa: E402


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    trainer = trainer_for(out, per_device_train_batch_size=4, num_generations=4, max_steps=2, beta=0.05)
    initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    seeds = []
    generate_and_score = trainer._generate_and_score_completions

    def recording(inputs):
        batch = generate_and_score(inputs)
        seeds.append(batch["mask_seeds"].tolist())
        return batch

    trainer._generate_and_score_completions = recording
    trainer.train()
    torch.save({
        "world_size": trainer.args.world_size,
        "logs": [e for e in trainer.state.log_history if "reward" in e],
        "state": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        "initial": initial,
        "mask_seeds": seeds[:1],
    }, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

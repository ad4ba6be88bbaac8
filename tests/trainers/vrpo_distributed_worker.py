"""Run by tests/trainers/test_vrpo.py under torchrun with 2 CPU processes (gloo): a few VRPO steps, then each rank
writes its logged losses and parameters for the test to compare."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.trainers.test_vrpo import pairs_set, vrpo_config  # noqa: E402
from tests.utils import tiny_chat_tokenizer, tiny_model  # noqa: E402
from trainers import VRPOTrainer  # noqa: E402


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    trainer = VRPOTrainer(tiny_model(), args=vrpo_config(out, per_device_train_batch_size=2, max_steps=3,
                                                         elbo_samples=2),
                          train_dataset=pairs_set(), processing_class=tiny_chat_tokenizer())
    trainer.train()
    torch.save({
        "world_size": trainer.args.world_size,
        "logs": [e for e in trainer.state.log_history if "loss" in e],
        "state": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
    }, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

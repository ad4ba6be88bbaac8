"""Run by tests/trainers/test_distributed.py under torchrun with 2 CPU processes (gloo): a few pre-training and
SFT steps, then each rank writes its logged losses and parameters for the test to compare."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.trainers.test_pretraining import config, repetitive_corpus  # noqa: E402
from tests.trainers.test_sft import sft_config, variable_length_set  # noqa: E402
from tests.utils import tiny_chat_tokenizer, tiny_model  # noqa: E402
from trainers import MaskedDiffusionSFTTrainer, MaskedDiffusionTrainer  # noqa: E402


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    results = {}
    pretrain = MaskedDiffusionTrainer(
        tiny_model(), config(out / "pretrain", per_device_train_batch_size=4, max_steps=3),
        train_dataset=repetitive_corpus(),
    )
    pretrain.train()
    sft = MaskedDiffusionSFTTrainer(
        tiny_model(), sft_config(out / "sft", per_device_train_batch_size=2, max_steps=3),
        train_dataset=variable_length_set(), processing_class=tiny_chat_tokenizer(),
    )
    sft.train()
    for name, trainer in (("pretrain", pretrain), ("sft", sft)):
        results[name] = {
            "world_size": trainer.args.world_size,
            "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
            "state": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        }
    torch.save(results, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

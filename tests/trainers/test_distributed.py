from pathlib import Path

import pytest
import torch

from tests.trainers.test_pretraining import config, repetitive_corpus
from tests.utils import run_two_cpu_processes, tiny_model
from trainers import MaskedDiffusionTrainer

WORKER = Path(__file__).with_name("distributed_worker.py")


@pytest.mark.slow
def test_two_cpu_processes_agree_on_loss_and_weights(tmp_path):
    ranks = run_two_cpu_processes(WORKER, str(tmp_path))
    for name in ("pretrain", "sft"):
        first, second = ranks[0][name], ranks[1][name]
        assert first["world_size"] == second["world_size"] == 2
        assert len(first["losses"]) == 3 and first["losses"] == second["losses"]
        for key, tensor in first["state"].items():
            assert torch.equal(tensor, second["state"][key]), (name, key)
        # and they did train: the weights left their initial values
        initial = tiny_model().state_dict()
        assert any(not torch.equal(first["state"][key], initial[key]) for key in initial)
    # 2 processes x batch 4 is one batch of 8: the same loss as a single process with batch 8
    single = MaskedDiffusionTrainer(tiny_model(), config(tmp_path / "single", per_device_train_batch_size=8,
                                                         max_steps=3), train_dataset=repetitive_corpus())
    single.train()
    single_losses = [e["loss"] for e in single.state.log_history if "loss" in e]
    assert ranks[0]["pretrain"]["losses"] == pytest.approx(single_losses, rel=1e-5)

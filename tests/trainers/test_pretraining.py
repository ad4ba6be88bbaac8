import pytest
import torch
from datasets import Dataset

import trainers.base as trainer_base
from tests.utils import tiny_model
from trainers import MaskedDiffusionConfig, MaskedDiffusionTrainer, pack_dataset

EOS = 61


def repetitive_corpus(documents: int = 64) -> Dataset:
    """Documents that count up from a random start: a pattern a tiny model learns in a few hundred steps."""
    generator = torch.Generator().manual_seed(0)
    starts = torch.randint(0, 20, (documents,), generator=generator).tolist()
    return Dataset.from_dict({"input_ids": [list(range(s, s + 30)) for s in starts]})


def config(tmp_path, **overrides) -> MaskedDiffusionConfig:
    values = dict(output_dir=str(tmp_path / "run"), block_size=32, per_device_train_batch_size=8, max_steps=4,
                  learning_rate=3e-3, logging_steps=1, report_to="none", save_strategy="no", seed=0,
                  random_length_probability=0.0, disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
    values.update(overrides)
    return MaskedDiffusionConfig(**values)


def test_documents_are_packed_into_blocks_with_eos_between_them():
    packed = pack_dataset(Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5], [6, 7, 8, 9]]}), 4, EOS)
    assert packed["input_ids"] == [[1, 2, 3, EOS], [4, 5, EOS, 6], [7, 8, 9, EOS]]


def test_raw_text_needs_a_tokenizer_and_a_known_column():
    with pytest.raises(ValueError, match="processing_class"):
        pack_dataset(Dataset.from_dict({"text": ["a b"]}), 4, EOS)
    with pytest.raises(ValueError, match="dataset_text_field"):
        pack_dataset(Dataset.from_dict({"content": ["a b"]}), 4, EOS)


def test_trainer_loss_is_the_reference_objective_of_its_noise(tmp_path, monkeypatch):
    seen = {}

    def recording_forward_process(input_ids, mask_token_id, p_mask, **kwargs):
        noisy, masked = forward_process(input_ids, mask_token_id, p_mask, **kwargs)
        seen.update(clean=input_ids, noisy=noisy, masked=masked, p_mask=p_mask)
        return noisy, masked

    forward_process = trainer_base.forward_process
    monkeypatch.setattr(trainer_base, "forward_process", recording_forward_process)
    model = tiny_model().train()
    trainer = MaskedDiffusionTrainer(model, config(tmp_path), train_dataset=repetitive_corpus())
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    loss = trainer.compute_loss(model, batch)

    logits = model(seen["noisy"]).logits.log_softmax(-1)
    b, l = seen["clean"].shape
    expected = 0.0
    for row in range(b):
        for i in range(l):
            if seen["masked"][row, i]:
                assert seen["noisy"][row, i] == 60
                expected += -logits[row, i, seen["clean"][row, i]].item() / seen["p_mask"][row].item()
    assert seen["masked"].any()
    assert loss.item() == pytest.approx(expected / (b * l), rel=1e-5)


def test_eval_loss_uses_the_same_noise_every_time(tmp_path):
    model = tiny_model()
    trainer = MaskedDiffusionTrainer(model, config(tmp_path, per_device_eval_batch_size=8),
                                     train_dataset=repetitive_corpus(), eval_dataset=repetitive_corpus(16))
    first, second = trainer.evaluate()["eval_loss"], trainer.evaluate()["eval_loss"]
    assert first == second


@pytest.mark.slow
@pytest.mark.converges
def test_a_few_hundred_steps_drive_the_loss_well_below_its_start(tmp_path):
    model = tiny_model()
    corpus = repetitive_corpus(256)
    trainer = MaskedDiffusionTrainer(
        model,
        config(tmp_path, max_steps=300, logging_steps=50, warmup_steps=10, learning_rate=1e-2,
               per_device_train_batch_size=16, per_device_eval_batch_size=64),
        train_dataset=corpus, eval_dataset=corpus,
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    # the bound starts near log(vocab) ~ 4.2 nats/token; the counting pattern brings it to about 2
    assert after < 0.6 * before, (before, after)


@pytest.mark.slow
def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_losses(tmp_path):
    def losses(run_dir, **extra):
        trainer = MaskedDiffusionTrainer(tiny_model(), config(run_dir, max_steps=6, save_strategy="steps",
                                                              save_steps=3), train_dataset=repetitive_corpus())
        trainer.train(**extra)
        return {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}

    uninterrupted = losses(tmp_path / "a")
    resumed = losses(tmp_path / "a", resume_from_checkpoint=str(tmp_path / "a" / "run" / "checkpoint-3"))
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-6), step


def test_evaluation_reports_the_likelihood_bound_from_the_models_estimator(tmp_path):
    import math

    model = tiny_model()
    eval_set = repetitive_corpus(8)
    trainer = MaskedDiffusionTrainer(model, config(tmp_path, eval_likelihood_mc_num=8, eval_noise_seed=5),
                                     train_dataset=repetitive_corpus(), eval_dataset=eval_set)
    metrics = trainer.evaluate()
    blocks = [list(example["input_ids"]) for example in trainer.eval_dataset]
    estimates = model.log_likelihood([([], block) for block in blocks], mc_num=8, seed=5)
    expected = -sum(e.log_likelihood for e in estimates) / sum(len(b) for b in blocks)
    assert metrics["eval_nll_bound"] == pytest.approx(expected, rel=1e-6)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)

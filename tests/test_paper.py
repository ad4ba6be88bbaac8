"""The paper-claim experiments (examples/paper/): their data, the equal-size model pair, the two likelihoods they
compare, and a seconds-long run of each script (the `--quick` runs CI makes)."""

import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

PAPER = Path(__file__).resolve().parents[1] / "examples" / "paper"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"paper_{name}", PAPER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reversal = load("reversal")
common = load("paper_common")


def test_line_pairs_go_both_ways():
    poem = [["a b c", "d e f", "g h i"]]
    assert reversal.line_pairs(poem, "forward") == [("next : a b c .", " d e f ."), ("next : d e f .", " g h i .")]
    assert reversal.line_pairs(poem, "reversed") == [("previous : d e f .", " a b c ."),
                                                     ("previous : g h i .", " d e f .")]


def test_poems_have_unique_lines_of_distinct_words():
    words = reversal.word_list(50, seed=3)
    assert len(set(words)) == 50 and not {"next", "previous"} & set(words)
    poems = reversal.make_poems(40, 4, 3, words, seed=3)
    lines = [line for poem in poems for line in poem]
    assert len(lines) == 160 and len(set(lines)) == 160
    assert all(len(set(line.split())) == 3 and set(line.split()) <= set(words) for line in lines)
    assert reversal.make_poems(40, 4, 3, words, seed=3) == poems  # seeded


@pytest.mark.parametrize("layout", ["rows", "crops"])
def test_pretraining_rows_hold_every_poem_in_reading_order(layout):
    words = reversal.word_list(40, seed=0)
    poems = reversal.make_poems(6, 3, 2, words, seed=0)
    tokenizer = reversal.poem_tokenizer(words)
    rows, block = reversal.pretraining_rows(poems, tokenizer, layout, passes=5, seed=0)
    texts = [tokenizer(reversal.poem_text(p))["input_ids"] for p in poems]
    assert block == len(texts[0]) + 1  # BOS, 3 lines of 2 words with their '.', then EOS
    from trainers import pack_dataset

    blocks = pack_dataset(rows, block, tokenizer.eos_token_id)["input_ids"]
    assert all(len(b) == block for b in blocks)
    stream = [t for b in blocks for t in b]
    for text in texts:  # every poem occurs whole, in reading order (crops: across block edges)
        assert any(stream[i : i + len(text)] == text for i in range(len(stream) - len(text) + 1))
    if layout == "rows":
        assert blocks == [text + [tokenizer.eos_token_id] for text in texts]
    else:  # lines occur at more than one offset within the blocks
        starts = {i % block for i in range(len(stream)) if stream[i] == tokenizer.bos_token_id}
        assert len(starts) > 1


def test_poem_tokenizer_has_one_token_per_word_and_a_bos():
    words = reversal.word_list(30, seed=0)
    tokenizer = reversal.poem_tokenizer(words)
    ids = tokenizer("next : " + " ".join(words[:3]) + " .")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) == 1 + 6
    assert tokenizer.convert_ids_to_tokens(ids[3:6]) == words[:3]
    assert len(set(tokenizer.get_vocab().values())) == len(tokenizer) == 30 + 7
    assert tokenizer.mask_token_id not in ids


def test_model_pair_has_the_same_shape_and_count():
    tokenizer = reversal.poem_tokenizer(reversal.word_list(30, seed=0))
    llada, llama = common.model_pair(tokenizer, d_model=32, n_layers=2, n_heads=4, mlp_hidden_size=96,
                                     max_length=32, seed=0)
    v, d, m, layers = len(tokenizer), 32, 96, 2
    by_hand = 2 * v * d + layers * (4 * d * d + 3 * d * m + 2 * d) + d  # embeddings+head, blocks, final norm
    assert common.count(llada) == common.count(llama) == by_hand
    assert "difference 0.00%" in common.describe_pair(llada, llama)


def test_ar_nll_is_the_models_own_next_token_loss():
    tokenizer = reversal.poem_tokenizer(reversal.word_list(30, seed=0))
    _, llama = common.model_pair(tokenizer, 32, 2, 4, 96, 32, seed=0)
    blocks = torch.randint(0, len(tokenizer), (5, 9), generator=torch.Generator().manual_seed(0))
    expected = llama(input_ids=blocks, labels=blocks).loss.item()  # mean CE of x_2..x_n
    assert common.ar_nll_per_token(llama, blocks.tolist(), batch_size=2) == pytest.approx(expected, rel=1e-5)


def test_llada_bound_matches_an_enumeration_of_every_mask():
    """The bound per token, computed by hand from all mask subsets of a 3-token answer (REFERENCE.md section 6:
    E_l [ L / l * sum of -log p over the l masked tokens ], l uniform in 1..L, subsets uniform given l)."""
    tokenizer = reversal.poem_tokenizer(reversal.word_list(30, seed=0))
    llada, _ = common.model_pair(tokenizer, 32, 2, 4, 96, 32, seed=0)
    llada.eval()
    blocks = torch.randint(5, len(tokenizer), (3, 4), generator=torch.Generator().manual_seed(1)).tolist()
    total = 0.0
    with torch.no_grad():
        for block in blocks:
            length = len(block) - 1
            for count in range(1, length + 1):
                subsets = list(itertools.combinations(range(1, len(block)), count))
                for subset in subsets:
                    noisy = torch.tensor([block])
                    noisy[0, list(subset)] = tokenizer.mask_token_id
                    logp = llada(noisy).logits[0].log_softmax(-1)
                    nll = -sum(logp[i, block[i]].item() for i in subset)
                    total += (1 / length) * (length / count) * nll / len(subsets)
    by_hand = total / (len(blocks) * 3)
    estimate = common.llada_nll_bound_per_token(llada, blocks, mc_num=240, seed=0)
    assert estimate == pytest.approx(by_hand, rel=0.02)


def run_quick(script: str, tmp_path: Path, *args: str) -> dict:
    result = subprocess.run([sys.executable, str(PAPER / script), "--quick", "--output_dir", str(tmp_path), *args],
                            capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "difference 0.00%" in result.stdout
    return json.loads((tmp_path / script.replace(".py", ".json")).read_text())


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["rows", "crops"])
def test_reversal_quick_run(tmp_path, layout):
    summary = run_quick("reversal.py", tmp_path, "--layout", layout)
    assert summary["layout"] == layout
    assert summary["optimiser steps (LLaDA, Llama)"] == {"pre-training": [4, 4], "SFT": [4, 4]}
    for row in summary["accuracy after SFT"].values():
        assert set(row) == {f"{d} ({s})" for d in ("forward", "reversed") for s in ("held-out", "SFT poems")}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    recited = summary["recitation before SFT (held-out)"]
    assert set(recited["Llama (autoregressive)"]) == {"forward", "reversed", "forward, moved"}
    assert recited["Llama (autoregressive)"]["reversed"] is None
    assert 0.0 <= recited["LLaDA (masked diffusion)"]["reversed"] <= 1.0
    assert (tmp_path / "reversal.png").stat().st_size > 10_000


@pytest.mark.slow
def test_likelihood_quick_run(tmp_path):
    summary = run_quick("likelihood.py", tmp_path)
    assert [row["step"] for row in summary["curve"]] == [0, 2, 4]
    for row in summary["curve"]:
        assert 0 < row["ar_nll"] < 10 and 0 < row["llada_nll_bound"] < 10  # ln(512) = 6.2 at initialisation
    assert (tmp_path / "likelihood.png").stat().st_size > 10_000


def test_both_models_see_the_same_batches_in_the_same_order(tmp_path):
    from transformers import Trainer, TrainingArguments

    from trainers import MaskedDiffusionConfig, MaskedDiffusionTrainer, pack_dataset

    words = reversal.word_list(40, seed=0)
    tokenizer = reversal.poem_tokenizer(words)
    rows, block = reversal.pretraining_rows(reversal.make_poems(40, 4, 3, words, seed=0), tokenizer, "rows", 1, 0)
    llada, llama = common.model_pair(tokenizer, 32, 2, 4, 96, 64, seed=0)
    settings = common.optimiser_settings(10, 8, 1e-3, seed=0, warmup_steps=1)
    diffusion = MaskedDiffusionTrainer(llada, MaskedDiffusionConfig(output_dir=str(tmp_path / "a"), block_size=block,
                                                                     random_length_probability=0.0, **settings),
                                       train_dataset=rows, processing_class=tokenizer)
    blocks = pack_dataset(rows, block, tokenizer.eos_token_id)
    autoregressive = Trainer(model=llama, args=TrainingArguments(output_dir=str(tmp_path / "b"), **settings),
                             train_dataset=blocks,
                             data_collator=common.collate_ar_blocks)
    first, second = list(diffusion.get_train_dataloader()), list(autoregressive.get_train_dataloader())
    assert len(first) == len(second) == 5
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, second))
    assert not torch.equal(first[0]["input_ids"], torch.tensor(blocks["input_ids"][:8]))  # shuffled, not file order

"""Key/value caching and confidence-aware parallel decoding inside model.generate."""

import pytest
import torch
from transformers import LogitsProcessorList

from modeling_llada.generation_llada import num_transfer_tokens, select_parallel, select_top_k
from tests.modeling_llada.test_generation import BATCH_IDS, BATCH_MASK, EOS, MASK, PROMPT, ForceEosFrom, Recorder
from tests.utils import assert_close_fp32, tiny_model

MODES = [
    dict(kv_cache="prefix"),
    dict(kv_cache="dual"),
    dict(threshold=0.9),
    dict(factor=1.0),
    dict(threshold=0.5, kv_cache="prefix"),
    dict(threshold=0.5, kv_cache="dual"),
]


def test_a_cached_forward_over_a_slice_equals_the_full_forward_of_the_same_canvas():
    model = tiny_model(n_kv_heads=2)
    ids = torch.randint(0, 60, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    full = model(ids, attention_mask=mask, use_cache=True)
    for start, stop in ((5, 12), (5, 9), (0, 4)):
        part = model(ids[:, start:stop], attention_mask=mask, cache=full.cache,
                     cache_position=start)
        assert_close_fp32(part.logits, full.logits[:, start:stop])  # cached vs uncached: rounding only


def test_cached_forwards_need_sdpa_or_eager():
    model = tiny_model()
    cache = model(torch.randint(0, 60, (1, 6)), use_cache=True).cache
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="sdpa and eager"):
        model(torch.randint(0, 60, (1, 2)), cache=cache, cache_position=4)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_the_first_step_after_every_cache_refresh_equals_the_uncached_step(official_model, mode):
    kwargs = dict(max_new_tokens=16, steps=8, block_length=4)
    out = official_model.generate(BATCH_IDS, attention_mask=BATCH_MASK, kv_cache=mode, output_history=True, **kwargs)
    config = official_model._resolve_generation_config(None, dict(kwargs))
    canvas = torch.cat([BATCH_IDS, torch.full((3, 16), MASK)], dim=1)
    attention = torch.cat([BATCH_MASK, torch.ones(3, 16, dtype=torch.long)], dim=1)
    prompt_positions = (torch.arange(26)[None] < 10) & (canvas != MASK)
    for block in range(4):
        step = 2 * block  # two steps per block; the first one follows the refresh
        before = out.history[step - 1] if step else canvas
        window = slice(10 + 4 * block, 14 + 4 * block)
        logits, _ = official_model._window_logits(before, attention, window, prompt_positions, config.cfg_scale)
        proposal, scores = official_model._scores(logits, before[:, window], config, torch.tensor([EOS]))
        k = num_transfer_tokens((before[:, window] == MASK).sum(-1), 2)[:, 0]
        expected = before.clone()
        expected[:, window] = torch.where(select_top_k(scores, k), proposal, before[:, window])
        assert torch.equal(out.history[step], expected), (mode, block)


@pytest.mark.parametrize("kwargs", MODES, ids=str)
def test_padded_batch_rows_equal_single_rows_in_every_mode(official_model, kwargs):
    for cfg_scale in (0.0, 1.0):
        batch = official_model.generate(BATCH_IDS, attention_mask=BATCH_MASK, max_new_tokens=16, block_length=4,
                                        cfg_scale=cfg_scale, **kwargs)
        for row in range(3):
            pad = int((BATCH_MASK[row] == 0).sum())
            single = official_model.generate(BATCH_IDS[row : row + 1, pad:], max_new_tokens=16, block_length=4,
                                             cfg_scale=cfg_scale, **kwargs)
            assert batch[row, pad:].tolist() == single[0].tolist()


def test_threshold_one_commits_one_token_per_step_like_the_exact_sampler(official_model):
    exact = official_model.generate(BATCH_IDS, attention_mask=BATCH_MASK, max_new_tokens=16, block_length=8)
    strict = official_model.generate(BATCH_IDS, attention_mask=BATCH_MASK, max_new_tokens=16, block_length=8,
                                     threshold=1.0, return_dict_in_generate=True)
    assert torch.equal(strict.sequences, exact)
    assert strict.tokens_per_forward.tolist() == [1.0, 1.0, 1.0]


def test_a_permissive_threshold_or_factor_fills_each_block_in_one_step(official_model):
    for kwargs in (dict(threshold=1e-9), dict(factor=1e9)):
        out = official_model.generate(PROMPT, max_new_tokens=16, block_length=8, return_dict_in_generate=True,
                                      output_history=True, **kwargs)
        assert out.history.shape[0] == 2 and out.tokens_per_forward.tolist() == [8.0]
        # in one step every position takes its argmax proposal of the block's first forward
        logits = official_model(out.history[0].masked_fill(torch.arange(24)[None] >= 8, MASK)).logits
        assert torch.equal(out.history[0][0, 8:16], logits[0, 8:16].argmax(-1))


def test_parallel_selection_rules():
    scores = torch.tensor([[0.95, 0.2, 0.91, -torch.inf], [0.3, 0.1, 0.2, 0.05], [-torch.inf] * 4], dtype=torch.float64)
    assert select_parallel(scores, 0.9, None).tolist() == [[True, False, True, False], [True, False, False, False],
                                                           [False] * 4]
    # factor 1.0: n = largest with (n + 1)(1 - c_n) < 1 -> row 0: 2 * 0.05 < 1, 3 * 0.09 < 1, 4 * 0.8 >= 1 -> n = 2
    assert select_parallel(scores, None, 1.0).tolist() == [[True, False, True, False], [True, False, False, False],
                                                           [False] * 4]


@pytest.mark.parametrize("kwargs", [dict(kv_cache="dual", threshold=0.5), dict(kv_cache="prefix")], ids=str)
def test_streaming_and_early_exit_work_with_fast_modes(official_model, kwargs):
    streamer = Recorder(drafts=True)
    out = official_model.generate(PROMPT, max_new_tokens=16, block_length=4, streamer=streamer, **kwargs)
    assert torch.equal(torch.cat(streamer.puts[1:]), out[0, 8:]) and streamer.ended
    common = dict(max_new_tokens=16, block_length=8, logits_processor=LogitsProcessorList([ForceEosFrom(1, 5)]),
                  confidence_eos_eot_inf=True, **kwargs)
    full = official_model.generate(PROMPT, **common)
    early = official_model.generate(PROMPT, early_exit=True, **common)
    first = int((full[0, 8:] == EOS).nonzero()[0])
    assert torch.equal(early[0, : 8 + first + 1], full[0, : 8 + first + 1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(kv_cache="suffix"), "`kv_cache` must be None or one of"),
    (dict(threshold=0.9, factor=1.0), "either `threshold` or `factor`"),
    (dict(threshold=1.5), r"`threshold` must be in \(0, 1\]"),
    (dict(factor=-1.0), "`factor` must be > 0"),
    (dict(threshold=0.9, remasking="entropy"), "Parallel decoding"),
])
def test_invalid_fast_decoding_settings_raise(official_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        official_model.generate(PROMPT, max_new_tokens=16, **kwargs)


def test_the_pre_5_24_cache_names_still_work():
    """Callers written for transformers < 5.24 pass `past_key_values=` and read `output.past_key_values`."""
    model = tiny_model()
    ids = torch.randint(0, 60, (1, 8))
    full = model(ids, use_cache=True)
    assert full.past_key_values is full.cache
    part = model(ids[:, 4:], past_key_values=full.cache, cache_position=4)
    assert_close_fp32(part.logits, full.logits[:, 4:])
    with pytest.raises(ValueError, match="once"):
        model(ids[:, 4:], cache=full.cache, past_key_values=full.cache, cache_position=4)

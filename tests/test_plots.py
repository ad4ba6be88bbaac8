"""The quickstart's two pictures (`llada_cli.live_view.plot_losses`, `plot_unmasking_order`) and their pure helpers,
checked against values worked out by hand and against the pixels of the saved PNGs."""

import subprocess
import sys

import matplotlib
import pytest
import torch
from matplotlib.image import imread

from llada_cli.live_view import (
    MAX_WIDTH_PX,
    auto_smoothing_window,
    ema,
    plot_losses,
    plot_unmasking_order,
    smoothing_window,
    stage_offsets,
    summarise_tail,
    token_display_text,
    wrap_into_rows,
)
from llada_cli.local_data import EOT, train_tokenizer

TEXTS = ["Repeat: 3 1 4 1 5 9 2 6. The quick brown fox jumps over the lazy dog.\n\tThat is all."] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


def chat_prompt(tokenizer, question: str) -> list[int]:
    return list(tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                              add_generation_prompt=True)["input_ids"])


def read_png(path, result):
    """The image as (height, width, RGBA) floats; it must be a PNG of the size the plot reports, <= 1200 px wide."""
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[:2] == (result.height_px, result.width_px)
    assert image.shape[1] <= MAX_WIDTH_PX
    return image


def rgb(image, x, y):
    return tuple(float(c) for c in image[int(round(y)), int(round(x)), :3])


# ---- pure helpers -------------------------------------------------------------------------------------------------


def test_ema_matches_the_hand_computed_series():
    # window 3 -> alpha = 2 / (3 + 1) = 0.5; s0 = 4, s1 = 0.5*0 + 0.5*4 = 2, s2 = 0.5*2 + 0.5*2 = 2,
    # s3 = 0.5*6 + 0.5*2 = 4
    assert ema([4.0, 0.0, 2.0, 6.0], 3) == pytest.approx([4.0, 2.0, 2.0, 4.0])
    # window 4 -> alpha = 0.4; s1 = 0.4*10 + 0.6*0 = 4, s2 = 0.4*10 + 0.6*4 = 6.4
    assert ema([0.0, 10.0, 10.0], 4) == pytest.approx([0.0, 4.0, 6.4])
    assert ema([3.0, 1.0, 2.0], 1) == [3.0, 1.0, 2.0]


def test_smoothing_window_auto_adapts_to_the_number_of_points():
    assert [auto_smoothing_window(n) for n in (5, 20, 39, 40, 200, 400, 10_000)] == [1, 1, 1, 2, 10, 20, 100]
    assert smoothing_window("auto", 200) == 10 and smoothing_window(True, 400) == 20
    assert smoothing_window(7, 3) == 7 and smoothing_window(False, 400) == 1 and smoothing_window(None, 400) == 1
    with pytest.raises(ValueError, match="smooth"):
        smoothing_window("lots", 10)


def test_wrap_into_rows_wraps_and_starts_a_line_at_each_block():
    widths = [10] * 7
    assert wrap_into_rows(widths, 35) == [[0, 1, 2], [3, 4, 5], [6]]
    assert wrap_into_rows(widths, 35, gap=5) == [[0, 1], [2, 3], [4, 5], [6]]  # 10 + 5 + 10 + 5 + 10 = 40 > 35
    assert wrap_into_rows(widths, 100, block_length=2) == [[0, 1], [2, 3], [4, 5], [6]]
    assert wrap_into_rows(widths, 25, block_length=4) == [[0, 1], [2, 3], [4, 5], [6]]  # blocks too wide: wrapped
    assert wrap_into_rows([50, 10], 30) == [[0], [1]]  # a cell wider than the line gets a line of its own


def test_token_display_text_makes_whitespace_and_special_tokens_visible():
    assert token_display_text(" the") == "␣the"
    assert token_display_text("\n\n") == "↵↵" and token_display_text("\r\n") == "↵"
    assert token_display_text("\t") == "⇥"
    assert token_display_text("<|eot_id|>") == "⟨eot⟩" and token_display_text("<|endoftext|>") == "⟨eos⟩"
    assert token_display_text("<s>", special=True) == "⟨s⟩"
    assert token_display_text("") == "∅"
    assert token_display_text("abcdefghijklmnop", max_chars=6) == "abcde…"


def test_summarise_tail_counts_the_tokens_it_stands_for():
    assert summarise_tail(["<|endoftext|>"] * 17) == "+ 17 × <|endoftext|>"
    assert summarise_tail(["a", "b", "a"]) == "+ 3 tokens: 2 × a, 1 × b"
    assert summarise_tail(["a", "b", "a", "c"]) == "+ 4 tokens: 2 × a, 1 × b, …"


def test_stage_offsets_add_up_the_earlier_stages():
    stages = {"pre-training": [(10, 5.0), (200, 3.0)], "empty": [], "LoRA SFT": [(5, 2.0), (400, 1.0)], "more": []}
    assert stage_offsets(stages) == {"pre-training": 0, "empty": 200, "LoRA SFT": 200, "more": 600}


# ---- the loss picture ---------------------------------------------------------------------------------------------


def noisy_curve(count: int, start: float, end: float, seed: int) -> list[tuple[int, float]]:
    generator = torch.Generator().manual_seed(seed)
    noise = 1 + 0.1 * torch.randn(count, generator=generator)
    return [(step, (end + (start - end) * 0.99 ** step) * float(noise[step - 1])) for step in range(1, count + 1)]


def test_loss_plot_puts_the_stages_on_one_cumulative_axis(tmp_path):
    pretraining, sft = noisy_curve(200, 8.0, 4.0, 0), noisy_curve(400, 3.0, 0.3, 1)
    path = tmp_path / "loss.png"
    result = plot_losses({"pre-training": pretraining, "LoRA SFT": sft}, path)
    image = read_png(path, result)
    # pre-training logs steps 1..200, so SFT's step s lands on 200 + s and the boundary on 200
    assert result.offsets == {"pre-training": 0, "LoRA SFT": 200}
    assert result.boundaries == [200]
    assert result.x["LoRA SFT"][0] == 201 and result.x["LoRA SFT"][-1] == 600
    assert result.windows == {"pre-training": 10, "LoRA SFT": 20}
    assert result.smoothed["LoRA SFT"] == pytest.approx(ema([loss for _, loss in sft], 20))
    # the dashed boundary line (grey 0.35) is in the image's column where the plot says it drew it
    column = round(result.boundaries_px[0])
    strip = image[:, column - 1:column + 2, :3]
    grey = ((abs(strip - 0.35) < 0.12).all(-1)).any(-1)
    assert grey.sum() > 0.25 * result.height_px
    elsewhere = image[:, column + 40, :3]  # a column inside the SFT stage has no such long line
    assert ((abs(elsewhere - 0.35) < 0.12).all(-1)).sum() < 0.1 * result.height_px


def test_loss_plot_smoothing_options(tmp_path):
    points = [(1, 4.0), (2, 0.0), (3, 2.0), (4, 6.0)]
    result = plot_losses({"only": points}, tmp_path / "a.png", smooth=3, log_y=False)
    assert result.smoothed["only"] == pytest.approx([4.0, 2.0, 2.0, 4.0]) and result.boundaries == []
    result = plot_losses({"only": points * 1}, tmp_path / "b.png", smooth=False)
    assert result.windows == {"only": 1} and result.smoothed["only"] == [4.0, 0.0, 2.0, 6.0]
    result = plot_losses({"a": points, "b": []}, tmp_path / "c.png", width_px=5000)
    read_png(tmp_path / "c.png", result)  # the width is capped at 1200 px
    # an empty stage adds no boundary; a NaN loss is left out
    result = plot_losses({"a": points, "none": [], "b": points + [(5, float("nan"))]}, tmp_path / "d.png")
    assert result.boundaries == [4] and result.x["b"] == [5, 6, 7, 8]


# ---- the unmasking picture ----------------------------------------------------------------------------------------


def digits_answer(tokenizer):
    """"123456<|eot_id|>" then 17 × <|endoftext|>: 24 positions in 3 blocks of 8, each block's positions committed
    in its own steps (block 0 in steps 0-7, ...)."""
    answer = tokenizer("123456", add_special_tokens=False)["input_ids"]
    answer += [tokenizer.convert_tokens_to_ids(EOT)] + [tokenizer.eos_token_id] * 17
    order = [3, 4, 5, 2, 6, 7, 1, 0]
    steps = [8 * block + order[(i + block) % 8] for block in range(3) for i in range(8)]
    return answer, steps


def test_unmasking_plot_colours_each_cell_by_its_commit_step(tokenizer, tmp_path):
    prompt = chat_prompt(tokenizer, "Repeat: 3 1 4")
    answer, steps = digits_answer(tokenizer)
    path = tmp_path / "unmasking.png"
    # generate's convention: -1 for the prompt, 0-based steps for the answer
    result = plot_unmasking_order(tokenizer, torch.tensor(prompt + answer), torch.tensor([-1] * len(prompt) + steps),
                                  len(prompt), path, title="t", block_length=8, stop_token_ids=[])
    image = read_png(path, result)
    assert result.rows == [list(range(0, 8)), list(range(8, 16)), list(range(16, 24))]  # one row per block
    assert result.row_blocks == [0, 1, 2]
    assert result.texts[:7] == ["1", "2", "3", "4", "5", "6", "⟨eot⟩"] and result.texts[7] == "⟨eos⟩"
    assert result.max_step == 23
    viridis = matplotlib.colormaps["viridis"]
    for position, step in enumerate(steps):
        expected = viridis(step / 23)
        assert result.cell_colors[position] == pytest.approx(expected)
        x0, y0, x1, y1 = result.boxes[position]
        assert x1 <= result.width_px
        # the cell's fill in the image, next to its left edge, halfway down (clear of the text)
        assert rgb(image, x0 + 3, (y0 + y1) / 2) == pytest.approx(expected[:3], abs=3 / 255)
    # cells of a later row are lower
    assert result.boxes[8][1] > result.boxes[7][3] and result.boxes[16][1] > result.boxes[15][3]


def test_unmasking_plot_summarises_the_positions_after_the_stop_token(tokenizer, tmp_path):
    prompt = chat_prompt(tokenizer, "Repeat: 3 1 4")
    answer, steps = digits_answer(tokenizer)
    stops = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(EOT)]
    path = tmp_path / "unmasking.png"
    result = plot_unmasking_order(tokenizer, torch.tensor(prompt + answer), torch.tensor([-1] * len(prompt) + steps),
                                  len(prompt), path, block_length=8, stop_token_ids=stops)
    read_png(path, result)
    assert result.texts == ["1", "2", "3", "4", "5", "6", "⟨eot⟩"] and len(result.boxes) == 7
    assert result.hidden == 17 and result.summary == "+ 17 × <|endoftext|> (steps 0–23)"
    # per block: the rest of block 1 after the last cell, then a line for each padding block
    assert result.rows == [list(range(7)), [], []] and result.row_blocks == [0, 1, 2]
    position_7_step = steps[7]
    assert result.row_summaries == [f"+ 1 × <|endoftext|> (step {position_7_step})",
                                    "+ 8 × <|endoftext|> (steps 8–15)", "+ 8 × <|endoftext|> (steps 16–23)"]
    assert "Repeat: 3 1 4" in result.prompt_tail and result.prompt_tail.endswith("↵↵")
    # the default stop token is the tokenizer's EOS: the <|eot_id|> cell stays, the EOS run is summarised
    result = plot_unmasking_order(tokenizer, torch.tensor(prompt + answer), torch.tensor([-1] * len(prompt) + steps),
                                  len(prompt), path)
    assert result.texts[-2:] == ["⟨eot⟩", "⟨eos⟩"] and result.hidden == 16 and result.rows == [list(range(8))]


def test_unmasking_plot_wraps_a_long_answer_within_1200_px(tokenizer, tmp_path):
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 6) + "\n\tThat is all."
    answer = tokenizer(text, add_special_tokens=False)["input_ids"]
    steps = list(range(len(answer)))[::-1]
    prompt = chat_prompt(tokenizer, "Say it.")
    path = tmp_path / "long.png"
    result = plot_unmasking_order(tokenizer, torch.tensor(prompt + answer), torch.tensor([-1] * len(prompt) + steps),
                                  len(prompt), path, title="a long answer")
    read_png(path, result)
    assert len(result.rows) > 1 and [p for row in result.rows for p in row] == list(range(len(answer)))
    assert all(box[2] <= result.width_px for box in result.boxes)
    assert {result.boxes[row[0]][0] for row in result.rows} == {result.boxes[0][0]}  # every line starts at the margin
    # the cells spell the answer, whitespace made visible
    assert "".join(result.texts) == text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    assert result.font_pt >= 9 and result.row_blocks == [None] * len(result.rows)
    # blocks too wide for one line are wrapped, each block still starting its own line
    result = plot_unmasking_order(tokenizer, torch.tensor(prompt + answer), torch.tensor([-1] * len(prompt) + steps),
                                  len(prompt), path, block_length=40)
    read_png(path, result)
    firsts = [row[0] for row in result.rows]
    assert all(start in firsts for start in range(0, len(answer), 40))
    assert all(row[0] // 40 == row[-1] // 40 for row in result.rows)


def test_plots_leave_matplotlibs_global_state_alone(tokenizer, tmp_path):
    backend = matplotlib.get_backend()
    with matplotlib.rc_context({"lines.linewidth": 7.0, "font.size": 30}):
        plot_losses({"a": [(1, 2.0), (2, 1.0)]}, tmp_path / "a.png")
        prompt = chat_prompt(tokenizer, "hi")
        plot_unmasking_order(tokenizer, torch.tensor(prompt + [30, 31]), torch.tensor([-1] * len(prompt) + [1, 0]),
                             len(prompt), tmp_path / "b.png")
        assert matplotlib.rcParams["lines.linewidth"] == 7.0 and matplotlib.rcParams["font.size"] == 30
    assert matplotlib.get_backend() == backend


def test_importing_the_module_is_cheap_and_plotting_needs_no_pyplot(tmp_path):
    code = (
        "import sys; import llada_cli.live_view as v; assert 'matplotlib' not in sys.modules\n"
        f"v.plot_losses({{'a': [(1, 2.0), (2, 1.0)]}}, {str(tmp_path / 'a.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

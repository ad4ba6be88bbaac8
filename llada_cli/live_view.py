"""Watching a diffusion model write: a transformers streamer that redraws the answer canvas at every denoising step
(masked positions as ░) and pictures of a run."""

import contextlib
import math
import re
import shutil
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

MASK_SYMBOL = "░"


class DenoisingView:
    """A streamer for `model.generate(..., streamer=DenoisingView(tokenizer, mask_id))`.

    On a terminal it redraws one line per step (`put_draft`), so the masked positions visibly fill in; elsewhere it
    only prints the final answer. `frames` counts the drafts received, `text` is the final answer.
    """

    def __init__(self, tokenizer, mask_token_id: int, stream=None, skip_special_tokens: bool = True,
                 stop_token_ids: list[int] | None = None):
        self.tokenizer, self.mask_token_id = tokenizer, mask_token_id
        # the answer ends at the first of these (EOS by default; chat models add their end-of-turn id)
        self.stop_token_ids = set(stop_token_ids or [tokenizer.eos_token_id])
        self.stream = stream or sys.stdout
        self.skip_special_tokens = skip_special_tokens
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.prompt_seen, self.tokens, self.frames, self.text = False, [], 0, ""

    def render(self, ids) -> str:
        pieces = []
        for token in ids:
            if token == self.mask_token_id:
                pieces.append(MASK_SYMBOL)
            else:
                pieces.append(self.tokenizer.decode([token], skip_special_tokens=self.skip_special_tokens))
        return "".join(pieces).replace("\n", "⏎")

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first put is the prompt
            self.prompt_seen = True
            return
        self.tokens.extend(value.reshape(-1).tolist())

    def put_draft(self, value) -> None:
        self.frames += 1
        if self.live:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r\x1b[K" + self.render(value.reshape(-1).tolist())[:width])
            self.stream.flush()

    def end(self) -> None:
        from modeling_llada.answers_llada import AnswerText  # the answer ends where `generate` ends it

        answer = AnswerText(self.tokenizer, self.stop_token_ids, [], skip_special_tokens=self.skip_special_tokens)
        answer.feed(self.tokens, final=True)
        self.text = answer.text.strip()
        self.stream.write(("\r\x1b[K" if self.live else "") + self.text + "\n")
        self.stream.flush()


# ---------------------------------------------------------------------------------------------------------------------
# Pictures of a run: the training loss, and the order in which one answer was unmasked.
#
# Both functions import matplotlib when called (importing this module stays cheap), draw on a bare `Figure` with the
# Agg canvas (no pyplot, no backend switch) under matplotlib's default style inside an `rc_context` (the caller's
# rcParams neither leak in nor change), and free the figure before returning a small record of what they drew.

MAX_WIDTH_PX = 1200
DPI = 100

# compact cell labels of the special tokens LLaDA's tokenizer uses; any other `<|name|>` becomes ⟨name⟩
_SPECIAL_ALIASES = {"endoftext": "eos", "startoftext": "bos", "mdm_mask": "mask", "eot_id": "eot",
                    "start_header_id": "hdr", "end_header_id": "/hdr"}
_SPECIAL_PIECE = re.compile(r"<\|[^<>|\s]+\|>")


# fonts tried after DejaVu for characters it lacks (CJK, emoji), where installed
_FALLBACK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "WenQuanYi Zen Hei", "Noto Sans", "Noto Color Emoji")


@contextlib.contextmanager
def _default_style():
    """Draw with matplotlib's default style whatever the caller set (the caller's rcParams come back on exit), in
    DejaVu with installed fallbacks; a character no font has is drawn as a box, without a warning per text."""
    import warnings

    import matplotlib
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    fallbacks = [name for name in _FALLBACK_FONTS if name in installed]
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        matplotlib.rcdefaults()  # leaves the backend alone
        matplotlib.rcParams["font.family"] = ["DejaVu Sans", *fallbacks]
        yield ["DejaVu Sans Mono", "DejaVu Sans", *fallbacks]  # the monospaced family, with fallbacks


def _new_figure(width_px: float, height_px: float, dpi: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path, dpi: int) -> tuple[int, int]:
    figure.savefig(path, dpi=dpi, facecolor="white")
    width, height = figure.canvas.get_width_height()
    figure.clear()
    return width, height


# ---- the training loss ----------------------------------------------------------------------------------------------


def auto_smoothing_window(count: int) -> int:
    """The EMA window `smooth="auto"` gives a curve of `count` logged points: 1 (no smoothing) below 40 points, then
    a twentieth of them (200 -> 10, 400 -> 20), at most 100."""
    return max(1, min(100, count // 20))


def smoothing_window(smooth, count: int) -> int:
    """The EMA window for a curve of `count` points: `"auto"` or True -> `auto_smoothing_window(count)`; an int >= 1 ->
    itself; False, None or 0 -> 1 (no smoothing)."""
    if smooth is None or smooth is False or (isinstance(smooth, int) and not isinstance(smooth, bool) and smooth == 0):
        return 1
    if smooth is True or smooth == "auto":
        return auto_smoothing_window(count)
    if isinstance(smooth, int) and smooth >= 1:
        return smooth
    raise ValueError(f"smooth must be 'auto', True, False or a window of at least 1 point, got {smooth!r}")


def ema(values, window: int) -> list[float]:
    """Exponential moving average with the usual span convention, alpha = 2 / (window + 1):
    s_0 = x_0 and s_t = alpha * x_t + (1 - alpha) * s_(t-1). A window of 1 returns the values unchanged."""
    alpha = 2.0 / (window + 1)
    smoothed = []
    for value in values:
        smoothed.append(float(value) if not smoothed else alpha * float(value) + (1 - alpha) * smoothed[-1])
    return smoothed


def stage_offsets(stages: dict[str, list[tuple[int, float]]]) -> dict[str, int]:
    """Where each stage starts on the cumulative step axis: the sum of the last logged step of every earlier stage
    (each stage counts its own steps from about 1)."""
    offsets, offset = {}, 0
    for name, points in stages.items():
        offsets[name] = offset
        if points:
            offset += max(step for step, _ in points)
    return offsets


@dataclass
class LossPlot:
    """What `plot_losses` drew.

    path, width_px, height_px: the image and its size in pixels. offsets: per stage, the number added to its own steps
    on the cumulative axis (`stage_offsets`). boundaries: the cumulative step of each stage boundary (a dashed line
    labelled with the stage names on either side). boundaries_px: the same lines' x in image pixels, from the left.
    windows: per stage, the EMA window used (1: not smoothed). x, smoothed: per stage, the cumulative steps and the
    smoothed losses drawn bold (the raw losses when the window is 1). log_y: whether the loss axis is logarithmic.
    """

    path: str
    width_px: int
    height_px: int
    offsets: dict[str, int] = field(default_factory=dict)
    boundaries: list[int] = field(default_factory=list)
    boundaries_px: list[float] = field(default_factory=list)
    windows: dict[str, int] = field(default_factory=dict)
    x: dict[str, list[int]] = field(default_factory=dict)
    smoothed: dict[str, list[float]] = field(default_factory=dict)
    log_y: bool = False


def plot_losses(stages: dict[str, list[tuple[int, float]]], path, smooth="auto", *, log_y="auto",
                title: str = "Training loss", width_px: int = 1000, dpi: int = DPI) -> LossPlot:
    """The training loss of consecutive stages ({"pre-training": [(step, loss), ...], "LoRA SFT": [...]}, each
    counting its own steps) on one cumulative axis of optimizer steps, saved as a PNG at most 1200 px wide.

    Each stage keeps its colour; a dashed line marks every boundary, labelled with the stages on either side. Noisy
    curves are drawn twice: every logged value faint, and their exponential moving average (`ema`, each stage on its
    own) bold. `smooth`: "auto" (a window that grows with the number of points, `auto_smoothing_window`; short curves
    stay as they are, drawn with markers), an int window, or False. `log_y`: "auto" (logarithmic when the losses span
    more than a factor of 20), True or False. Returns a `LossPlot`.
    """
    import matplotlib
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

    width_px = min(int(width_px), MAX_WIDTH_PX)
    height_px = round(width_px * 0.45)
    offsets = stage_offsets(stages)
    result = LossPlot(path=str(path), width_px=width_px, height_px=height_px, offsets=offsets)
    names = [name for name in stages if stages[name]]  # the stages drawn: an empty one has no boundary of its own
    with _default_style():
        palette = matplotlib.colormaps["tab10"].colors
        colours = {name: palette[index % len(palette)] for index, name in enumerate(names)}
        figure = _new_figure(width_px, height_px, dpi)
        axis = figure.add_subplot()
        all_losses = []
        for name in names:
            points = sorted((step, loss) for step, loss in stages[name] if math.isfinite(loss))  # no NaN / inf
            if not points:
                continue
            steps = [offsets[name] + step for step, _ in points]
            losses = [float(loss) for _, loss in points]
            all_losses += losses
            window = smoothing_window(smooth, len(losses))
            smoothed = ema(losses, window)
            result.windows[name], result.x[name], result.smoothed[name] = window, steps, smoothed
            if window > 1:
                axis.plot(steps, losses, color=colours[name], alpha=0.3, linewidth=1.0, zorder=2)
                axis.plot(steps, smoothed, color=colours[name], linewidth=2.4, zorder=3, label=name)
            else:
                axis.plot(steps, losses, color=colours[name], linewidth=2.0, marker="o", markersize=3.5, zorder=3,
                          label=name)
        result.boundaries = [offsets[name] for name in names[1:] if offsets[name] > 0]
        positive = [loss for loss in all_losses if loss > 0]
        if log_y == "auto":
            log_y = len(positive) == len(all_losses) > 1 and max(positive) / min(positive) > 20
        result.log_y = bool(log_y)
        if result.log_y:
            axis.set_yscale("log")
            axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.yaxis.set_minor_locator(LogLocator(subs=tuple(range(1, 10))))
            axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
        if all_losses:  # head room above the curves for the stage labels
            low, high = min(all_losses), max(all_losses)
            if result.log_y:
                axis.set_ylim(low / 1.15, high * (high / low) ** 0.15)
            else:
                span = (high - low) or 1.0
                axis.set_ylim(low - 0.05 * span, high + 0.18 * span)
        for index, name in enumerate(names):
            if index == 0 or offsets[name] == 0:
                continue
            axis.axvline(offsets[name], color="0.35", linestyle=(0, (5, 3)), linewidth=1.3, zorder=1)
            for text, shift, align, colour in ((f"◂ {names[index - 1]}", -6, "right", colours[names[index - 1]]),
                                               (f"{name} ▸", 6, "left", colours[name])):
                axis.annotate(text, (offsets[name], 1), xycoords=("data", "axes fraction"), xytext=(shift, -6),
                              textcoords="offset points", ha=align, va="top", fontsize=11, fontweight="bold",
                              color=colour)
        smoothed = [(name, window) for name, window in result.windows.items() if window > 1]
        if smoothed:
            windows = ", ".join(f"{window} ({name})" for name, window in smoothed)
            if len({window for _, window in smoothed}) == 1:
                windows = str(smoothed[0][1])
            axis.text(0, 1.015, f"faint: every logged loss;  bold: exponential moving average over {windows} logs",
                      transform=axis.transAxes, fontsize=10, color="0.4", ha="left", va="bottom", parse_math=False,
                      in_layout=False)
            axis.set_title(title, loc="left", fontsize=13, fontweight="bold", pad=22)
        else:
            axis.set_title(title, loc="left", fontsize=13, fontweight="bold")
        axis.set_xlabel("optimizer step (cumulative over the stages)", fontsize=11)
        axis.set_ylabel("training loss (nats / token)", fontsize=11)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
        axis.tick_params(labelsize=10)
        axis.grid(alpha=0.3, which="major")
        axis.spines[["top", "right"]].set_visible(False)
        if result.x and (len(result.x) == 1 or not result.boundaries):  # else the boundary labels name them
            axis.legend(loc="upper right", fontsize=10, frameon=False)
        if not all_losses:
            axis.text(0.5, 0.5, "no loss was logged", transform=axis.transAxes, ha="center", va="center",
                      fontsize=12, color="0.4")
        figure.tight_layout()
        figure.canvas.draw()
        result.boundaries_px = [float(axis.transData.transform((b, 1))[0]) for b in result.boundaries]
        result.width_px, result.height_px = _save(figure, path, dpi)
    return result


# ---- the unmasking order --------------------------------------------------------------------------------------------


def special_token_label(token: str) -> str:
    """The compact label of a special token: `<|eot_id|>` -> ⟨eot⟩, `<|endoftext|>` -> ⟨eos⟩, `<|mdm_mask|>` ->
    ⟨mask⟩, `<|start_header_id|>` -> ⟨hdr⟩, `<s>` -> ⟨s⟩, `<|foo_id|>` -> ⟨foo⟩."""
    name = token.strip().removeprefix("<").removesuffix(">").strip("|")
    return f"⟨{_SPECIAL_ALIASES.get(name, name.removesuffix('_id'))}⟩"


def token_display_text(piece: str, special: bool | None = None, max_chars: int = 12) -> str:
    """How one token is written in its cell.

    A special token (`special=True`, or by default a piece of the form `<|name|>`) gets its compact label
    (`special_token_label`). Otherwise spaces (and other blanks) show as ␣, newlines as ↵, tabs as ⇥, control
    characters as �; text longer than `max_chars` is cut with …, and an empty piece shows as ∅.
    """
    if special is None:
        special = bool(_SPECIAL_PIECE.fullmatch(piece))
    if special:
        return special_token_label(piece)
    characters = []
    for character in piece.replace("\r\n", "\n"):
        if character in "\n\r":
            characters.append("↵")
        elif character == "\t":
            characters.append("⇥")
        elif character.isspace():
            characters.append("␣")
        elif unicodedata.category(character).startswith("C"):
            characters.append("�")
        else:
            characters.append(character)
    text = "".join(characters)
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text or "∅"


def wrap_into_rows(widths, max_width: float, block_length: int | None = None, gap: float = 0.0) -> list[list[int]]:
    """Greedy line breaking: the indices of cells with these `widths` (separated by `gap`) on lines no wider than
    `max_width`; a cell wider than a line gets a line of its own. With `block_length`, each block of cells (indices
    k * block_length ...) starts a new line: one line per block when a block fits, several when it does not."""
    rows, current, used = [], [], 0.0
    for index, width in enumerate(widths):
        needed = used + gap + width if current else width
        if current and ((block_length and index % block_length == 0) or needed > max_width):
            rows.append(current)
            current, needed = [], width
        current.append(index)
        used = needed
    if current:
        rows.append(current)
    return rows


def summarise_tail(pieces: list[str]) -> str:
    """One line for the tokens after the answer's first stop token: "+ 17 × <|endoftext|>" when they are all the
    same, else "+ 17 tokens: 12 × <|endoftext|>, 5 × ␣" (the two most frequent, then … if there are more
    kinds)."""
    counts = Counter(pieces)
    if len(counts) == 1:
        return f"+ {len(pieces)} × {pieces[0]}"
    listed = ", ".join(f"{count} × {piece}" for piece, count in counts.most_common(2))
    return f"+ {len(pieces)} tokens: {listed}{', …' if len(counts) > 2 else ''}"


def _special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token_id, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            ids.add(int(token_id))
    return ids


def _luminance(rgba) -> float:
    return 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]


class _TextWidth:
    """Widths of single-line texts in pixels at `dpi`, as Agg renders them (call inside `_default_style`)."""

    def __init__(self, dpi: int):
        from matplotlib.backends.backend_agg import RendererAgg

        self.renderer, self.fonts = RendererAgg(1, 1, dpi), {}

    def __call__(self, text: str, size: float, family=None, weight: str = "normal") -> float:
        from matplotlib.font_manager import FontProperties

        key = (size, tuple(family) if isinstance(family, list) else family, weight)
        font = self.fonts.setdefault(key, FontProperties(family=family, size=size, weight=weight))
        return self.renderer.get_text_width_height_descent(text, font, ismath=False)[0] if text else 0.0


def _wrap_words(text: str, max_px: float, width_of) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if line and width_of(candidate) > max_px:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line]


def _flat_ints(values) -> list[int]:
    values = values.reshape(-1).tolist() if hasattr(values, "reshape") else list(values)
    return [int(value) for value in values]


@dataclass
class UnmaskingPlot:
    """What `plot_unmasking_order` drew. Positions count from the first answer token (0 = just after the prompt).

    path, width_px, height_px: the image and its size in pixels. rows: the answer positions drawn as cells on each
    line, top to bottom (empty for a line that only summarises blocks past the answer's end); row_blocks: the
    (first) block of each line, None without `block_length`; row_summaries: the summary at the end of each line, or
    None. texts, steps, cell_colors, boxes: per drawn position, the text in its cell, its commit step, its RGBA fill
    and its (x0, y0, x1, y1) box in image pixels from the top left. Colours: the scale runs over the steps
    0 .. max(max_step, 1), so a token committed at step s is filled with `cmap(s / max(max_step, 1))`, max_step being
    the largest commit step in the answer; a position without a commit step (-1) is grey (`UNCOMMITTED_COLOUR`).
    hidden, summary: how many positions after the first stop token are summarised instead of drawn, and one line
    for them all (None when none are). prompt_tail: the grey text showing the end of the prompt. font_pt: the size
    of the cells' text in points, at `dpi` pixels per inch.
    """

    path: str
    width_px: int
    height_px: int
    rows: list[list[int]] = field(default_factory=list)
    row_blocks: list[int | None] = field(default_factory=list)
    row_summaries: list[str | None] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    cell_colors: list[tuple[float, float, float, float]] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    max_step: int = 0
    hidden: int = 0
    summary: str | None = None
    prompt_tail: str = ""
    font_pt: float = 0.0
    dpi: int = DPI


UNCOMMITTED_COLOUR = (0.86, 0.86, 0.86, 1.0)


def _step_range(steps: list[int]) -> str:
    steps = [step for step in steps if step >= 0]
    if not steps:
        return ""
    low, high = min(steps), max(steps)
    return f" (step {low})" if low == high else f" (steps {low}–{high})"


def _prompt_tail(tokenizer, ids: list[int], max_chars: int) -> str:
    """The end of the prompt, decoded in one piece (multi-byte characters survive), special tokens compacted."""
    if max_chars <= 0 or not ids:
        return ""
    text = tokenizer.decode(ids[-64:], skip_special_tokens=False)
    text = _SPECIAL_PIECE.sub(lambda match: special_token_label(match.group(0)), text)
    text = text.replace("\r\n", "\n").replace("\n", "↵").replace("\t", "⇥")
    return text if len(text) <= max_chars else "…" + text[-(max_chars - 1):]


@dataclass
class _Line:
    cells: list[int]  # answer positions drawn as cells
    block: int | None = None
    label: str | None = None  # "block 2", in the left margin
    summary: str | None = None  # "+ 8 × <|endoftext|> (steps 8–15)"
    hidden: list[int] = field(default_factory=list)  # the positions the summary stands for
    summary_below: bool = False  # the summary did not fit after the cells


def _unmasking_lines(widths, gap, content_px, block_length, drawn, named, steps) -> list[_Line]:
    """The cells wrapped into lines (a new line at each block), and the summaries of the positions after the answer's
    end: per block with `block_length` (on the last line of cells for the block the answer ends in, then one line per
    padding block, or one line for them all when there are more than 3), else one after the last cell."""
    rows = wrap_into_rows(widths, content_px, block_length, gap)
    lines = []
    for index, row in enumerate(rows):
        block = row[0] // block_length if block_length else None
        first = block is not None and (index == 0 or rows[index - 1][0] // block_length != block)
        lines.append(_Line(row, block, f"block {block + 1}" if first else None))
    hidden = list(range(drawn, len(named)))
    if not hidden:
        return lines

    def summary(positions):
        return summarise_tail([named[i] for i in positions]) + _step_range([steps[i] for i in positions])

    if not block_length:
        if lines:
            lines[-1].summary, lines[-1].hidden = summary(hidden), hidden
        else:
            lines.append(_Line([], summary=summary(hidden), hidden=hidden))
        return lines
    groups: dict[int, list[int]] = {}
    for i in hidden:
        groups.setdefault(i // block_length, []).append(i)
    if lines and lines[-1].block in groups:
        part = groups.pop(lines[-1].block)
        lines[-1].summary, lines[-1].hidden = summary(part), part
    padding = sorted(groups)
    if len(padding) > 3:
        every = [i for block in padding for i in groups[block]]
        lines.append(_Line([], padding[0], f"blocks {padding[0] + 1}–{padding[-1] + 1}", summary(every), every))
    else:
        lines += [_Line([], block, f"block {block + 1}", summary(groups[block]), groups[block]) for block in padding]
    return lines


def plot_unmasking_order(tokenizer, sequence, commit_step, prompt_length: int, path, title: str = "",
                         block_length: int | None = None, stop_token_ids=None, *, cmap: str = "viridis",
                         show_steps: bool = True, prompt_tail_chars: int = 60, font_pt: float = 13,
                         max_width_px: int = MAX_WIDTH_PX, dpi: int = DPI) -> UnmaskingPlot:
    """One generation's answer, each token a cell coloured by the denoising step that committed it, saved as a PNG
    at most `max_width_px` (<= 1200) pixels wide.

    `sequence`: 1-D token ids, prompt then answer. `commit_step`: 1-D, the step that committed each position, as
    `generate(..., output_history=True).commit_step[row]` gives it (0-based over the whole call, -1 for the prompt).
    With `block_length` each block gets its own row (wrapped when too wide), labelled "block k"; otherwise the
    answer wraps. Positions after the first stop token (`stop_token_ids`; default: the tokenizer's EOS; [] draws
    every token) are summarised, per block with `block_length`: a small swatch per position in its step's colour
    and "+ 8 × <|endoftext|> (steps 8–15)". Cells show the token (`token_display_text`: ␣ space, ↵ newline, ⟨eot⟩ for
    <|eot_id|>) and, with `show_steps`, the step; a colour bar and a caption explain the colours; the end of the
    prompt is shown in grey (at most `prompt_tail_chars` characters; 0 hides it). Returns an `UnmaskingPlot` (the
    colour normalisation is documented there).
    """
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import FancyBboxPatch
    from matplotlib.ticker import MaxNLocator

    ids, committed = _flat_ints(sequence), _flat_ints(commit_step)
    if len(ids) != len(committed):
        raise ValueError(f"sequence ({len(ids)} positions) and commit_step ({len(committed)}) differ in length")
    if block_length is not None and block_length < 1:
        raise ValueError(f"block_length must be at least 1, got {block_length}")
    answer_ids, steps = ids[prompt_length:], committed[prompt_length:]
    if stop_token_ids is None:
        stop_token_ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    stops = {int(token) for token in stop_token_ids}
    drawn = next((i + 1 for i, token in enumerate(answer_ids) if token in stops), len(answer_ids))

    special, mask_id = _special_ids(tokenizer), getattr(tokenizer, "mask_token_id", None)
    pieces = [(tokenizer.convert_ids_to_tokens(token), True) if token in special
              else (tokenizer.decode([token]), False) for token in answer_ids]
    texts = [MASK_SYMBOL if answer_ids[i] == mask_id and steps[i] < 0 else token_display_text(*pieces[i])
             for i in range(drawn)]
    named = [piece if is_special else token_display_text(piece) for piece, is_special in pieces]  # for summaries
    max_step = max([step for step in steps if step >= 0], default=0)
    result = UnmaskingPlot(path=str(path), width_px=0, height_px=0, texts=texts, steps=steps[:drawn],
                           max_step=max_step, font_pt=font_pt, dpi=dpi, hidden=len(answer_ids) - drawn)
    if result.hidden:
        result.summary = summarise_tail(named[drawn:]) + _step_range(steps[drawn:])

    with _default_style() as mono:
        width_of = _TextWidth(dpi)
        title_pt, small_pt, step_pt = 14, 10.5, 9.5
        px = dpi / 72  # pixels per point
        font_px, small_px, step_px = font_pt * px, small_pt * px, step_pt * px
        char_px = width_of("0", font_pt, mono)
        pad_x, gap, line_gap, block_gap = 0.55 * char_px, 0.3 * char_px, 0.45 * char_px, 1.2 * char_px
        cell_h = 1.75 * font_px + (1.15 * step_px if show_steps else 0)
        summary_h = max(0.62 * cell_h, 2.2 * small_px)
        swatch_w, swatch_gap, swatch_h = 0.5 * char_px, 0.16 * char_px, 1.2 * small_px
        margin = 0.16 * dpi
        max_width_px = min(int(max_width_px), MAX_WIDTH_PX)
        blocks = -(-len(answer_ids) // block_length) if block_length else 0
        left = margin + (width_of(f"blocks {blocks}–{blocks}", small_pt) + 12 if block_length else 0)
        content_px = max_width_px - left - margin

        widths = [max(width_of(text, font_pt, mono), 2 * char_px) + 2 * pad_x for text in texts]
        lines = _unmasking_lines(widths, gap, content_px, block_length, drawn, named, steps)

        def summary_width(line):
            swatches = len(line.hidden) * (swatch_w + swatch_gap) + 0.5 * char_px if len(line.hidden) <= 64 else 0
            return swatches + width_of(line.summary, small_pt)

        needed = []
        for line in lines:
            cells = sum(widths[i] for i in line.cells) + gap * max(len(line.cells) - 1, 0)
            if line.summary and line.cells:
                after = char_px + summary_width(line)
                line.summary_below = cells + after > content_px
                needed += [cells, summary_width(line)] if line.summary_below else [cells + after]
            else:
                needed.append(summary_width(line) if line.summary else cells)
        bar_label = "denoising step that committed the token (0 = first)"
        needed.append(width_of(bar_label, small_pt))
        width_px = int(min(max_width_px, max(6 * dpi, math.ceil(left + max(needed, default=0) + margin))))
        text_px = width_px - 2 * margin
        result.rows = [line.cells for line in lines]
        result.row_blocks = [line.block for line in lines]
        result.row_summaries = [line.summary for line in lines]

        tail = _prompt_tail(tokenizer, ids[:prompt_length], prompt_tail_chars)
        while len(tail) > 2 and width_of(tail, small_pt, mono) > width_px - left - margin:
            tail = "…" + tail[2:]
        result.prompt_tail = tail
        title_lines = _wrap_words(title or "Unmasking order", text_px,
                                  lambda text: width_of(text, title_pt, weight="bold"))
        legend = ["Each cell is one generated token, coloured by the denoising step that committed it"
                  + (" (the small number)." if show_steps else ".")]
        if block_length:
            legend.append(f"Rows are blocks of {block_length} positions, denoised one block after another; inside a "
                          "block the model chooses which positions to unmask first.")
        else:
            legend.append("The answer reads left to right, top to bottom; the model unmasks its positions in any "
                          "order.")
        if result.hidden:
            legend.append("Positions after the end of the answer are summarised, one small swatch each.")
        used = "".join(texts)
        marks = [f"{symbol}\u00a0{name}" for symbol, name in (("␣", "space"), ("↵", "newline"), ("⇥", "tab"),
                                                         (MASK_SYMBOL, "still masked")) if symbol in used]
        if any(step < 0 for step in steps[:drawn]):
            marks.append("grey\u00a0cells:\u00a0not\u00a0committed")
        marks += [f"{special_token_label(piece)}\u00a0=\u00a0{piece}"
                  for piece in sorted({piece for piece, is_special in pieces[:drawn] if is_special})]
        if marks:
            legend.append("; ".join(marks) + ".")
        if tail:
            legend.append("Grey: the end of the prompt.")
        caption_lines = _wrap_words(" ".join(legend), text_px, lambda text: width_of(text, small_pt))

        # vertical layout, in pixels from the top
        title_y = margin
        prompt_y = title_y + len(title_lines) * title_pt * px * 1.3 + 0.35 * title_pt * px
        y = prompt_y + (2.0 * small_px if tail else 0)
        tops, heights = [], []
        for index, line in enumerate(lines):
            if index:
                y += line_gap if block_length is None or line.block == lines[index - 1].block else block_gap
            tops.append(y)
            heights.append(cell_h if line.cells else summary_h)
            y += heights[-1] + (summary_h if line.summary_below else 0)
        bar_y, bar_h = y + 1.8 * small_px, 0.9 * small_px
        caption_y = bar_y + bar_h + 3.7 * small_px
        height_px = int(math.ceil(caption_y + len(caption_lines) * small_px * 1.35 + 0.6 * margin))

        colours = matplotlib.colormaps[cmap]
        norm = Normalize(vmin=0, vmax=max(max_step, 1))
        figure = _new_figure(width_px, height_px, dpi)
        axis = figure.add_axes((0, 0, 1, 1))
        axis.set_xlim(0, width_px)
        axis.set_ylim(height_px, 0)
        axis.axis("off")
        note = dict(fontsize=small_pt, color="0.4", parse_math=False)
        axis.text(margin, title_y, "\n".join(title_lines), fontsize=title_pt, fontweight="bold", va="top", ha="left",
                  linespacing=1.3, parse_math=False)
        if tail:
            axis.text(left, prompt_y, tail, fontsize=small_pt, family=mono, color="0.5", va="top", ha="left",
                      parse_math=False)
            if block_length:
                axis.text(left - 12, prompt_y, "prompt", va="top", ha="right", **{**note, "color": "0.55"})

        def draw_summary(x, middle, line):
            if len(line.hidden) <= 64:
                for i in line.hidden:
                    fill = colours(norm(steps[i])) if steps[i] >= 0 else UNCOMMITTED_COLOUR
                    axis.add_patch(FancyBboxPatch((x, middle - swatch_h / 2), swatch_w, swatch_h, facecolor=fill,
                                                  edgecolor="none", boxstyle=f"round,pad=0,rounding_size={px:.2f}"))
                    x += swatch_w + swatch_gap
                x += 0.5 * char_px
            axis.text(x, middle, line.summary, ha="left", va="center", **note)

        boxes, fills = [None] * drawn, [None] * drawn
        for line, top, height in zip(lines, tops, heights):
            if line.label:
                axis.text(left - 12, top + height / 2, line.label, ha="right", va="center", **note)
            x = left
            for i in line.cells:
                fill = tuple(float(c) for c in (colours(norm(steps[i])) if steps[i] >= 0 else UNCOMMITTED_COLOUR))
                boxes[i], fills[i] = (x, top, x + widths[i], top + cell_h), fill
                axis.add_patch(FancyBboxPatch((x, top), widths[i], cell_h, facecolor=fill, edgecolor="none",
                                              boxstyle=f"round,pad=0,rounding_size={2.2 * px:.2f}"))
                ink = "0.08" if _luminance(fill) > 0.45 else "white"
                axis.text(x + widths[i] / 2, top + 0.95 * font_px if show_steps else top + cell_h / 2, texts[i],
                          fontsize=font_pt, family=mono, color=ink, ha="center", va="center", parse_math=False)
                if show_steps and steps[i] >= 0:
                    axis.text(x + widths[i] / 2, top + cell_h - 0.3 * step_px, str(steps[i]), fontsize=step_pt,
                              color=ink, alpha=0.85, ha="center", va="bottom")
                x += widths[i] + gap
            if line.summary and not line.cells:
                draw_summary(left, top + height / 2, line)
            elif line.summary and not line.summary_below:
                draw_summary(x - gap + char_px, top + height / 2, line)
            elif line.summary:
                draw_summary(left, top + height + summary_h / 2, line)
        result.boxes, result.cell_colors = boxes, fills

        bar = figure.add_axes((left / width_px, 1 - (bar_y + bar_h) / height_px,
                               min(420.0, width_px - left - margin) / width_px, bar_h / height_px))
        colour_bar = figure.colorbar(ScalarMappable(norm=norm, cmap=colours), cax=bar, orientation="horizontal")
        colour_bar.outline.set_visible(False)
        colour_bar.ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
        colour_bar.ax.tick_params(labelsize=10, length=3)
        colour_bar.ax.set_xlabel(bar_label, fontsize=small_pt, loc="left")
        axis.text(margin, caption_y, "\n".join(caption_lines), fontsize=small_pt, color="0.25", va="top", ha="left",
                  linespacing=1.35, parse_math=False)
        result.width_px, result.height_px = _save(figure, path, dpi)
    return result

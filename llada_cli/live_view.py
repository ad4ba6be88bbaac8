"""Watching a diffusion model write: a transformers streamer that redraws the answer canvas at every denoising step
(masked positions as ░) and pictures of a run."""

import shutil
import sys

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
        cut = next((i for i, token in enumerate(self.tokens) if token in self.stop_token_ids), len(self.tokens))
        self.text = self.tokenizer.decode(self.tokens[:cut], skip_special_tokens=self.skip_special_tokens).strip()
        self.stream.write(("\r\x1b[K" if self.live else "") + self.text + "\n")
        self.stream.flush()


def plot_losses(curves: dict[str, list[tuple[int, float]]], path) -> None:
    """Training-loss curves, one per phase, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.5), squeeze=False)
    for axis, (name, points) in zip(axes[0], curves.items()):
        if points:
            steps, losses = zip(*points)
            axis.plot(steps, losses, marker=".")
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.set_ylabel("loss (bound, nats/token)")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_unmasking_order(tokenizer, sequence, commit_step, prompt_length: int, path, title: str = "") -> None:
    """One generation's answer, each token coloured by the denoising step that committed it (from the
    `commit_step` of `generate(..., output_history=True)`), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = sequence[prompt_length:].tolist()
    steps = commit_step[prompt_length:].tolist()
    labels = [tokenizer.decode([t]).replace("\n", "⏎").strip() or "␣" for t in tokens]
    columns = min(len(tokens), 16)
    rows = -(-len(tokens) // columns)
    figure, axis = plt.subplots(figsize=(columns * 0.9 + 1.5, rows * 0.7 + 1.2))
    last = max(max(steps), 1)
    colours = plt.get_cmap("viridis")
    for index, (label, step) in enumerate(zip(labels, steps)):
        row, column = divmod(index, columns)
        axis.add_patch(plt.Rectangle((column, -row - 1), 0.95, 0.9, color=colours(step / last)))
        axis.text(column + 0.47, -row - 0.55, label, ha="center", va="center", fontsize=8,
                  color="white" if step / last < 0.6 else "black")
        axis.text(column + 0.9, -row - 0.15, str(step), ha="right", va="top", fontsize=5, color="white")
    axis.set_xlim(0, columns)
    axis.set_ylim(-rows, 0.2)
    axis.axis("off")
    axis.set_title(title or "unmasking order (colour and small number: the step that committed each token)",
                   fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)

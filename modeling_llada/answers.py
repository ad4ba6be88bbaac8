"""From a generated canvas to the answer text: where an answer ends (EOS ids, the chat template's end of turn) and
where stop strings cut it. Shared by the CLI, the SFT trainer's sample answers and the lm-eval model.

Not one of the files that travel with a checkpoint (the modeling files do not import it); it needs only torch and a
tokenizer.
"""

import torch


def special_token_ids(tokenizer) -> dict[str, int]:
    """Special tokens (those `decode(..., skip_special_tokens=True)` drops) and their ids."""
    added = getattr(tokenizer, "added_tokens_decoder", {})
    ids = {token.content: index for index, token in added.items() if getattr(token, "special", False)}
    for token in tokenizer.all_special_tokens:
        index = tokenizer.convert_tokens_to_ids(token)
        if isinstance(index, int):
            ids.setdefault(token, index)
    return ids


def end_of_turn_id(tokenizer) -> int | None:
    """The id of the token that closes an assistant turn in the tokenizer's chat template (`<|eot_id|>` for LLaDA),
    found by rendering a turn; None without a chat template or when the turn is not closed by one token."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    sentinel = "LLADA_ANSWER_SENTINEL"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant",
                                              "content": sentinel}], tokenize=False)
    except Exception:  # a template that wants other roles or rejects the turn: no end-of-turn token known
        return None
    if not isinstance(text, str) or sentinel not in text:
        return None
    tail = text[text.rindex(sentinel) + len(sentinel):].lstrip()
    if not tail:
        return None
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    if ids and ids[0] in special_token_ids(tokenizer).values():
        return ids[0]  # `<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`, EOS
    ids = tokenizer(tail.split()[0], add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None  # a plain-text marker that is one token


def end_token_ids(eos_token_id, tokenizer) -> list[int]:
    """The ids that end a generated answer, in this order, without repeats: `eos_token_id` (the model's
    `generation_config.eos_token_id`: an int, a list or None), the tokenizer's EOS, and the chat template's
    end-of-turn token."""
    ids = list(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
    ids += [tokenizer.eos_token_id, end_of_turn_id(tokenizer)]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def first_end_positions(rows: torch.Tensor, end_ids: list[int]) -> torch.Tensor:
    """For each row of ids, the index of its first id in `end_ids` (the row length when there is none)."""
    if not end_ids:
        return torch.full((rows.shape[0],), rows.shape[1], dtype=torch.long, device=rows.device)
    is_end = torch.isin(rows, torch.tensor(end_ids, dtype=rows.dtype, device=rows.device))
    return torch.where(is_end.any(-1), is_end.long().argmax(-1), rows.shape[1])


def first_stop_position(text: str, stops: list[str]) -> int:
    """Where the earliest occurrence of any (non-empty) stop string begins in `text`; -1 when none occurs."""
    return min((position for position in (text.find(stop) for stop in stops if stop) if position >= 0), default=-1)


def cut_at_stop_strings(text: str, until: list[str]) -> str:
    """`text` up to the earliest occurrence of any stop string."""
    position = first_stop_position(text, until)
    return text[:position] if position >= 0 else text


def decode_answers(tokenizer, rows: torch.Tensor, end_ids: list[int], until: list[str]) -> list[str]:
    """Generated canvases (one row of ids per answer) as answers: each row is cut before its first end id, decoded
    without special tokens, then cut at the earliest stop string of `until`."""
    cuts = first_end_positions(rows, end_ids).tolist()
    rows = rows.tolist()
    return [cut_at_stop_strings(tokenizer.decode(row[:cut], skip_special_tokens=True), until)
            for row, cut in zip(rows, cuts)]

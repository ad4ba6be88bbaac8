"""Where an answer ends: its end ids (EOS, the chat template's end of turn), stop strings, and the tokens a stop string
cuts. The one place for these rules: `generate` and its streamer, serve, lm-eval, the SFT trainer's sample answers, the
CLI and the quickstart all read them from here.

Travels with checkpoints (the generation file imports it), so it needs only torch and a tokenizer.
"""

import torch


def stop_list(stop_strings) -> list[str]:
    if stop_strings is None:
        return []
    return [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)


def decode_for_stops(tokenizer, ids: list[int]) -> str:
    # Special tokens kept (a stop string may be one) and no clean-up: the text of a prefix of ids is then a prefix of
    # the text of the ids.
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def tokens_before_offset(tokenizer, ids: list[int], offset: int) -> int:
    """The number of leading tokens of `ids` that begin before character `offset` of their decoded text: the
    smallest k with len(decode(ids[:k])) >= offset (a binary search: about log2(len(ids)) decodes)."""
    low, high = 0, len(ids)
    while low < high:
        middle = (low + high) // 2
        if len(decode_for_stops(tokenizer, ids[:middle])) >= offset:
            high = middle
        else:
            low = middle + 1
    return low


def tokens_before_stop(tokenizer, ids: list[int], text: str, start: int) -> int:
    """The tokens of `ids` (decoded: `text`) kept before a stop string that begins at character `start`: those that
    carry text before it other than whitespace. A token that begins inside the stop string, or holds only whitespace
    before it (`" Question"` for the stop string `"Question"`), is not kept; one that straddles its start with text
    before it (`".\\n"` for the stop string `"\\n"`) is."""
    return tokens_before_offset(tokenizer, ids, len(text[:start].rstrip()))


def stop_string_horizon(text: str, stops: list[str], complete: bool) -> tuple[int, bool]:
    """Where the answer in `text` ends: (offset, found). `found`: the earliest start of a stop string in `text`.

    With `complete=False` the text may still grow: the offset is then the earliest position from which a stop
    string may yet begin (a tail of `text` that is a proper prefix of one, or trailing undecodable bytes), and
    `found` is True only when a stop string is present and none can begin before it.
    """
    starts = [start for start in (text.find(stop) for stop in stops) if start >= 0]
    first = min(starts) if starts else len(text)
    if not complete:
        longest = max(len(stop) for stop in stops)
        for start in range(max(0, len(text) - longest + 1), first):
            tail = text[start:]
            if any(len(stop) > len(tail) and stop.startswith(tail) for stop in stops):
                return start, False
        unstable = len(text) - len(text.rstrip("\ufffd"))  # an incomplete UTF-8 character may still change
        if unstable and len(text) - unstable < first:
            return len(text) - unstable, False
    return first, bool(starts)


def first_end_positions(rows: torch.Tensor, end_ids) -> torch.Tensor:
    """(b,) index of each row's first end id (`end_ids`: a list or a tensor of ids), the row length when none."""
    length = rows.shape[1]
    end_ids = torch.as_tensor(end_ids, dtype=rows.dtype, device=rows.device).reshape(-1)
    if not end_ids.numel():
        return torch.full((rows.shape[0],), length, dtype=torch.long, device=rows.device)
    index = torch.arange(length, device=rows.device)[None]
    return torch.where(torch.isin(rows, end_ids), index, length).min(-1).values


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


def first_stop_position(text: str, stops: list[str]) -> int:
    """Where the earliest occurrence of any (non-empty) stop string begins in `text`; -1 when none occurs."""
    return min((position for position in (text.find(stop) for stop in stops if stop) if position >= 0), default=-1)


def decode_answers(tokenizer, rows: torch.Tensor, end_ids: list[int], until: list[str]) -> list[str]:
    """Generated canvases (one row of ids per answer) as answers (`AnswerText`): each row ends before its first end
    id, is decoded without special tokens, and is cut at the earliest stop string of `until`."""
    answers = []
    for row in rows.tolist():
        answer = AnswerText(tokenizer, end_ids, list(until))
        answer.feed(row, final=True)
        answers.append(answer.text)
    return answers


def cut_answers(
    canvas: torch.Tensor,
    prompt_length: int,
    eos_tensor: torch.Tensor,
    pad_id: int | None,
    tokenizer,
    stops: list[str],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The returned sequences: each row's answer ends before its first EOS or its earliest stop string; the EOS
    stays, everything after it (and the stop string on) becomes `pad_id`.

    Returns (sequences, answer_lengths, kept, stopped): `kept` the generated positions left unpadded (the answer
    and its EOS). Without stop strings this is tensor work only (no host sync); with them, one decode per row and
    a binary search over decoded prefix lengths for the rows that hold one.
    """
    generated = canvas[:, prompt_length:]
    length = generated.shape[1]
    first_eos = first_end_positions(generated, eos_tensor)
    answer_lengths = first_eos.clone()
    by_stop = torch.zeros_like(first_eos, dtype=torch.bool)
    if stops:
        for row, (ids, end) in enumerate(zip(generated.tolist(), first_eos.tolist())):
            ids = ids[:end]
            text = decode_for_stops(tokenizer, ids)
            start, found = stop_string_horizon(text, stops, complete=True)
            if found:
                answer_lengths[row] = tokens_before_stop(tokenizer, ids, text, start)
                by_stop[row] = True
    by_eos = (first_eos < length) & ~by_stop
    kept = answer_lengths + by_eos.long()
    if pad_id is None:  # no EOS id, no pad id and no stop strings: nothing ends an answer
        return canvas, answer_lengths, kept, by_stop
    index = torch.arange(length, device=canvas.device)[None]
    sequences = canvas.clone()
    sequences[:, prompt_length:] = torch.where(index < kept[:, None], generated, pad_id)
    return sequences, answer_lengths, kept, by_eos | by_stop

def finish_rows_at_stop_strings(
    canvas: torch.Tensor,
    commit_step: torch.Tensor,
    finished: torch.Tensor,
    prompt_length: int,
    mask_id: int,
    eos_tensor: torch.Tensor,
    pad_id: int,
    tokenizer,
    stops: list[str],
    step: int,
) -> torch.Tensor:
    """`early_exit` with stop strings, at the end of a block: a row whose committed prefix (the generated tokens
    before its first mask, cut at its first EOS) holds a stop string that no later token can move is done; its
    remaining masks become `pad_id`. Nothing before the stop string changes. Returns the updated `finished`."""
    generated = canvas[:, prompt_length:]
    is_open = generated == mask_id
    length = generated.shape[1]
    index = torch.arange(length, device=canvas.device)[None]
    ready = torch.where(is_open, index, length).min(-1).values
    ready = torch.minimum(ready, first_end_positions(generated, eos_tensor))
    finished = finished.clone()
    candidates = (~finished & (ready > 0)).tolist()
    for row, (ids, end, candidate) in enumerate(zip(generated.tolist(), ready.tolist(), candidates)):
        if not candidate or end == length:
            continue
        _, found = stop_string_horizon(decode_for_stops(tokenizer, ids[:end]), stops, complete=False)
        if found:
            finished[row] = True
            fill = is_open[row]
            generated[row].masked_fill_(fill, pad_id)
            commit_step[row, prompt_length:].masked_fill_(fill, step)
    return finished

def finish_rows_at_eos(
    canvas: torch.Tensor,
    commit_step: torch.Tensor,
    prompt_length: int,
    mask_id: int,
    eos_tensor: torch.Tensor,
    step: int,
) -> torch.Tensor:
    """Rows whose first generated EOS has no mask before it are done: fill their later masks with EOS.

    Returns the (b,) bool of finished rows. Positions before the first EOS are untouched by construction.
    """
    generated = canvas[:, prompt_length:]
    is_eos = torch.isin(generated, eos_tensor)
    length = generated.shape[1]
    index = torch.arange(length, device=canvas.device)[None]
    first_eos = torch.where(is_eos, index, length).min(-1).values
    open_before = ((canvas == mask_id) & (torch.arange(canvas.shape[1], device=canvas.device)[None]
                                          < prompt_length + first_eos[:, None])).any(-1)
    finished = (first_eos < length) & ~open_before
    fill = finished[:, None] & (generated == mask_id)
    generated.masked_fill_(fill, int(eos_tensor[0]))
    commit_step[:, prompt_length:].masked_fill_(fill, step)
    return finished


class StreamState:
    """Feeds a transformers streamer: the prompt first, then the answer's tokens once every position before them is
    committed (reading order), up to the first EOS (included) or stop string (excluded) and never beyond; and the
    raw canvas after every step to `put_draft` when the streamer has one.

    With stop strings, tokens are held back while a stop string may still begin in them, so that nothing `put`
    leaves the answer that `generate` returns.
    """

    def __init__(self, streamer, canvas: torch.Tensor, prompt_length: int, mask_id: int,
                 eos_tensor: torch.Tensor, tokenizer, stops: list[str]):
        if canvas.shape[0] != 1:
            raise ValueError(
                f"Streaming supports a single sequence, got a batch of {canvas.shape[0]} (num_return_sequences "
                "included); stream one prompt at a time."
            )
        self.streamer, self.prompt_length, self.mask_id = streamer, prompt_length, mask_id
        self.eos_tensor, self.tokenizer, self.stops = eos_tensor, tokenizer, stops
        self.emitted, self.done = 0, False
        streamer.put(canvas[0, :prompt_length].cpu())

    def _put_until(self, generated: torch.Tensor, limit: int) -> None:
        if limit > self.emitted:
            self.streamer.put(generated[self.emitted : limit].cpu())
            self.emitted = limit

    def update(self, canvas: torch.Tensor) -> None:
        generated = canvas[0, self.prompt_length :]
        if not self.done:
            open_positions = (generated == self.mask_id).nonzero()
            ready = int(open_positions[0]) if open_positions.numel() else generated.shape[0]
            if ready > self.emitted:
                eos = int(first_end_positions(generated[None, :ready], self.eos_tensor)[0])
                limit, self.done = (ready, False) if eos == ready else (eos + 1, True)
                if self.stops:
                    answer = generated[:eos].tolist()
                    text = decode_for_stops(self.tokenizer, answer)
                    start, found = stop_string_horizon(text, self.stops, complete=self.done)
                    if found:
                        limit, self.done = tokens_before_stop(self.tokenizer, answer, text, start), True
                    elif not self.done:  # the tokens a stop string cannot reach any more
                        limit = tokens_before_stop(self.tokenizer, answer, text, start)
                self._put_until(generated, limit)
        if hasattr(self.streamer, "put_draft"):
            self.streamer.put_draft(generated.cpu())

    def end(self, canvas: torch.Tensor, kept: int) -> None:
        """`kept`: the generated positions `generate` returns unpadded (the answer and its EOS)."""
        self._put_until(canvas[0, self.prompt_length :], kept)
        self.streamer.end()


class AnswerText:
    """The answer text of generated tokens fed in reading order, as a client sees it (special tokens dropped): it
    ends before the first end id (EOS, end of turn), before the earliest stop string, or after `max_tokens` tokens.

    `feed` returns the text that can be sent now (a tail that could still become a stop string, or an incomplete
    character, is held back); `done` tells when nothing fed later can change the answer; `finish` returns the rest.
    `skip_special_tokens=False` keeps special tokens other than the end ids in the text. The work is linear in the
    answer's length: each feed decodes only the new tokens and the few before them (so
    that a tokenizer's joining rules, such as a word's leading space, come out as in a decode of the whole), and
    stop strings are searched only where they can newly begin. `lock`: a context manager held around each decode
    (a tokenizer shared between threads).
    """

    def __init__(self, tokenizer, end_ids, stops: list[str], max_tokens: int | None = None, lock=None,
                 skip_special_tokens: bool = True):
        self.tokenizer, self.end_ids, self.stops, self.max_tokens = tokenizer, set(end_ids), stops, max_tokens
        self.lock, self.skip_special_tokens = lock, skip_special_tokens
        self.ids: list[int] = []
        self.text = ""  # the answer so far
        self.sent = 0  # characters of `text` already returned
        self.done = self.stopped = False
        self.completion_tokens = 0
        self._prefix = self._read = 0  # ids[_prefix:_read]: the last decoded tokens, the context of the next decode
        # (tokens, characters of `text`, where the decode that reached them began) after each decode that appended
        self._boundaries = [(0, 0, 0)]
        self._searched = 0  # no stop string begins before this character, except one running past its end

    def _decode(self, ids: list[int]) -> str:
        if self.lock is None:
            return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)
        with self.lock:
            return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def _full(self) -> bool:
        return self.max_tokens is not None and len(self.ids) >= self.max_tokens

    def _decode_new(self, force: bool) -> None:
        """Append the text of the tokens not decoded yet, unless it ends inside a character (`force`: anyway)."""
        if len(self.ids) > self._read:
            before = self._decode(self.ids[self._prefix:self._read])
            after = self._decode(self.ids[self._prefix:])
            if force or (len(after) > len(before) and not after.endswith("\ufffd")):
                self.text += after[len(before):]
                self._boundaries.append((len(self.ids), len(self.text), self._prefix))
                self._prefix, self._read = self._read, len(self.ids)

    def _tokens_before(self, cut: int) -> int:
        """The tokens wholly before character `cut`: the most whose decode ends at or before it. A binary search over
        the tokens after the last decode boundary before `cut`, decoding from that decode's start (once per
        answer)."""
        low, chars, start = max(b for b in self._boundaries if b[1] <= cut)
        base = len(self._decode(self.ids[start:low]))
        high = len(self.ids)
        while low < high:
            middle = (low + high + 1) // 2
            if chars + len(self._decode(self.ids[start:middle])) - base <= cut:
                low = middle
            else:
                high = middle - 1
        return low

    def feed(self, ids, final: bool = False) -> str:
        """Take the next tokens; `final`: no more will come."""
        if self.done:
            return ""
        for token in ids:
            if token in self.end_ids:
                self.done = self.stopped = True
                break
            if self._full():
                self.done = True
                break
            self.ids.append(int(token))
        self.done = self.done or self._full()
        self._decode_new(force=self.done or final)
        self.completion_tokens = len(self.ids)
        if self.stops:
            start = max(0, self._searched - max(len(stop) for stop in self.stops) + 1)
            found = first_stop_position(self.text[start:], self.stops)
            self._searched = len(self.text)
            if found >= 0:
                cut = start + found
                self.done = self.stopped = True
                self.text = self.text[:cut]
                self.completion_tokens = self._tokens_before(cut)
        safe = len(self.text)
        if not (self.done or final):
            for stop in self.stops:  # a tail that may still grow into a stop string
                for length in range(min(len(stop) - 1, len(self.text)), 0, -1):
                    if self.text.endswith(stop[:length]):
                        safe = min(safe, len(self.text) - length)
                        break
        delta = self.text[self.sent:safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return delta

    def finish(self) -> str:
        """The rest of the answer once generation is over."""
        if not self.done:  # what was held back: an incomplete character as it decodes, a tail that stayed text
            self.feed([], final=True)
        self.done = True
        delta = self.text[self.sent:]
        self.sent = len(self.text)
        return delta

    @property
    def finish_reason(self) -> str:
        """OpenAI's: "stop" for an end id or a stop string, "length" when the answer ran out of tokens."""
        return "stop" if self.stopped else "length"

"""`llada-hf serve MODEL`: an OpenAI-compatible server for LLaDA models.

transformers' own `transformers serve` cannot serve LLaDA: it looks the architecture up as an attribute of the
`transformers` package (so no remote-code model loads), and its runner generates autoregressively
(`generate(tokenizer=..., stopping_criteria=...)`, torch's global seed, row 0 of the output, `finish_reason`/`usage`
from the canvas). Its internals also change between minor releases (5.25 rewrote them). So the app here is our own,
on FastAPI's public API, and runs the same on every supported transformers release:

- `ServedModel` loads a LLaDA model from a Hub id (`org/model@revision`) or a folder, with or without remote code,
  through `AutoModel`, and its tokenizer through `AutoTokenizer`;
- `LLaDAHandler` answers `/v1/chat/completions` and `/v1/completions` with OpenAI's semantics for a diffusion model:
  * the answer ends at the first EOS / end-of-turn token or stop string (`finish_reason` "stop"), or where the
    `max_tokens` budget ran out ("length"); `usage.completion_tokens` counts the answer's tokens (not the EOS, not
    the stop string, not the canvas);
  * `max_tokens` (or `max_completion_tokens`), `temperature`, `top_p`, `stop`, `seed` and `n` are honoured; the
    diffusion settings `steps`, `block_length`, `threshold`, `kv_cache` and `remasking` are server defaults (flags)
    and per-request extra fields of the body;
  * streaming sends the answer in reading order as positions are committed; with `"stream_denoising_draft": true`
    every chunk also carries the whole canvas, masks shown as `░`, in the extra field `denoising_draft`;
  * bad requests get a 4xx whose OpenAI-style error names the field (`param`), never a 500 (the checks:
    `llada_cli.serve_requests`; the sampler settings are checked by the model's generation config class);
  * `max_tokens` and `max_completion_tokens` that disagree, a `seed` outside 0..2**32-1 (the seeds the sampler uses
    exactly) and `chat_template_kwargs` that hold the server's own template arguments are refused; usage is streamed
    only with `stream_options: {"include_usage": true}`, in a last chunk with no choices, as OpenAI does;
- no request can stall another: a body over `--max_request_bytes` gets 413 before it is read in full or parsed, a
  prompt with more characters than can fit the context gets 400 before any tokenizer call, and requests are parsed
  and tokenized on `TokenizerWorkers`, threads with a tokenizer each (no shared lock);
- `BatchingEngine` (`llada_cli.serve_engine`): continuous batching. Requests join the running batch between
  denoising steps (up to `--max_batch_size` sequences; past `--max_queue` waiting ones, 429) and leave as soon as
  their answer is complete or their client has gone; requests that can share a forward pass do (dense LLaDA and
  LLaDA-MoE without a cache or CFG), the others step interleaved. Each answer is the one `generate` gives alone. An
  error that leaves the device unusable (a CUDA error) kills the engine: every request then gets a 503 with a
  one-line reason at once, and `/health` answers 503.
- `build_app`: the routes, `/v1/models`, `/health`, the `X-Request-ID` header, errors in OpenAI's shape (malformed
  JSON, 404, 405 and FastAPI's own 422 included).

The `--help` of this command is cheap: nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from ._args import add_flag, new_parser
from .sampler_settings import DTYPES, KV_CACHE_MODES, REMASKING_STRATEGIES
if TYPE_CHECKING:  # the server imports torch and the model code only when it starts
    from modeling_llada.answers_llada import AnswerText

from .serve_engine import BatchingEngine, EngineJob
from .serve_requests import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    DEFAULT_MAX_REQUEST_BYTES,
    DIFFUSION_FIELDS,
    RequestError,
    chat_messages,
    check_fields,
    check_prompt_chars,
    check_setting,
    completion_prompt,
    field_error,
    prompt_chars,
    sampling_settings,
    template_kwargs,
)

DTYPE_CHOICES = ("auto", *DTYPES)
DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_MAX_QUEUE = 256
DISCONNECT_POLL_S = 0.25  # how often a waiting non-streamed request checks that its client is still there
DRAFT_FIELD = "denoising_draft"  # the extra field of a stream chunk that holds the canvas
MASK_GLYPH = "░"
# Requests are checked and tokenized on this many worker threads, each with its own copy of the tokenizer (a fast
# tokenizer's Rust core refuses concurrent use when one call changes its padding/truncation settings, "Already
# borrowed"), while the generation thread alone decodes with the served one: no lock is shared, so a long prompt
# delays only its own request.
PREPARE_WORKERS = 4
# A body over --max_request_bytes is read on (and dropped, a chunk at a time) up to this many bytes before its 413 is
# sent, so that the client reads the 413 rather than a reset connection; past it the connection is closed.
DRAIN_BYTES = 64 * 2**20


def build_parser() -> argparse.ArgumentParser:
    """The parser of `llada-hf serve` (cheap: no torch)."""
    parser = new_parser(
        "llada-hf serve",
        "Serve a LLaDA model with an OpenAI-compatible API (chat and text completions, streaming). Needs the serve\n"
        "extra: pip install 'llada-hf[serve]'.\n\n"
        "  llada-hf serve GSAI-ML/LLaDA-8B-Instruct --steps 64 --block_length 32\n"
        "  curl localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        "      -d '{\"model\": \"GSAI-ML/LLaDA-8B-Instruct\", \"steps\": 32,\n"
        "           \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'\n\n"
        "Requests may set the diffusion settings (steps, block_length, threshold, kv_cache, remasking) as extra\n"
        "fields of the body; the flags below are their defaults. Requests run one at a time, in arrival order.")
    parser.add_argument("model", help="the LLaDA checkpoint to serve: Hub id or local folder")
    add_flag(parser, "host", default="localhost", help="address to listen on")
    add_flag(parser, "port", type=int, default=8000, help="port to listen on")
    add_flag(parser, "dtype", choices=DTYPE_CHOICES, default="auto",
             help="dtype of the weights (auto: the checkpoint's own)")
    add_flag(parser, "device", default="auto",
             help="where the model runs: cpu, cuda, cuda:1, mps, ...; auto: cuda when available, else cpu")
    add_flag(parser, "trust_remote_code", action="store_true",
             help="allow running the Python code files a checkpoint ships (its config's auto_map); without it the "
                  "model loads with llada-hf's own LLaDA classes")
    add_flag(parser, "max_new_tokens", type=int, metavar="N",
             help="answer budget of a request that sets no max_tokens; default: the checkpoint's generation_config, "
                  "else 128")
    add_flag(parser, "steps", type=int, metavar="N",
             help="denoising steps of an answer (a multiple of its number of blocks); default: the checkpoint's "
                  "steps per token times the answer length (one token per step without one)")
    add_flag(parser, "block_length", type=int, metavar="N",
             help="blocks of this many positions are filled left to right; default: the checkpoint's "
                  "generation_config, else one block")
    add_flag(parser, "threshold", type=float,
             help="fast parallel decoding: every step commits each masked position of the block whose confidence "
                  "reaches this (e.g. 0.9); default: the checkpoint's generation_config, else off (exact)")
    add_flag(parser, "kv_cache", choices=KV_CACHE_MODES,
             help="approximate key/value caching (prefix or dual); default: the checkpoint's, else off (exact)")
    add_flag(parser, "remasking", choices=REMASKING_STRATEGIES,
             help="which proposals are committed first; default: the checkpoint's, else low_confidence")
    add_flag(parser, "max_request_bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES, metavar="N",
             help="requests with a larger body get 413, before it is read in full or parsed (4 MiB: >10x the JSON of "
                  "a prompt filling a 32k-token context)")
    add_flag(parser, "max_batch_size", type=int, default=DEFAULT_MAX_BATCH_SIZE, metavar="N",
             help="continuous batching: the most sequences denoised together; requests join and leave between "
                  "denoising steps (1: one request at a time)")
    add_flag(parser, "max_queue", type=int, default=DEFAULT_MAX_QUEUE, metavar="N",
             help="the most requests waiting to start; past it requests get 429 with Retry-After")
    add_flag(parser, "continuous_batching", action="store_true",
             help="accepted for transformers serve's flag: llada-hf serve always batches continuously (see "
                  "--max_batch_size)")
    add_flag(parser, "log_level", default="warning", choices=("debug", "info", "warning", "error"),
             help="log level of the server")
    return parser


# ------------------------------------------------------------------------------------------------------------------
# From committed tokens to the answer


class CommitStreamer:
    """A transformers streamer for LLaDA's `generate`: `put` gets the prompt, then committed tokens in reading order.
    Feeds an `AnswerText` and hands text to `emit` (a thread-safe callback); once the answer is complete or
    `cancelled` is set it takes nothing more (the engine then lets the request leave at the next step)."""

    def __init__(self, tracker: AnswerText, emit, cancelled: threading.Event):
        self.tracker, self.emit, self.cancelled = tracker, emit, cancelled
        self.first = True

    def put(self, value) -> None:
        if self.first:
            self.first = False
            return
        if self.cancelled.is_set() or self.tracker.done:
            return
        delta = self.tracker.feed(value.reshape(-1).tolist())
        if delta:
            self.emit(("text", delta))

    def end(self) -> None:
        pass


class DraftStreamer(CommitStreamer):
    """Also `put_draft`: the canvas after every denoising step, rendered by `render`, as a `draft` item."""

    def __init__(self, tracker: AnswerText, emit, cancelled: threading.Event, render):
        super().__init__(tracker, emit, cancelled)
        self.render = render

    def put_draft(self, canvas) -> None:
        if self.cancelled.is_set() or self.tracker.done:
            return
        self.emit(("draft", self.render(canvas.reshape(-1).tolist())))


# ------------------------------------------------------------------------------------------------------------------
# The heavy part: imported when the server starts.
#
# The app is our own, on FastAPI's public API, and depends on no transformers internals: transformers' serving app
# (transformers.cli.serving) rewrites its internals between minor releases (5.25 moved each model into a process of
# its own behind an `EngineClient`, and its `ModelManager` no longer takes `device`), and its per-request runner
# (`GenerateRunner.generate`) is autoregressive: it passes `tokenizer=` and stopping criteria, seeds torch's global
# generator, and returns row 0 of the output. So `llada-hf serve` behaves the same on every transformers release
# the project supports.


def _split(name: str) -> tuple[str, str | None]:
    """`org/model@rev` -> (`org/model`, `rev`); an existing local path has no revision."""
    if os.path.exists(name):
        return name, None
    model_id, _, revision = name.partition("@")
    if os.path.exists(model_id):
        return model_id, None
    return model_id, revision or None


class ServedModel:
    """The model a server serves, loaded once when it starts: LLaDA through `AutoModel` (llada-hf's classes, which
    `modeling_llada` registers, or the checkpoint's own code with `trust_remote_code`) and its tokenizer through
    `AutoTokenizer`. `org/model@revision` loads that revision."""

    def __init__(self, name: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False):
        import torch
        from transformers import AutoModel, AutoTokenizer

        import modeling_llada  # noqa: F401  (registers LLaDA with the Auto classes)

        from modeling_llada.mask_id import resolve_mask_token_id

        from .loading import resolve_dtype

        self.name = name
        model_id, revision = _split(name)
        self.tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision,
                                                       trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        load: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
        if dtype not in (None, "auto"):
            load["dtype"] = resolve_dtype(dtype)
        model = AutoModel.from_pretrained(model_id, **load)
        # the official LLaDA-MoE / LLaDA 2 configs do not store the mask id: the tokenizer's (the library's one rule)
        try:
            resolve_mask_token_id(model, self.tokenizer)
        except ValueError as error:
            raise ValueError(f"{model_id!r} is not a LLaDA model: {error}") from None
        if not hasattr(model.generation_config, "block_length"):  # not diffusion generation
            raise ValueError(f"{model_id!r}: the model's code has no diffusion `generate` (the official checkpoints' "
                             "own code files lack one); serve it without --trust_remote_code to use llada-hf's "
                             "LLaDA classes.")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model.to(device).eval()
        # The context, and the most characters a prompt that fits it can have (no token covers more characters than
        # the longest in the vocabulary): longer prompts are refused before any tokenizer call.
        self.context = getattr(model.config, "max_sequence_length", None) or getattr(model.config,
                                                                                    "max_position_embeddings", None)
        longest = max((len(token) for token in self.tokenizer.get_vocab()), default=1)
        self.max_prompt_chars = self.context * max(longest, 1) if self.context else None
        self.mask_token = self.tokenizer.convert_ids_to_tokens(model.config.mask_token_id)

    def names(self) -> set[str]:
        """The values of a request's `model` that name this model."""
        name = self.name
        names = {name, name.rstrip("/"), os.path.basename(name.rstrip("/"))}
        if not os.path.exists(name) and "@" not in name:
            names.add(f"{name}@main")
        return names

    def card(self) -> dict:
        """This model's entry in `/v1/models`."""
        owner = "local" if os.path.exists(self.name) else (self.name.split("/")[0] if "/" in self.name else "")
        return {"id": self.name, "object": "model", "created": 0, "owned_by": owner, "status": {"value": "loaded"}}


class TokenizerWorkers:
    """Where requests are checked and tokenized: `workers` threads, each with its own copy of the tokenizer (made when
    the server starts), so that no request waits for a lock another request holds while it tokenizes."""

    def __init__(self, tokenizer, workers: int = PREPARE_WORKERS):
        import queue
        from concurrent.futures import ThreadPoolExecutor

        copies: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(workers):
            copies.put(copy.deepcopy(tokenizer))
        self.local = threading.local()

        def take_copy() -> None:  # each worker thread, once, when it starts
            self.local.tokenizer = copies.get_nowait()

        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llada-prepare", initializer=take_copy)

    def tokenizer(self):
        """This worker thread's own tokenizer."""
        return self.local.tokenizer

    async def run(self, fn, *args):
        return await asyncio.wrap_future(self.pool.submit(fn, *args))

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class _Unsupported:
    """The endpoints of OpenAI's API that a diffusion text model does not serve."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    async def handle_request(self, *args, **kwargs):
        raise RequestError(404, f"{self.endpoint} is not served for LLaDA models; use /v1/chat/completions or "
                                "/v1/completions")


class LLaDAHandler:
    """`/v1/chat/completions` (`chat=True`) and `/v1/completions` for one served model."""

    def __init__(self, served: ServedModel, defaults: dict, max_new_tokens: int | None, engine: BatchingEngine,
                 chat: bool, workers: TokenizerWorkers | None = None):
        self.served, self.defaults = served, defaults
        self.default_budget, self.engine, self.chat = max_new_tokens, engine, chat
        self.workers = workers or TokenizerWorkers(served.tokenizer, 1)

    # --- request -> job

    def _check_model(self, body: dict) -> None:
        requested = body.get("model")
        if requested is None:
            return
        if not isinstance(requested, str) or requested not in self.served.names():
            raise RequestError(404, f"`model`: the model {requested!r} is not served here; this server serves "
                                    f"{self.served.name!r}", param="model", code="model_not_found")

    def _prepare(self, body: dict) -> dict:
        """On a worker thread, with its own tokenizer: the checks, then the prompt's ids (the cheap character bound
        first, so that a prompt that cannot fit is refused before it is tokenized)."""
        check_fields(body, CHAT_FIELDS if self.chat else COMPLETION_FIELDS)
        self._check_model(body)
        settings = sampling_settings(body, self.defaults, type(self.served.model.generation_config))
        model, tokenizer = self.served.model, self.workers.tokenizer()
        prompt_field = "messages" if self.chat else "prompt"
        check_prompt_chars(prompt_chars(body, self.chat), self.served.max_prompt_chars, prompt_field,
                           self.served.context)
        if self.chat:
            messages = chat_messages(body)
            extra = template_kwargs(body)
            if not getattr(tokenizer, "chat_template", None):
                raise field_error("messages", "this model's tokenizer has no chat template; use /v1/completions")
            try:
                ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                    return_dict=True, **extra)["input_ids"]
            except Exception as error:  # noqa: BLE001 (a template that rejects the conversation: the client's)
                param = "chat_template_kwargs" if extra else "messages"
                raise field_error(param, f"the chat template rejects these messages"
                                         f"{' with these chat_template_kwargs' if extra else ''}: "
                                         f"{' '.join(str(error).split())}") from None
            if ids and isinstance(ids[0], list):
                ids = ids[0]
        else:
            ids = tokenizer(completion_prompt(body))["input_ids"]
        return self._new_job(model, tokenizer, list(ids), settings, prompt_field)

    def _new_job(self, model, tokenizer, ids: list[int], settings: dict, prompt_field: str) -> dict:
        """The `generate` call: canvas length, block schedule and checked settings."""
        from modeling_llada.answers_llada import end_token_ids

        config = model.generation_config
        kwargs = dict(settings["kwargs"])
        budget = settings["max_tokens"] or self.default_budget or getattr(config, "max_new_tokens", None) or 128
        block = kwargs.get("block_length") or getattr(config, "block_length", None) or budget
        canvas = -(-budget // block) * block  # whole blocks; the answer is cut at the budget
        blocks = canvas // block
        if kwargs.get("steps") is None:
            # the checkpoint's steps per token, kept for any canvas length (one token per step without one)
            ratio = 1.0
            if getattr(config, "steps", None) and getattr(config, "max_new_tokens", None):
                ratio = config.steps / config.max_new_tokens
            kwargs["steps"] = max(blocks, round(canvas * ratio / blocks) * blocks)
        kwargs.update(max_new_tokens=canvas, block_length=block, early_exit=True)
        if settings["n"] > 1:
            kwargs["num_return_sequences"] = settings["n"]
        limit = getattr(model.config, "max_sequence_length", None) or getattr(model.config,
                                                                             "max_position_embeddings", None)
        if settings.get("steps_requested") and kwargs["steps"] > canvas:  # a step commits a position at least:
            # more steps than positions are only wasted work (10**9 of them held the generation thread for minutes)
            raise field_error("steps", f"{kwargs['steps']} is more than the answer's {canvas} positions "
                                       f"(max_tokens {budget} in blocks of {block}); use at most {canvas} steps")
        if limit is not None and canvas > limit:
            raise field_error(settings.get("budget_field", "max_tokens"),
                              f"{budget} (an answer of {canvas} positions) exceeds the model's context of {limit} "
                              f"tokens; lower it")
        if limit is not None and len(ids) + canvas > limit:
            raise field_error(prompt_field, f"the prompt ({len(ids)} tokens) plus the answer budget ({canvas} "
                                            f"positions) exceeds the model's context of {limit} tokens; shorten the "
                                            "prompt or lower max_tokens")
        check = copy.deepcopy(config)
        try:  # the combination (steps vs blocks, threshold vs remasking, ...), as generate will check it
            check.update(**kwargs)
            check.validate()
        except ValueError as error:
            message = " ".join(str(error).split())
            import re

            param = next((f for f in (*DIFFUSION_FIELDS, "top_p", "temperature", "seed")
                          if re.search(rf"\b{f}\b", message)), "max_tokens")
            raise field_error(param, message) from None
        end_ids = end_token_ids(config.eos_token_id, tokenizer)
        # decoding happens on the generation thread, with the served tokenizer (which only that thread uses)
        return {"model": model, "tokenizer": self.served.tokenizer, "ids": ids, "kwargs": kwargs, "budget": budget,
                "stops": settings["stop"], "n": settings["n"], "stream": settings["stream"],
                "draft": settings["draft"], "end_ids": end_ids, "include_usage": settings["include_usage"]}

    async def handle_request(self, body: dict, request_id: str, is_disconnected=None):
        """`is_disconnected`: an async callable that says the client has gone (a non-streamed request then leaves the
        engine at its next step, as a streamed one does when its stream is closed)."""
        from fastapi.responses import JSONResponse, StreamingResponse

        try:
            self.engine.check_alive()
            job = await self.workers.run(self._prepare, body)
            model_id = body.get("model") or self.served.name
            if job["stream"]:
                events = self._stream_job(job)  # queued now: a full queue is a 429, not a broken stream
                return StreamingResponse(self._stream(job, events, request_id, model_id),
                                         media_type="text/event-stream")
            answers = await self._generate_all(job, is_disconnected)
        except RequestError as error:
            return JSONResponse(error.body(), status_code=error.status, headers=error.headers)
        return JSONResponse(self._response(request_id, model_id, job, answers))

    # --- generation: jobs for the engine; their answers are decoded on the engine thread

    def _tracker(self, job: dict) -> AnswerText:
        """Where each answer ends: the library's one rule (decoding on the engine thread only)."""
        from modeling_llada.answers_llada import AnswerText  # loaded with the model already

        return AnswerText(job["tokenizer"], job["end_ids"], job["stops"], job["budget"])

    def _inputs(self, job: dict, streamer=None) -> dict:
        """`model.start_denoising`'s arguments for `job`: what `generate` would get."""
        import torch

        ids = torch.tensor([job["ids"]], device=job["model"].device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "streamer": streamer, **job["kwargs"]}

    def _request_error(self, error: BaseException) -> RequestError:
        """What a request whose generation raised `error` is answered: a setting `generate` refuses is the
        request's (400); anything else the engine's (500, or 503 when it killed the engine)."""
        if isinstance(error, RequestError):
            return error
        if isinstance(error, ValueError):
            return field_error("max_tokens", " ".join(str(error).split()))
        return self.engine.failure(error)

    async def _run(self, engine_job: EngineJob, is_disconnected=None) -> None:
        """Queue `engine_job` and wait for it to leave; a request whose client goes away (`is_disconnected`, or its
        coroutine cancelled) cancels its job, which leaves the batch at the next step."""
        future = asyncio.wrap_future(self.engine.submit(engine_job))
        try:
            while not (await asyncio.wait({future}, timeout=DISCONNECT_POLL_S))[0]:
                if is_disconnected is not None and not engine_job.cancelled.is_set() and await is_disconnected():
                    engine_job.cancelled.set()
            await future
        except Exception as error:  # noqa: BLE001
            raise self._request_error(error) from None
        finally:
            engine_job.cancelled.set()  # a no-op once it has left

    async def _generate_all(self, job: dict, is_disconnected=None) -> list[AnswerText]:
        if job["n"] == 1:  # through the streamer: leaves as soon as the answer is complete
            tracker = self._tracker(job)
            streamer = CommitStreamer(tracker, lambda item: None, threading.Event())

            def finish(result, error) -> None:  # on the engine thread
                if error is None:
                    tracker.finish()

            await self._run(EngineJob(self._inputs(job, streamer), rows=1, complete=lambda: tracker.done,
                                      on_end=finish), is_disconnected)
            return [tracker]
        trackers = []

        def answers(result, error) -> None:  # on the engine thread
            if error is None:
                for row in result[:, len(job["ids"]):].tolist():
                    tracker = self._tracker(job)
                    tracker.feed(row)
                    tracker.finish()
                    trackers.append(tracker)

        await self._run(EngineJob(self._inputs(job), rows=job["n"], on_end=answers), is_disconnected)
        return trackers

    # --- responses

    def _usage(self, job: dict, answers: list[AnswerText]) -> dict:
        completion = sum(a.completion_tokens for a in answers)
        prompt = len(job["ids"])
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _response(self, request_id: str, model_id: str, job: dict, answers: list[AnswerText]) -> dict:
        if self.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": a.text},
                        "finish_reason": a.finish_reason, "logprobs": None} for i, a in enumerate(answers)]
            kind = "chat.completion"
        else:
            choices = [{"index": i, "text": a.text, "finish_reason": a.finish_reason, "logprobs": None}
                       for i, a in enumerate(answers)]
            kind = "text_completion"
        return {"id": request_id, "object": kind, "created": int(time.time()), "model": model_id,
                "choices": choices, "usage": self._usage(job, answers)}

    def _chunk(self, request_id: str, model_id: str, text: str | None = None, role: str | None = None,
               finish_reason: str | None = None, draft: str | None = None) -> str:
        if self.chat:
            delta = {}
            if role is not None:
                delta["role"] = role
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
            kind = "text_completion"
        if draft is not None:
            choice[DRAFT_FIELD] = draft
        chunk = {"id": request_id, "object": kind, "created": int(time.time()), "model": model_id,
                 "choices": [choice]}
        return f"data: {json.dumps(chunk)}\n\n"

    def _usage_chunk(self, request_id: str, model_id: str, usage: dict) -> str:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return "data: " + json.dumps({"id": request_id, "object": kind, "created": int(time.time()), "model": model_id,
                                      "choices": [], "usage": usage}) + "\n\n"

    def _draft_text(self, tokenizer, mask_token):
        def render(canvas: list[int]) -> str:  # on the generation thread
            text = tokenizer.decode(canvas, skip_special_tokens=False)
            return text.replace(mask_token, MASK_GLYPH) if isinstance(mask_token, str) else text

        return render

    def _stream_job(self, job: dict):
        """Queue a streamed request's job (a full queue raises its 429 here); returns what `_stream` reads."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        tracker = self._tracker(job)

        def emit(item) -> None:  # from the engine thread
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def finish(result, error) -> None:  # on the engine thread
            if error is not None:
                emit(("error", self._request_error(error).body()))
            elif not engine_job.cancelled.is_set():
                rest = tracker.finish()
                if rest:
                    emit(("text", rest))
            emit(("end", None))

        engine_job = EngineJob(self._inputs(job), rows=1, complete=lambda: tracker.done, on_end=finish)
        draft = self._draft_text(job["tokenizer"], self.served.mask_token) if job["draft"] else None
        engine_job.inputs["streamer"] = (DraftStreamer(tracker, emit, engine_job.cancelled, draft) if draft
                                         else CommitStreamer(tracker, emit, engine_job.cancelled))
        self.engine.submit(engine_job)
        return engine_job, queue, tracker

    async def _stream(self, job: dict, events, request_id: str, model_id: str):
        engine_job, queue, tracker = events
        try:
            yield self._chunk(request_id, model_id, role="assistant", text="" if self.chat else None)
            while True:
                kind, value = await queue.get()
                if kind == "end":
                    break
                if kind == "error":
                    yield f"data: {json.dumps(value)}\n\n"
                    return
                if kind == "text":
                    yield self._chunk(request_id, model_id, text=value)
                elif kind == "draft":
                    yield self._chunk(request_id, model_id, text="" if self.chat else None, draft=value)
            yield self._chunk(request_id, model_id, finish_reason=tracker.finish_reason, text=None)
            if job["include_usage"]:  # OpenAI's stream_options.include_usage: one more chunk, no choices
                yield self._usage_chunk(request_id, model_id, self._usage(job, [tracker]))
            yield "data: [DONE]\n\n"
        finally:
            # a client that went away (GeneratorExit / CancelledError here): its job leaves at the next step
            engine_job.cancelled.set()


class _RequestId:
    """ASGI middleware: the request's id (its `X-Request-ID` header, else a new one) in `request.state.request_id`
    and in the response's header. Plain ASGI, so streamed chunks pass straight through."""

    header = "x-request-id"

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        import uuid

        from starlette.datastructures import Headers, MutableHeaders

        request_id = Headers(scope=scope).get(self.header) or f"llada-{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[self.header] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


def build_app(args):
    """The FastAPI app serving `args.model`: `/v1/chat/completions`, `/v1/completions`, `/v1/models` and `/health`;
    every error in OpenAI's shape."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    served = ServedModel(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    defaults = {name: getattr(args, name, None) for name in DIFFUSION_FIELDS}
    engine = BatchingEngine(served.model, max_batch_size=getattr(args, "max_batch_size", None) or
                            DEFAULT_MAX_BATCH_SIZE, max_queue=getattr(args, "max_queue", None) or DEFAULT_MAX_QUEUE)
    workers = TokenizerWorkers(served.tokenizer)
    max_bytes = getattr(args, "max_request_bytes", None) or DEFAULT_MAX_REQUEST_BYTES

    @asynccontextmanager
    async def lifespan(_app):
        yield
        engine.shutdown()
        workers.shutdown()

    app = FastAPI(title="llada-hf serve", lifespan=lifespan)
    app.state.served, app.state.engine = served, engine
    app.add_middleware(_RequestId)

    async def request_error(_request, error: RequestError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    async def http_error(request, error: HTTPException):  # unknown route, wrong method
        message = f"{error.detail}: {request.method} {request.url.path}"
        return JSONResponse(RequestError(error.status_code, message).body(), status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    async def validation_error(_request, error: RequestValidationError):  # FastAPI's own 422
        problems = error.errors()
        where = ".".join(str(part) for part in problems[0].get("loc", ())[1:]) if problems else ""
        message = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in problems)
        return JSONResponse(RequestError(422, message or "invalid request", param=where or None).body(),
                            status_code=422)

    async def internal_error(request, error: Exception):  # 500, or 503 when the error killed the engine
        return await request_error(request, engine.failure(error))

    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)

    def too_large(size: str) -> RequestError:
        return RequestError(413, f"the request body is {size} bytes, over the server's cap of {max_bytes} bytes "
                                 "(llada-hf serve --max_request_bytes); send a shorter prompt",
                            code="request_too_large")

    async def discard_rest(chunks, read: int) -> None:
        """Reads the rest of a refused body (`chunks`, the request's stream) without keeping it, up to `DRAIN_BYTES`
        in all, so that the client gets the 413 instead of a connection reset (closing a socket with unread data
        resets it)."""
        async for part in chunks:
            read += len(part)
            if read > DRAIN_BYTES:
                return

    async def read_body(request) -> bytes:
        """The body, refused (413) from its Content-Length, or as soon as what was read passes the cap; nothing past
        the cap is kept or parsed. A compressed body (a Content-Encoding other than identity) gets 415."""
        declared = request.headers.get("content-length")
        chunks = request.stream()
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            await discard_rest(chunks, 0)
            raise RequestError(415, f"Content-Encoding {encoding!r} is not supported by llada-hf serve; send the "
                                    "body uncompressed, without a Content-Encoding header",
                               code="unsupported_content_encoding")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await discard_rest(chunks, 0)
            raise too_large(declared)
        parts, size = [], 0
        async for part in chunks:
            size += len(part)
            if size > max_bytes:
                parts.clear()
                await discard_rest(chunks, size)
                raise too_large(f"more than {max_bytes}")
            parts.append(part)
        return b"".join(parts)

    def parse(raw: bytes):
        try:
            return json.loads(raw)
        except ValueError as error:  # (UnicodeDecodeError included)
            raise RequestError(400, f"the request body is not valid JSON ({error}); send a JSON object") from None
        except RecursionError:  # arrays/objects nested thousands deep
            raise RequestError(400, "the request body is nested too deeply to parse as JSON; send a JSON object "
                                    "of OpenAI's fields") from None

    def endpoint(handler):
        async def handle(request):
            raw = await read_body(request)
            body = await workers.run(parse, raw)  # off the event loop: a large body delays no other request
            return await handler.handle_request(body, request.state.request_id, request.is_disconnected)

        handle.__annotations__["request"] = Request  # the class itself: this module's annotations are strings
        return handle

    handlers = {"/v1/chat/completions": LLaDAHandler(served, defaults, args.max_new_tokens, engine, chat=True,
                                                     workers=workers),
                "/v1/completions": LLaDAHandler(served, defaults, args.max_new_tokens, engine, chat=False,
                                                workers=workers),
                **{path: _Unsupported(path) for path in ("/v1/responses", "/v1/audio/transcriptions",
                                                        "/v1/embeddings")}}
    for path, handler in handlers.items():
        app.add_api_route(path, endpoint(handler), methods=["POST"])

    @app.get("/v1/models")
    def list_models():
        return JSONResponse({"object": "list", "data": [served.card()]})

    @app.get("/health")
    def health():
        if engine.dead is not None:
            return JSONResponse({"status": "unhealthy", "reason": engine.dead}, status_code=503)
        return JSONResponse({"status": "ok", **engine.load()})

    return app


def _check_args(args) -> None:
    for name in ("max_batch_size", "max_queue"):
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"--{name} {value}: must be at least 1.")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is not a port number (1-65535).")
    if args.max_request_bytes < 1024:
        raise ValueError(f"--max_request_bytes {args.max_request_bytes}: must be at least 1024 (a request's JSON "
                         f"needs room); the default is {DEFAULT_MAX_REQUEST_BYTES}.")
    for name in ("max_new_tokens", *DIFFUSION_FIELDS):  # checked as a request's fields are
        value = getattr(args, name)
        if value is not None:
            try:
                check_setting(name, value)
            except ValueError as error:
                raise ValueError(f"--{name} {value}: {' '.join(str(error).split())}") from None


def run(argv: list[str] | None = None) -> int:
    """`llada-hf serve MODEL [options]`: serve until interrupted."""
    args = build_parser().parse_args(argv)
    _check_args(args)
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise SystemExit(f"llada-hf serve needs the 'serve' extra: pip install 'llada-hf[serve]' ({error}).") from None
    from .loading import check_llada_checkpoint, check_model_source

    check_model_source(args.model, "model")
    check_llada_checkpoint(args.model, "model")
    import logging

    logging.getLogger("transformers").setLevel(args.log_level.upper())  # transformers' loggers are stdlib loggers
    app = build_app(args)
    print(f"llada-hf serve: {args.model} on http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level)).run()
    return 0

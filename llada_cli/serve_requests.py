"""What a request to `llada-hf serve` may hold, and its checks: OpenAI's fields of `/v1/chat/completions` and
`/v1/completions`, LLaDA's diffusion extras, and errors in OpenAI's shape that name the field (`param`).

The sampler settings a request carries (`temperature`, `top_p`, `seed`, `steps`, `block_length`, `threshold`,
`kv_cache`, `remasking`) are checked by the model's generation config class (`check_setting`), one field at a time;
`llada_cli.serve` checks their combination the same way once the canvas is known. Everything here runs without a
model (unit-testable); importing it costs nothing.
"""

from __future__ import annotations

from typing import Any

# The diffusion settings a request may carry as extra fields, and their server-wide defaults (the flags). Their values,
# like those of `temperature`, `top_p` and `seed`, are checked by the model's generation config class.
DIFFUSION_FIELDS = ("steps", "block_length", "threshold", "kv_cache", "remasking")
# Of those, the ones a request turns off with null (the exact sampler), whatever the server's default.
_NULL_TURNS_OFF = ("threshold", "kv_cache")
DRAFT_REQUEST_FIELD = "stream_denoising_draft"
MAX_N = 16
SEED_LIMIT = 2**32  # the sampler's seeds are 32-bit: a request's seed is used exactly, so 0 <= seed < 2**32
# The cap on a request body (`llada-hf serve --max_request_bytes`): 4 MiB. A prompt that fills a 32k-token context is
# about 130 KB of English as JSON (~4 bytes a token) and about 300 KB of CJK text as \u-escaped JSON (~9 bytes a
# token: 6 bytes a character), so 4 MiB is more than 10x what any prompt that fits a LLaDA context needs; `json.loads`
# of a 4 MiB body took 10 ms on one CPU core (measured), and it runs off the event loop.
DEFAULT_MAX_REQUEST_BYTES = 4 * 2**20
# `apply_chat_template` arguments the server sets itself, or that change what it returns: a request's
# `chat_template_kwargs` may not hold them.
RESERVED_TEMPLATE_KWARGS = ("conversation", "messages", "add_generation_prompt", "continue_final_message", "tokenize",
                            "return_dict", "return_tensors", "padding", "truncation", "max_length",
                            "return_assistant_tokens_mask", "tokenizer_kwargs", "chat_template", "tools", "documents")

# Request fields each endpoint accepts (OpenAI's, plus the diffusion extras). Others get a 422 naming them, as in
# transformers serve; fields OpenAI defines that a diffusion model cannot honour get a 400 naming them.
_COMMON_FIELDS = {"model", "stream", "max_tokens", "temperature", "top_p", "stop", "seed", "n", "user",
                  "stream_options", "generation_config", DRAFT_REQUEST_FIELD, *DIFFUSION_FIELDS}
CHAT_FIELDS = _COMMON_FIELDS | {"messages", "max_completion_tokens", "chat_template_kwargs", "metadata", "store",
                                "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "logit_bias",
                                "tools", "tool_choice", "parallel_tool_calls", "response_format", "service_tier",
                                "reasoning_effort", "modalities", "audio", "prediction", "web_search_options",
                                "functions", "function_call"}
COMPLETION_FIELDS = _COMMON_FIELDS | {"prompt", "echo", "suffix", "best_of", "logprobs", "logit_bias",
                                      "frequency_penalty", "presence_penalty"}
# Accepted when neutral (absent, null, 0, false, empty), refused otherwise: nothing in a diffusion sampler does them.
_NEUTRAL_ONLY = ("frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "logit_bias", "tools",
                 "tool_choice", "functions", "function_call", "response_format", "echo", "suffix", "audio",
                 "prediction", "generation_config", "reasoning_effort", "web_search_options", "store", "modalities",
                 "service_tier")
# Values of those fields that ask for what the server does anyway (OpenAI's defaults): accepted.
_DEFAULT_VALUES = {"response_format": ({"type": "text"},), "modalities": (["text"],),
                   "service_tier": ("default",)}


class RequestError(Exception):
    """A request the server will not run: answered with `status` and an OpenAI-style error naming `param`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def body(self) -> dict:
        kind = "server_error" if self.status >= 500 else "not_found_error" if self.status == 404 \
            else "invalid_request_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def field_error(param: str, message: str, status: int = 400) -> RequestError:
    return RequestError(status, f"`{param}`: {message}", param=param)


# ------------------------------------------------------------------------------------------------------------------
# Request validation (unit-testable without a model: the sampler settings are checked by the generation config class)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _neutral(value) -> bool:
    return value in (None, 0, False, "", [], {}, "none", "auto") or value == 0.0


def check_fields(body: Any, allowed: set[str]) -> None:
    """The body is a JSON object with only known fields, and the fields a diffusion model cannot honour are neutral."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(422, f"Unexpected fields in the request: {unknown}; LLaDA's extra fields are "
                                f"{[*DIFFUSION_FIELDS, DRAFT_REQUEST_FIELD]}", param=unknown[0])
    for name in _NEUTRAL_ONLY:
        if name in body and not _neutral(body[name]) and body[name] not in _DEFAULT_VALUES.get(name, ()):
            raise field_error(name, f"not supported by LLaDA's diffusion generation (got {body[name]!r}); leave it out")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise field_error("user", f"must be a string (an id of the end user), got {user!r}")
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise field_error("metadata", f"must be an object of string values, got {metadata!r}")
    best_of = body.get("best_of")
    if best_of is not None:
        n = body.get("n") if body.get("n") is not None else 1
        if not _is_int(best_of) or best_of != n:
            raise field_error("best_of", f"only best_of equal to n ({n!r}) is supported (choosing the best of several "
                                         f"answers needs their log-probabilities), got {best_of!r}; leave it out")


def check_setting(name: str, value: Any, config_class=None) -> None:
    """Check one sampler setting on its own through the model's generation config class (`LLaDAGenerationConfig`
    when none is given): its `validate`, on the class's defaults with this value. Raises `ValueError` with the class's
    message, which names the setting."""
    if config_class is None:
        from modeling_llada.generation_llada import LLaDAGenerationConfig as config_class
    config = config_class()
    try:
        config.update(**{name: value})
        config.validate()
    except TypeError:  # a value of a JSON type that a comparison in `validate` cannot take
        raise ValueError(f"`{name}` cannot be {value!r} (a {type(value).__name__})") from None


def sampling_settings(body: dict, defaults: dict, config_class=None) -> dict:
    """The request's generation settings, checked one by one: `max_tokens`, `n`, `stop`, `stream` and the
    `model.generate` kwargs (`temperature`, `top_p`, `seed` and the diffusion settings, the server's defaults first;
    their values checked by `config_class`, the model's generation config class, see `check_setting`). Raises
    `RequestError` naming the field."""
    out: dict[str, Any] = {}
    for budget_field in ("max_tokens", "max_completion_tokens"):
        budget = body.get(budget_field)
        if budget is not None and (not _is_int(budget) or budget < 1):
            raise field_error(budget_field, f"must be a positive integer, got {budget!r}")
    budget = body.get("max_completion_tokens")
    if budget is None:
        budget = body.get("max_tokens")
    elif body.get("max_tokens") is not None and body["max_tokens"] != budget:
        raise field_error("max_completion_tokens", f"{budget} disagrees with `max_tokens` {body['max_tokens']}; "
                                                   "send one of them (max_completion_tokens replaces max_tokens)")
    out["max_tokens"] = budget
    out["budget_field"] = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    out["steps_requested"] = body.get("steps") is not None
    n = body.get("n", 1) if body.get("n") is not None else 1
    if not _is_int(n) or not 1 <= n <= MAX_N:
        raise field_error("n", f"must be an integer from 1 to {MAX_N}, got {n!r}")
    out["n"] = n
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise field_error("stream", f"must be true or false, got {stream!r}")
    out["stream"] = stream
    if stream and n > 1:
        raise field_error("n", "streaming answers one choice at a time; use n=1 with stream, or stream=false")
    draft = body.get(DRAFT_REQUEST_FIELD) or False
    if not isinstance(draft, bool):
        raise field_error(DRAFT_REQUEST_FIELD, f"must be true or false, got {draft!r}")
    out["draft"] = draft and stream
    out["include_usage"] = stream_usage(body.get("stream_options"), stream)
    stop = body.get("stop")
    if stop is None:
        stops = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = list(stop)
    else:
        raise field_error("stop", f"must be a string or a list of up to 4 strings, got {stop!r}")
    if any(s == "" for s in stops):
        raise field_error("stop", "stop strings must not be empty")
    out["stop"] = stops

    def checked(name: str, value: Any) -> Any:
        try:
            check_setting(name, value, config_class)
        except ValueError as error:
            message = " ".join(str(error).split())
            named = f"`{name}`" in message  # the class's message names the setting already
            raise (RequestError(400, message, param=name) if named else field_error(name, message)) from None
        return value

    kwargs: dict[str, Any] = {k: v for k, v in defaults.items() if v is not None}
    temperature = body.get("temperature")
    if temperature is not None:
        if checked("temperature", temperature) > 2:
            raise field_error("temperature", f"must be a number from 0 to 2 (OpenAI's range), got {temperature!r}")
        kwargs["temperature"] = float(temperature)
        kwargs["do_sample"] = temperature > 0
    if body.get("top_p") is not None:
        kwargs["top_p"] = float(checked("top_p", body["top_p"]))
    seed = body.get("seed")
    if seed is not None:
        if not _is_int(seed):  # generate also takes a list (a seed per prompt); a request has one prompt
            raise field_error("seed", f"must be an integer, got {seed!r}")
        if not 0 <= seed < SEED_LIMIT:  # the sampler's seeds are 32-bit: a larger one would alias a smaller one
            raise field_error("seed", f"must be from 0 to {SEED_LIMIT - 1} (2**32 - 1), the seeds the sampler uses "
                                      f"exactly; got {seed}")
        kwargs["seed"] = checked("seed", seed)
    for name in DIFFUSION_FIELDS:
        value = body.get(name)
        if value is not None:
            kwargs[name] = checked(name, value)
        elif name in body and name in _NULL_TURNS_OFF:  # null turns a server default off: the exact sampler
            kwargs[name] = None
    out["kwargs"] = kwargs
    return out


def stream_usage(options: Any, stream: bool) -> bool:
    """`stream_options` as OpenAI defines it: `{"include_usage": true}` adds a last chunk with the usage (and empty
    `choices`) before `[DONE]`; otherwise no chunk carries usage. Only for streamed requests."""
    if options is None:
        return False
    if not stream:
        raise field_error("stream_options", "is only allowed with \"stream\": true")
    if not isinstance(options, dict):
        raise field_error("stream_options", f"must be an object such as {{\"include_usage\": true}}, got {options!r}")
    unknown = sorted(set(options) - {"include_usage", "include_obfuscation"})
    if unknown:
        raise field_error("stream_options", f"unknown option(s) {unknown}; the options are include_usage and "
                                            "include_obfuscation")
    if options.get("include_obfuscation"):  # OpenAI's padding of chunks against length side channels: not done here
        raise field_error("stream_options", "`include_obfuscation` is not supported by llada-hf serve (chunks are "
                                            "not padded); leave it out or set it to false")
    include = options.get("include_usage")
    if include is not None and not isinstance(include, bool):
        raise field_error("stream_options", f"`include_usage` must be true or false, got {include!r}")
    return bool(include)


def template_kwargs(body: dict) -> dict:
    """A chat request's `chat_template_kwargs`: an object whose keys are the template's own variables, none of the
    arguments the server passes itself (`RESERVED_TEMPLATE_KWARGS`)."""
    extra = body.get("chat_template_kwargs")
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise field_error("chat_template_kwargs", f"must be an object of template variables, got {extra!r}")
    clashing = [key for key in extra if key in RESERVED_TEMPLATE_KWARGS]
    if clashing:
        raise field_error("chat_template_kwargs", f"{clashing} are set by the server (or change what the template "
                                                  "returns), not by a request; leave them out")
    return extra


def prompt_chars(body: dict, chat: bool) -> int:
    """The characters of a request's prompt (its messages' text, or the completion prompt), once checked."""
    if chat:
        return sum(len(message["content"]) for message in chat_messages(body))
    return len(completion_prompt(body))


def check_prompt_chars(chars: int, max_chars: int | None, param: str, context: int | None) -> None:
    """Refuses, before any tokenizer call, a prompt of more characters than `max_chars`: one so long that its tokens
    cannot fit the model's `context` (no token covers more characters than the longest in the vocabulary)."""
    if max_chars is not None and chars > max_chars:
        raise field_error(param, f"the prompt has {chars} characters, more than the {max_chars} that can fit in the "
                                 f"model's context of {context} tokens; shorten the prompt")


def _text(param: str, text: str) -> str:
    """`text`, checked to be valid Unicode (JSON's \\ud800-style escapes can carry lone surrogates, which no
    tokenizer can encode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise field_error(param, f"is not valid Unicode text: a lone surrogate {text[error.start]!r} at character "
                                 f"{error.start}; send UTF-8 text") from None
    return text


def chat_messages(body: dict) -> list[dict]:
    """OpenAI chat messages as the chat template wants them (text content only); raises naming the message."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise field_error("messages", "must be a non-empty list of {role, content} objects")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise field_error(where, f"must be an object with `role` and `content`, got {message!r}")
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise field_error(f"{where}.role", f"must be system, developer, user, assistant or tool, got {role!r}")
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise field_error(f"{where}.content[{j}]", "LLaDA reads text only: each part must be "
                                                               "{\"type\": \"text\", \"text\": \"...\"}")
                parts.append(part["text"])
            content = " ".join(parts)
        elif content is None and role == "assistant":
            content = ""
        if not isinstance(content, str):
            raise field_error(f"{where}.content", f"must be a string or a list of text parts, got {content!r}")
        out.append({"role": "system" if role == "developer" else role, "content": _text(f"{where}.content", content)})
    return out


def completion_prompt(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(_is_int(i) for i in prompt):
        raise field_error("prompt", "a prompt of token ids is not supported by llada-hf serve; send the prompt as "
                                    "text (one string)")
    if not isinstance(prompt, str) or not prompt:
        raise field_error("prompt", f"must be a non-empty string (one prompt per request), got {prompt!r:.80}")
    return _text("prompt", prompt)

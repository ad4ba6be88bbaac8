"""`llada-hf serve`: bad requests to its OpenAI-compatible endpoints, HTTP-level misuse, and requests that try to stall
or flood the server.

Most cases use the app in process (FastAPI's test client); the stall/flood cases use a real server (a `llada-hf serve`
subprocess) over real sockets. The model is the quickstart's tiny dense LLaDA (context 256 tokens, BPE vocabulary of
1024), built once per run (or the folder named by LLADA_HF_SERVE_TEST_MODEL, as the tests use).

A refused request raises `Refused("<status> [<param>] <message>")` when its error has OpenAI's shape; a 5xx, or an
error in another shape, raises `BadReply` (so it can never count as a clear error).
"""

from __future__ import annotations

import atexit
import gzip
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bad_inputs.harness import Case

ROOT = Path(__file__).resolve().parents[2]
_STATE: dict = {}
CHAT, COMP = "/v1/chat/completions", "/v1/completions"
USER = [{"role": "user", "content": "Repeat: 1 2 3"}]
FLAGS = ["--device", "cpu", "--max_new_tokens", "4", "--block_length", "4", "--steps", "4"]


class Refused(Exception):
    """A 4xx in OpenAI's error shape: `<status> [<param>] <message>`."""


class BadReply(Exception):
    """A 5xx, or an error not in OpenAI's shape, or a malformed answer."""


def model_dir() -> Path:
    if "dir" not in _STATE:
        if os.environ.get("LLADA_HF_SERVE_TEST_MODEL"):
            _STATE["dir"] = Path(os.environ["LLADA_HF_SERVE_TEST_MODEL"])
        else:
            out = Path(tempfile.mkdtemp(prefix="llada-sweep-serve-"))
            subprocess.run([sys.executable, "-m", "llada_cli", "quickstart", "--quick", "--output_dir", str(out)],
                           check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=1200)
            _STATE["dir"] = out / "hub"
    return _STATE["dir"]


def client():
    if "client" not in _STATE:
        from fastapi.testclient import TestClient

        from llada_cli import serve

        args = serve.build_parser().parse_args([str(model_dir()), *FLAGS])
        app = serve.build_app(args)
        _STATE["client"] = TestClient(app).__enter__()
        _STATE["name"] = str(model_dir())
    return _STATE["client"]


def tok():
    if "tok" not in _STATE:
        from transformers import AutoTokenizer

        _STATE["tok"] = AutoTokenizer.from_pretrained(model_dir())
    return _STATE["tok"]


def _error(status: int, text: str):
    try:
        body = json.loads(text)
        error = body["error"]
        assert set(body) == {"error"} and set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
    except Exception:  # noqa: BLE001
        return BadReply(f"{status}, not OpenAI's error shape: {text[:300]}")
    if status >= 500:
        return BadReply(f"{status} [{error['param']}] {error['message']}")
    return Refused(f"{status} [{error['param']}] {error['message']}")


def events(text: str) -> list:
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def send(path=CHAT, body=None, raw=None, method="POST", headers=None, **fields):
    """Sends a request in process; returns the answer (a dict, or the stream's events) or raises Refused/BadReply."""
    if body is None and raw is None:
        body = dict(fields)
        if path == CHAT:
            body.setdefault("messages", USER)
        elif path == COMP:
            body.setdefault("prompt", "Repeat: 1 2 3")
    if raw is None and body is not None:
        raw = json.dumps(body).encode()
    hdrs = {"content-type": "application/json", **(headers or {})}
    reply = client().request(method, path, content=raw, headers=hdrs)
    if reply.status_code >= 400:
        raise _error(reply.status_code, reply.text)
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        chunks = events(reply.text)
        for chunk in chunks:
            if isinstance(chunk, dict) and "error" in chunk:
                raise _error(400 if chunk["error"].get("type") == "invalid_request_error" else 500,
                             json.dumps(chunk))
        return chunks
    return reply.json()


# --- independent truths ---------------------------------------------------------------------------------------------


def well_formed(answer: dict, n: int = 1, budget: int = 4) -> bool:
    """OpenAI's shape, n choices indexed 0..n-1, a finish reason, usage that adds up within the budget."""
    choices, usage = answer["choices"], answer["usage"]
    return ([c["index"] for c in choices] == list(range(n))
            and all(c["finish_reason"] in ("stop", "length") for c in choices)
            and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            and 0 <= usage["completion_tokens"] <= n * budget and usage["prompt_tokens"] > 0)


def text_of(answer: dict) -> str:
    choice = answer["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


def greedy(path=CHAT, **fields) -> dict:
    key = ("greedy", path, json.dumps(fields, sort_keys=True))
    if key not in _STATE:
        _STATE[key] = send(path, temperature=0, **fields)
    return _STATE[key]


def same_as_greedy(path=CHAT, **fields):
    def check(answer):
        return well_formed(answer) and text_of(answer) == text_of(greedy(path, **fields)) \
            and answer["usage"] == greedy(path, **fields)["usage"]

    return check


def completion_prompt_tokens(prompt: str):
    def check(answer):
        return well_formed(answer) and answer["usage"]["prompt_tokens"] == len(tok()(prompt)["input_ids"])

    return check


def chat_prompt_tokens(messages):
    def check(answer):
        ids = tok().apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return well_formed(answer) and answer["usage"]["prompt_tokens"] == len(ids["input_ids"])

    return check


def streamed(chunks) -> tuple[str, list, list]:
    assert chunks[-1] == "[DONE]"
    body = chunks[:-1]
    text = "".join((c["choices"][0].get("delta", {}).get("content") or c["choices"][0].get("text") or "")
                   for c in body if c["choices"])
    return text, [c for c in body if c.get("usage") is not None], body


def check_usage_stream(include: bool):
    def check(chunks):
        text, with_usage, body = streamed(chunks)
        reference = greedy()
        if text != text_of(reference):
            return False
        if not include:
            return with_usage == []
        return with_usage == [body[-1]] and body[-1]["choices"] == [] and body[-1]["usage"] == reference["usage"]

    return check


def check_stop():
    """A stop string taken from inside the greedy answer: the answer is the greedy one cut just before it."""
    def call():
        full = text_of(greedy(max_tokens=16, steps=16, block_length=16))
        cut = next((i for i in range(1, len(full)) if full[i].strip()), None)
        if cut is None:
            raise BadReply(f"the greedy answer {full!r} is too short to take a stop string from")
        stop = full[cut:cut + 2]
        answer = send(temperature=0, max_tokens=16, steps=16, block_length=16, stop=[stop, "\x00never"])
        return answer, full[:full.index(stop)]

    return Case("serve", "ok: stop string from inside the greedy answer cuts it there", call, "ok",
                check=lambda r: text_of(r[0]) == r[1] and r[0]["choices"][0]["finish_reason"] == "stop")


def seeded_repeat():
    def call():
        first = send(temperature=1.5, seed=4294967295, max_tokens=8, steps=8, block_length=8)
        second = send(temperature=1.5, seed=4294967295, max_tokens=8, steps=8, block_length=8)
        return first, second

    return Case("serve", "ok: seed 2**32-1 (the largest) is used: same seed, same answer", call, "ok",
                check=lambda r: well_formed(r[0], budget=8) and text_of(r[0]) == text_of(r[1]))


def seeds_differ():
    """Seeds are used exactly: over 6 seeds at temperature 1.5, not every answer is the same (the tiny model is
    uncertain enough), and each seed gives its own answer again."""
    def call():
        answers = {s: text_of(send(temperature=1.5, seed=s, max_tokens=8, steps=8, block_length=8))
                   for s in (1, 2, 3, 4, 5, 6)}
        again = text_of(send(temperature=1.5, seed=3, max_tokens=8, steps=8, block_length=8))
        return answers, again

    return Case("serve", "ok: different seeds give different samples, a seed repeats its own", call, "ok",
                check=lambda r: len(set(r[0].values())) > 1 and r[1] == r[0][3])


# --- the cases ------------------------------------------------------------------------------------------------------


def err(name, says, path=CHAT, **body):
    return Case("serve", name, lambda: send(path, **body), "error", says=says, error=Refused)


def err_raw(name, says, raw, path=CHAT, method="POST", headers=None):
    return Case("serve", name, lambda: send(path, raw=raw, method=method, headers=headers), "error", says=says,
                error=Refused)


def ok(name, check, path=CHAT, **body):
    return Case("serve", name, lambda: send(path, **body), "ok", check=check)


def _field_cases() -> list[Case]:
    big = "x" * (10 * 2**20)
    nested = b'{"messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    return [
        # the issue's own server cases
        err("issue: 10 MB prompt gets 413 before parsing", r"^413 .*max_request_bytes",
            messages=[{"role": "user", "content": big}]),
        err("issue: seed 5 + 2**32 refused (was read as 5)", r"^400 \[seed\].*4294967301", seed=4294967301,
            temperature=1.0),
        err("issue: max_tokens and max_completion_tokens disagree", r"^400 \[max_completion_tokens\].*8.*max_tokens.*4",
            max_tokens=4, max_completion_tokens=8),
        ok("issue: include_usage false sends no usage", check_usage_stream(False), stream=True,
           stream_options={"include_usage": False}, temperature=0),
        ok("issue: include_usage true: one last chunk with usage, no choices", check_usage_stream(True), stream=True,
           stream_options={"include_usage": True}, temperature=0),
        err("issue: chat_template_kwargs clash names chat_template_kwargs",
            r"^400 \[chat_template_kwargs\].*add_generation_prompt",
            chat_template_kwargs={"add_generation_prompt": False}),
        err_raw("issue: malformed JSON gets OpenAI's error shape", r"^400 .*not valid JSON", b'{"messages": [}'),
        # model
        err("model: unknown name", r"^404 \[model\].*'gpt-4o'", model="gpt-4o"),
        err("model: a number", r"^4\d\d \[model\].*\b7\b", model=7),
        ok("model: the served folder's basename", same_as_greedy(), model="hub", temperature=0),
        # n
        err("n: 0", r"^400 \[n\].*\b0\b", n=0),
        err("n: 17 (over the cap)", r"^400 \[n\].*17", n=17),
        err("n: 2.5", r"^400 \[n\].*2\.5", n=2.5),
        err("n: string", r"^400 \[n\].*'2'", n="2"),
        ok("n: 3 gives three choices", lambda a: well_formed(a, n=3), n=3, temperature=1.0, seed=1),
        ok("n: null is the default (one choice)", same_as_greedy(), n=None, temperature=0),
        err("n: 2 with stream", r"^400 \[n\].*stream", n=2, stream=True),
        # temperature / top_p
        err("temperature: negative", r"^400 \[temperature\].*-1", temperature=-1),
        err("temperature: 2.5 (over OpenAI's 2)", r"^400 \[temperature\].*2\.5", temperature=2.5),
        err("temperature: string", r"^400 \[temperature\].*hot", temperature="hot"),
        err("temperature: boolean", r"^400 \[temperature\].*True", temperature=True),
        err_raw("temperature: NaN literal", r"^400 \[temperature\].*nan",
                b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'),
        err_raw("temperature: Infinity literal", r"^400 \[temperature\].*inf",
                b'{"messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}'),
        ok("temperature: null is the default", same_as_greedy(), temperature=None, max_tokens=4),
        err("top_p: 0", r"^400 \[top_p\].*\b0\b", top_p=0),
        err("top_p: 1.5", r"^400 \[top_p\].*1\.5", top_p=1.5),
        err("top_p: list", r"^400 \[top_p\]", top_p=[0.5]),
        # token budgets
        err("max_tokens: 0", r"^400 \[max_tokens\].*\b0\b", max_tokens=0),
        err("max_tokens: string", r"^400 \[max_tokens\].*'4'", max_tokens="4"),
        err("max_tokens: a billion (over the 256-token context)", r"^400 \[max_tokens\].*1000000000",
            max_tokens=10**9),
        err_raw("max_tokens: 1e400 (infinite float)", r"^400 \[max_tokens\].*inf",
                b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}'),
        err_raw("max_tokens: 5000-digit integer", r"^400 .*(JSON|max_tokens).*(digits|integer)",
                b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"9" * 5000 + b"}"),
        ok("max_tokens: 1 gives at most one token", lambda a: well_formed(a, budget=1), max_tokens=1),
        ok("max_tokens equal to max_completion_tokens", lambda a: well_formed(a, budget=2), max_tokens=2,
           max_completion_tokens=2),
        # seed
        err("seed: 2**32", r"^400 \[seed\].*4294967296", seed=2**32, temperature=1.0),
        err("seed: negative", r"^400 \[seed\].*-1", seed=-1, temperature=1.0),
        err("seed: float", r"^400 \[seed\].*1\.5", seed=1.5),
        err("seed: string", r"^400 \[seed\].*'7'", seed="7"),
        seeded_repeat(),
        seeds_differ(),
        # stop
        err("stop: a list of 10 strings", r"^400 \[stop\].*4", stop=[f"s{i}" for i in range(10)]),
        err("stop: non-strings", r"^400 \[stop\].*1", stop=[1, 2]),
        err("stop: empty string", r"^400 \[stop\].*empty", stop=""),
        err("stop: an object", r"^400 \[stop\]", stop={"a": 1}),
        ok("stop: a 5000-character string cannot match: the greedy answer", same_as_greedy(), stop="9" * 5000,
           temperature=0),
        ok("stop: unicode, emoji and NUL stops that do not occur", same_as_greedy(),
           stop=["\u00e9\u00e9", "\U0001F600", "\x00"], temperature=0),
        check_stop(),
        # logprobs, tools, response_format, user and OpenAI fields a diffusion model cannot honour
        err("logprobs: true (chat)", r"^400 \[logprobs\].*True", logprobs=True),
        err("top_logprobs: 5", r"^400 \[top_logprobs\].*5", top_logprobs=5),
        err("logprobs: 3 (completions)", r"^400 \[logprobs\].*3", path=COMP, logprobs=3),
        ok("logprobs: false is the default", same_as_greedy(), logprobs=False, temperature=0),
        err("tools: one function", r"^400 \[tools\]",
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        err("tool_choice: required", r"^400 \[tool_choice\].*required", tool_choice="required"),
        err("response_format: json_object", r"^400 \[response_format\].*json_object",
            response_format={"type": "json_object"}),
        ok("response_format: text (OpenAI's default) is accepted", same_as_greedy(),
           response_format={"type": "text"}, temperature=0),
        err("response_format: unknown type", r"^400 \[response_format\].*yaml", response_format={"type": "yaml"}),
        ok("user: a string is accepted", same_as_greedy(), user="someone", temperature=0),
        err("user: a number", r"^400 \[user\].*123", user=123),
        err("logit_bias: a bias", r"^400 \[logit_bias\]", logit_bias={"5": 100}),
        err("frequency_penalty: 1", r"^400 \[frequency_penalty\].*1", frequency_penalty=1),
        err("reasoning_effort: high (not a reasoning model)", r"^400 \[reasoning_effort\].*high",
            reasoning_effort="high"),
        err("modalities: audio", r"^400 \[modalities\].*audio", modalities=["text", "audio"]),
        ok("modalities: text only is accepted", same_as_greedy(), modalities=["text"], temperature=0),
        err("store: true (nothing is stored)", r"^400 \[store\].*True", store=True),
        err("service_tier: flex", r"^400 \[service_tier\].*flex", service_tier="flex"),
        err("metadata: not an object", r"^400 \[metadata\]", metadata="tag"),
        err("unknown field: misspelt max_token", r"^4\d\d \[max_token\].*max_token", max_token=4),
        err("unknown field: temprature", r"^4\d\d \[temprature\]", temprature=0.5),
        # messages
        err("messages: empty list", r"^400 \[messages\].*non-empty", messages=[]),
        err("messages: a string", r"^400 \[messages\]", messages="hello"),
        err("messages: missing", r"^400 \[messages\]", body={}),
        err("messages: unknown role", r"^400 \[messages\[0\]\.role\].*'bot'", messages=[{"role": "bot",
                                                                                       "content": "hi"}]),
        err("messages: image part", r"^400 \[messages\[0\]\.content\[0\]\].*text",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        err("messages: part without text", r"^400 \[messages\[0\]\.content\[1\]\]",
            messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text"}]}]),
        err("messages: null user content", r"^400 \[messages\[0\]\.content\].*None",
            messages=[{"role": "user", "content": None}]),
        ok("messages: text parts read as the text", chat_prompt_tokens([{"role": "user", "content": "Repeat: 1 2 3"}]),
           messages=[{"role": "user", "content": [{"type": "text", "text": "Repeat:"},
                                                  {"type": "text", "text": "1 2 3"}]}]),
        ok("messages: developer role is a system message", chat_prompt_tokens(
            [{"role": "system", "content": "Be brief."}, *USER]),
           messages=[{"role": "developer", "content": "Be brief."}, *USER]),
        ok("messages: emoji, accents and a NUL byte", chat_prompt_tokens(
            [{"role": "user", "content": "caf\u00e9 \U0001F600 \x00 1 2"}]),
           messages=[{"role": "user", "content": "caf\u00e9 \U0001F600 \x00 1 2"}]),
        err_raw("messages: a lone surrogate", r"^400 \[messages(\[0\]\.content)?\].*(surrogate|UTF|unicode)",
                b'{"messages": [{"role": "user", "content": "a \\ud800 b"}]}'),
        err("messages: beyond the context in characters", r"^400 \[messages\].*characters",
            messages=[{"role": "user", "content": "9" * 300_000}]),
        # /v1/completions
        ok("prompt: emoji, accents and NUL counted as the tokenizer does",
           completion_prompt_tokens("caf\u00e9 \U0001F600 \x00 1 2"), path=COMP,
           prompt="caf\u00e9 \U0001F600 \x00 1 2"),
        err("prompt: a list of token ids", r"^400 \[prompt\].*token", path=COMP, prompt=[17, 18, 19]),
        err("prompt: two prompts", r"^400 \[prompt\].*one prompt", path=COMP, prompt=["a", "b"]),
        err("prompt: empty string", r"^400 \[prompt\].*non-empty", path=COMP, prompt=""),
        err("prompt: null", r"^400 \[prompt\]", path=COMP, prompt=None),
        err("echo: true", r"^400 \[echo\].*True", path=COMP, echo=True),
        err("suffix: text", r"^400 \[suffix\].*end", path=COMP, suffix="end"),
        err("best_of: 3", r"^400 \[best_of\].*3", path=COMP, best_of=3),
        ok("best_of: 1 (the default) is accepted", same_as_greedy(COMP), path=COMP, best_of=1, temperature=0),
        err("messages on /v1/completions", r"^4\d\d \[messages\]", path=COMP, messages=USER),
        # diffusion extras
        err("steps: a billion (more than the positions)", r"^400 \[steps\].*1000000000", steps=10**9),
        err("steps: 0", r"^400 \[steps\].*\b0\b", steps=0),
        ok("block_length: 3 with max_tokens 4: whole blocks, the answer cut at 4 tokens",
           lambda a: well_formed(a, budget=4), block_length=3, max_tokens=4, steps=6),
        err("steps: 7 for 6 positions (blocks of 3)", r"^400 \[steps\].*7.*6 positions", block_length=3,
            max_tokens=4, steps=7),
        err("max_completion_tokens: 300 (over the context)", r"^400 \[max_completion_tokens\].*300.*256",
            max_completion_tokens=300),
        err("remasking: misspelt", r"^400 \[remasking\].*low_confidnce", remasking="low_confidnce"),
        err("kv_cache: unknown", r"^400 \[kv_cache\].*full", kv_cache="full"),
        err("threshold: 0", r"^400 \[threshold\].*\b0\b", threshold=0),
        err("stream_denoising_draft: a string", r"^400 \[stream_denoising_draft\].*yes", stream=True,
            stream_denoising_draft="yes"),
        err("generation_config: an object", r"^400 \[generation_config\]", generation_config={"steps": 4}),
        err("stream: a string", r"^400 \[stream\].*'yes'", stream="yes"),
        err("stream_options without stream", r"^400 \[stream_options\].*stream",
            stream_options={"include_usage": True}),
        # HTTP-level misuse
        err_raw("http: empty body", r"^400 .*(body|JSON)", b""),
        err_raw("http: a JSON array", r"^400 .*JSON object", b"[1, 2]"),
        err_raw("http: JSON null", r"^400 .*JSON object", b"null"),
        err_raw("http: invalid UTF-8", r"^400 .*JSON", b"\xff\xfe\x00"),
        err_raw("http: 200000-deep nesting", r"^400 .*(nest|deep|JSON)", nested),
        err_raw("http: gzip Content-Encoding with a plain body", r"^415 .*Content-Encoding.*gzip",
                json.dumps({"messages": USER}).encode(), headers={"content-encoding": "gzip"}),
        err_raw("http: gzip Content-Encoding with a gzip body", r"^415 .*Content-Encoding.*gzip",
                gzip.compress(json.dumps({"messages": USER}).encode()), headers={"content-encoding": "gzip"}),
        Case("serve", "http: text/plain content-type with a JSON body is read as JSON",
             lambda: send(raw=json.dumps({"messages": USER, "temperature": 0}).encode(),
                          headers={"content-type": "text/plain"}), "ok", check=same_as_greedy()),
        err_raw("http: GET on a POST route", r"^405 .*GET /v1/chat/completions", None, method="GET"),
        err_raw("http: PUT on completions", r"^405 .*PUT /v1/completions", b"{}", path=COMP, method="PUT"),
        err_raw("http: an unknown route", r"^404 .*/v1/chat/complete", b"{}", path="/v1/chat/complete"),
        err_raw("http: /v1/embeddings is not served", r"^404 .*embeddings", b"{}", path="/v1/embeddings"),
    ]


# --- a real server for the stall / flood cases ----------------------------------------------------------------------


def server() -> str:
    """The address of a `llada-hf serve` subprocess on the model (started once; killed at exit)."""
    if "server" not in _STATE:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log = tempfile.TemporaryFile("w+")
        process = subprocess.Popen([sys.executable, "-m", "llada_cli", "serve", str(model_dir()), "--host",
                                    "127.0.0.1", "--port", str(port), *FLAGS], cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT)

        def stop():
            process.kill()
            process.wait(30)

        atexit.register(stop)
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the server exited: {log.read()[-2000:]}")
            try:
                status, _ = http_post(port, "/health", None, method="GET", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 180 s")
            time.sleep(0.3)
        _STATE["server"] = port
    return _STATE["server"]


def http_post(port, path, raw, method="POST", timeout=120, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if raw is not None and not isinstance(raw, (bytes, bytearray)):  # an iterable: chunked
            hdrs["Transfer-Encoding"] = "chunked"
            connection.request(method, path, body=raw, headers=hdrs, encode_chunked=True)
        else:
            connection.request(method, path, body=raw, headers=hdrs)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


SMALL = json.dumps({"messages": USER, "max_tokens": 4, "temperature": 0}).encode()


def small_alone(port) -> float:
    """The small request's own time: the best of three, measured now."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        status, body = http_post(port, CHAT, SMALL)
        times.append(time.perf_counter() - start)
        if status != 200:
            raise BadReply(f"the small request alone got {status}: {body[:200]!r}")
    return min(times)


def small_during(load, what: str, rounds: int = 5):
    """Keeps `load` (callables, each sending one large request) going, each in a loop of its own, and meanwhile sends
    the small request `rounds` times, 0.3 s apart: a stall when one takes more than max(2 s, 5x its time alone).
    The large requests are sent back to back, so each small one meets them in flight (reading, parsing, checking)."""
    def call():
        port = server()
        alone = small_alone(port)
        stop = threading.Event()
        statuses: list = []

        def keep_sending(send_large):
            while not stop.is_set():
                statuses.append(send_large(port))

        times, small_statuses = [], []
        with ThreadPoolExecutor(len(load)) as pool:
            futures = [pool.submit(keep_sending, send_large) for send_large in load]
            try:
                time.sleep(0.3)  # the first large bodies are on their way
                for _ in range(rounds):
                    start = time.perf_counter()
                    status, body = http_post(port, CHAT, SMALL)
                    times.append(time.perf_counter() - start)
                    small_statuses.append(status)
                    time.sleep(0.3)
            finally:
                stop.set()
            for future in futures:
                future.result(timeout=300)
        bound = max(2.0, 5 * alone)
        detail = (f"small alone {alone:.2f}s, during {what}: slowest of {rounds} {max(times):.2f}s (bound "
                  f"{bound:.2f}s); {len(statuses)} large requests answered {sorted(set(statuses))}")
        if any(s != 200 for s in small_statuses):
            return "silent", f"the small request got {small_statuses}; " + detail
        if any(s >= 500 for s in statuses) or len(statuses) < len(load):
            return "silent", "a large request got a 5xx or no answer; " + detail
        return ("stall" if max(times) > bound else "correct"), detail

    return call


def large_body(size: int, chunked: bool = False):
    def send_large(port):
        content = json.dumps({"messages": [{"role": "user", "content": "9 " * (size // 2)}]}).encode()
        if chunked:
            content = iter([content[i:i + 65536] for i in range(0, len(content), 65536)])
        try:
            return http_post(port, CHAT, content, timeout=300)[0]
        except (ConnectionError, OSError):  # a connection the server closed past its drain limit: no 5xx
            return 413

    return send_large


def flood():
    """32 concurrent requests (valid ones, bad ones and large ones): every one is answered, 200 or 4xx, no 5xx, none
    lost, within a generous limit."""
    def call():
        port = server()
        bodies = []
        for i in range(32):
            kind = i % 4
            if kind == 0:
                bodies.append((json.dumps({"messages": USER, "max_tokens": 4, "seed": i, "temperature": 1.0}).encode(),
                               {200}))
            elif kind == 1:
                bodies.append((json.dumps({"messages": USER, "seed": -i - 1}).encode(), {400}))
            elif kind == 2:
                bodies.append((b'{"messages": [', {400}))
            else:
                bodies.append((json.dumps({"prompt": "9" * 2_000_000}).encode(), {400}))

        def one(item):
            raw, expected = item
            path = COMP if b'"prompt"' in raw else CHAT
            try:
                status, _ = http_post(port, path, raw, timeout=240)
            except OSError as error:
                return f"lost ({type(error).__name__})", expected
            return status, expected

        start = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(one, bodies))
        took = time.perf_counter() - start
        wrong = [(got, sorted(expected)) for got, expected in results if got not in expected]
        detail = f"32 requests answered in {took:.1f}s; unexpected: {wrong[:5]}"
        if wrong:
            return "silent", detail
        return "correct", detail

    return Case("serve", "flood: 32 concurrent requests all answered, no 5xx, none lost", call, "timing")


def disconnect_mid_stream():
    """Two streamed clients (200 denoising steps each) that read their first chunk and go away: their jobs stop, and
    the next request is answered within max(2 s, 5x its time alone)."""
    def call():
        port = server()
        alone = small_alone(port)
        raw = json.dumps({"messages": USER, "stream": True, "max_tokens": 200, "steps": 200, "block_length": 200,
                          "stream_denoising_draft": True, "temperature": 0}).encode()
        firsts = []
        for _ in range(2):  # two of them: ~3 s of denoising each on this CPU (measured) if they were not stopped
            sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
            firsts.append(sock.recv(4096))
            sock.close()
        first = firsts[0] if all(f[:12] == firsts[0][:12] for f in firsts) else b"differ"
        time.sleep(0.2)
        start = time.perf_counter()
        status, body = http_post(port, CHAT, SMALL)
        took = time.perf_counter() - start
        bound = max(2.0, 5 * alone)
        detail = f"first bytes {first[:12]!r}; next request {took:.2f}s (alone {alone:.2f}s, bound {bound:.2f}s)"
        if not first.startswith(b"HTTP/1.1 200") or status != 200:
            return "silent", f"status {status}; " + detail
        return ("stall" if took > bound else "correct"), detail

    return Case("serve", "stall: a client leaving mid-stream frees the server", call, "timing")


def slow_client():
    """A client that sends its headers and half its body, then stalls: other requests are answered meanwhile."""
    def call():
        port = server()
        alone = small_alone(port)
        raw = SMALL
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw[: len(raw) // 2])
        try:
            time.sleep(0.2)
            start = time.perf_counter()
            status, _ = http_post(port, CHAT, SMALL)
            took = time.perf_counter() - start
        finally:
            sock.close()
        bound = max(2.0, 5 * alone)
        detail = f"small request during a stalled upload {took:.2f}s (alone {alone:.2f}s, bound {bound:.2f}s)"
        if status != 200:
            return "silent", f"status {status}; " + detail
        return ("stall" if took > bound else "correct"), detail

    return Case("serve", "stall: a client stalling mid-body holds nothing up", call, "timing")


def huge_headers():
    """A 200 KB header: refused with a 4xx (or the connection closed), never a 5xx or a hang; the server then
    answers."""
    def call():
        port = server()
        try:
            status, body = http_post(port, CHAT, SMALL, timeout=60, headers={"X-Junk": "a" * 200_000})
        except (ConnectionError, http.client.RemoteDisconnected) as error:
            status, body = 431, f"closed: {type(error).__name__}".encode()
        after, _ = http_post(port, CHAT, SMALL)
        detail = f"got {status} {body[:120]!r}; next request {after}"
        if after != 200 or status >= 500 or status < 400:
            return "silent", detail
        return "correct", detail

    return Case("serve", "http: a 200 KB header is refused (4xx), and the server lives on", call, "timing")


def _timing_cases() -> list[Case]:
    return [
        Case("serve", "stall: small request during one 10 MB body (413)",
             small_during([large_body(10 * 2**20)], "one 10 MB body"), "timing"),
        Case("serve", "stall: small request during three 10 MB bodies, chunked (413)",
             small_during([large_body(10 * 2**20, chunked=True)] * 3, "three 10 MB chunked bodies"), "timing"),
        Case("serve", "stall: small request during three 3.9 MB prompts under the cap (400 from the character bound)",
             small_during([large_body(int(3.9 * 2**20))] * 3, "three 3.9 MB prompts"), "timing"),
        flood(),
        disconnect_mid_stream(),
        slow_client(),
        huge_headers(),
    ]


def cases() -> list[Case]:
    return _field_cases() + _timing_cases()

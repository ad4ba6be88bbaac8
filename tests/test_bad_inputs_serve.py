"""Bad requests to `llada-hf serve` (issue #30, the server slice): each gets a 4xx in OpenAI's error shape that names
the field at fault, decided before any heavy work, and no request can stall another.

Each row: (id, what to send, the status, the `param` the error names, a regex its message must match). The app runs in
process (FastAPI's test client) on the official-format LLaDA 2 fixture with its word tokenizer (vocabulary words of
at most 4 characters, context 512 tokens: prompts over 2048 characters cannot fit).
"""

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from llada_cli import serve, serve_requests
from tests.test_serve import llada2_test_client

MAX_BYTES = 4096  # the server's --max_request_bytes here
USER = [{"role": "user", "content": "t5 t6 t7"}]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from llada2_test_client(tmp_path_factory, "--max_new_tokens", "4", "--block_length", "4", "--steps", "4",
                                  "--max_request_bytes", str(MAX_BYTES))


def post(client, path="/v1/chat/completions", **body):
    if path.endswith("/chat/completions"):
        body.setdefault("messages", USER)
    else:
        body.setdefault("prompt", "t5 t6 t7")
    # json.dumps escapes what httpx's own encoder would refuse (lone surrogates, sent as \ud800 as JSON allows)
    return client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def openai_error(reply) -> dict:
    """The reply's error, checked to have exactly OpenAI's shape."""
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def events(reply) -> list:
    """The `data:` events of a streamed reply, parsed (`[DONE]` kept as the string)."""
    out = []
    for line in reply.text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# --- the table: requests the server refuses ----------------------------------------------------------------------

LONG = "t159 " * 420  # 2100 characters: over the 512 x 4 that can fit the context, though only 420 words

REQUEST_CASES = [
    # 2. prompts that cannot fit the context, refused from their length in characters
    ("prompt: messages beyond the context in characters", {"messages": [{"role": "user", "content": LONG}]}, 400,
     "messages", r"2100 characters.*2048.*context of 512"),
    ("prompt: completion beyond the context in characters", {"path": "/v1/completions", "prompt": LONG}, 400,
     "prompt", r"2100 characters"),
    ("prompt: split over messages", {"messages": [{"role": "user", "content": LONG[:1100]},
                                                  {"role": "assistant", "content": LONG[:1000]}]}, 400,
     "messages", r"2100 characters"),
    # 4. OpenAI's fields
    ("fields: token budgets disagree", {"max_tokens": 4, "max_completion_tokens": 8}, 400,
     "max_completion_tokens", r"max_completion_tokens.*8.*max_tokens.*4"),
    ("fields: seed 2**32", {"seed": 2**32, "temperature": 1.0}, 400, "seed", r"4294967295.*4294967296"),
    ("fields: seed 5 + 2**32 (was read as 5)", {"seed": 4294967301, "temperature": 1.0}, 400, "seed", "4294967301"),
    ("fields: negative seed", {"seed": -1, "temperature": 1.0}, 400, "seed", r"from 0.*-1"),
    ("fields: boolean seed", {"seed": True}, 400, "seed", "integer.*True"),
    ("fields: float seed", {"seed": 1.5}, 400, "seed", "integer.*1.5"),
    ("fields: include_usage without stream", {"stream_options": {"include_usage": True}}, 400, "stream_options",
     "stream"),
    ("fields: include_usage not a boolean", {"stream": True, "stream_options": {"include_usage": "yes"}}, 400,
     "stream_options", "include_usage.*yes"),
    ("fields: unknown stream option", {"stream": True, "stream_options": {"usage": True}}, 400, "stream_options",
     r"\['usage'\]"),
    ("fields: template kwargs clash: add_generation_prompt",
     {"chat_template_kwargs": {"add_generation_prompt": False}}, 400, "chat_template_kwargs",
     "add_generation_prompt"),
    ("fields: template kwargs clash: tokenize", {"chat_template_kwargs": {"tokenize": False}}, 400,
     "chat_template_kwargs", "tokenize"),
    ("fields: template kwargs clash: the conversation", {"chat_template_kwargs": {"conversation": []}}, 400,
     "chat_template_kwargs", "conversation"),
    ("fields: template kwargs not an object", {"chat_template_kwargs": ["x"]}, 400, "chat_template_kwargs",
     "object"),
    # 7. malformed messages
    ("messages: null user content", {"messages": [{"role": "user", "content": None}]}, 400, "messages[0].content",
     "None"),
    ("messages: number content", {"messages": [{"role": "user", "content": 7}]}, 400, "messages[0].content", "7"),
    ("messages: object content", {"messages": [{"role": "user", "content": {"text": "hi"}}]}, 400,
     "messages[0].content", "text"),
    ("messages: missing role", {"messages": [{"content": "t5"}]}, 400, "messages[0].role", "None"),
    ("messages: second message's role", {"messages": [USER[0], {"role": 3, "content": "t5"}]}, 400,
     "messages[1].role", "3"),
    # 8. OpenAI fields that were accepted and then ignored: each takes effect, is a default, or is refused
    ("ignored: user not a string", {"user": 123}, 400, "user", "123"),
    ("ignored: metadata not an object of strings", {"metadata": {"k": 1}}, 400, "metadata", "'k'"),
    ("ignored: store true (nothing is stored)", {"store": True}, 400, "store", "True"),
    ("ignored: reasoning_effort", {"reasoning_effort": "high"}, 400, "reasoning_effort", "high"),
    ("ignored: audio modality", {"modalities": ["text", "audio"]}, 400, "modalities", "audio"),
    ("ignored: service_tier flex", {"service_tier": "flex"}, 400, "service_tier", "flex"),
    ("ignored: web_search_options", {"web_search_options": {"search_context_size": "low"}}, 400,
     "web_search_options", "low"),
    ("ignored: best_of 3", {"path": "/v1/completions", "best_of": 3}, 400, "best_of", r"n \(1\).*got 3"),
    ("ignored: best_of 2 with n 3", {"path": "/v1/completions", "best_of": 2, "n": 3}, 400, "best_of", "got 2"),
    # 9. prompts no tokenizer can take, named as such
    ("prompt: token ids", {"path": "/v1/completions", "prompt": [5, 6, 7]}, 400, "prompt", "token ids"),
    ("prompt: a lone surrogate", {"path": "/v1/completions", "prompt": "t5 \ud800"}, 400, "prompt", "surrogate"),
    ("messages: a lone surrogate", {"messages": [{"role": "user", "content": "t5 \udfff"}]}, 400,
     "messages[0].content", "surrogate"),
    # 10. budgets that are wasted work or cannot fit, named by their own field
    ("budget: more steps than positions", {"steps": 5, "max_tokens": 4}, 400, "steps", r"5.*4 positions"),
    ("budget: a billion steps", {"steps": 10**9}, 400, "steps", "1000000000"),
    ("budget: max_tokens over the context", {"max_tokens": 600}, 400, "max_tokens", r"600.*512"),
    ("budget: max_completion_tokens over the context", {"max_completion_tokens": 10**9}, 400,
     "max_completion_tokens", r"1000000000.*512"),
]


@pytest.mark.parametrize("name, body, status, param, message", REQUEST_CASES, ids=[r[0] for r in REQUEST_CASES])
def test_bad_request_gets_a_4xx_naming_the_field(app, name, body, status, param, message):
    body = dict(body)
    reply = post(app, body.pop("path", "/v1/chat/completions"), **body)
    assert reply.status_code == status, reply.text
    error = openai_error(reply)
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    assert re.search(message, error["message"]), error["message"]
    assert f"`{param}`" in error["message"]


# --- 1. the body cap -------------------------------------------------------------------------------------------------


def test_a_body_over_the_cap_gets_413_from_its_content_length_before_parsing(app):
    """A body over the cap that is not even JSON: 413 (not 400), so the cap was decided before parsing."""
    reply = app.post("/v1/chat/completions", content=b"{" * (MAX_BYTES + 1),
                     headers={"content-type": "application/json"})
    assert reply.status_code == 413, reply.text
    error = openai_error(reply)
    assert error["code"] == "request_too_large" and "--max_request_bytes" in error["message"]
    assert str(MAX_BYTES) in error["message"]


def test_a_chunked_body_over_the_cap_gets_413_while_it_is_read(app):
    def chunks():  # no Content-Length (chunked): the server counts while reading, and refuses past the cap
        for _ in range(64):
            yield b"x" * 1024

    reply = app.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert reply.status_code == 413, reply.text
    assert openai_error(reply)["code"] == "request_too_large"


def test_a_large_body_over_a_real_socket_gets_its_413_not_a_reset(app):
    """Over a socket, a refused 10 MB body is read on and dropped (not kept), so the client reads the 413 instead of
    a connection reset; the server then answers the next request."""
    import socket
    import urllib.error
    import urllib.request

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app.app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def send(raw):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=raw, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        for _ in range(600):
            if server.started:
                break
            threading.Event().wait(0.05)
        assert server.started
        status, body = send(json.dumps({"messages": [{"role": "user", "content": "t5 " * 3_500_000}]}).encode())
        assert status == 413 and body["error"]["code"] == "request_too_large", body
        status, body = send(iter([b"x" * 65536] * 160))  # 10 MB, chunked: no Content-Length
        assert status == 413 and body["error"]["code"] == "request_too_large", body
        status, body = send(json.dumps({"messages": USER, "max_tokens": 4}).encode())
        assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length"), body
    finally:
        server.should_exit = True
        thread.join(60)


def test_a_body_at_the_cap_is_served(app):
    frame = len(json.dumps({"messages": USER, "user": ""}).encode())
    raw = json.dumps({"messages": USER, "user": "u" * (MAX_BYTES - frame)}).encode()
    assert len(raw) == MAX_BYTES  # exactly the cap
    reply = app.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 200, reply.text


def test_the_default_cap_is_documented_in_the_flag_help():
    args = serve.build_parser().parse_args(["some/model"])
    assert args.max_request_bytes == serve_requests.DEFAULT_MAX_REQUEST_BYTES == 4 * 2**20
    assert "--max_request_bytes" in serve.build_parser().format_help()


def test_a_cap_too_small_for_any_request_is_refused(capsys):
    from llada_cli.main import main

    assert main(["serve", "some/model", "--max_request_bytes", "10"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--max_request_bytes 10" in err


# --- 2. the prompt's character bound: no tokenizer call, and no prompt that fits is refused -------------------------


def test_a_prompt_that_cannot_fit_is_refused_before_any_tokenizer_call(app, monkeypatch):
    calls = []
    tokenizer_class = type(app.app_state.served.tokenizer)
    for method in ("__call__", "apply_chat_template", "encode"):
        original = getattr(tokenizer_class, method)
        monkeypatch.setattr(tokenizer_class, method,
                            lambda *a, _original=original, **k: calls.append(1) or _original(*a, **k))
    for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": LONG}]}),
                       ("/v1/completions", {"prompt": LONG})):
        assert post(app, path, **body).status_code == 400
    assert calls == []


def test_the_longest_prompt_that_fits_is_served(app):
    """400 words of the longest vocabulary entries (2000 characters, under 2048): tokenized, and it fits."""
    served = app.app_state.served
    assert served.max_prompt_chars == 512 * 4
    reply = post(app, "/v1/completions", prompt=("t159 " * 400).strip(), max_tokens=4)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["prompt_tokens"] >= 400


# --- 3. no stall -----------------------------------------------------------------------------------------------------


def test_a_small_request_is_not_held_up_by_a_large_one_being_tokenized(app, monkeypatch):
    """A large prompt whose tokenizing is held on purpose (until the small request has its answer) must not keep a
    small request, sent meanwhile, from being answered: the small one finishes first, then the large one."""
    tokenizer_class = type(app.app_state.served.tokenizer)
    original = tokenizer_class.apply_chat_template
    started, release = threading.Event(), threading.Event()

    def slow_for_large(self, conversation, *args, **kwargs):
        if "t9 t9 t9" in conversation[0]["content"]:  # the large request: tokenizing takes until released
            started.set()
            release.wait(120)
        return original(self, conversation, *args, **kwargs)

    monkeypatch.setattr(tokenizer_class, "apply_chat_template", slow_for_large)
    finished = []
    large = [{"role": "user", "content": "t9 t9 t9 " * 150}]  # 450 tokens, 1350 characters: it fits

    def send_large():
        reply = post(app, messages=large, max_tokens=4)
        finished.append("large")
        return reply

    with ThreadPoolExecutor(2) as pool:
        big = pool.submit(send_large)
        assert started.wait(60), "the large request never reached the tokenizer"
        small = post(app, max_tokens=4)
        finished.append("small")
        small_done_while_large_runs = not big.done()
        release.set()
        big_reply = big.result(timeout=120)
    assert small.status_code == 200 and big_reply.status_code == 200, (small.text, big_reply.text)
    assert small_done_while_large_runs and finished == ["small", "large"]


def test_each_prepare_worker_has_its_own_tokenizer(app):
    workers = serve.TokenizerWorkers(app.app_state.served.tokenizer, 3)
    try:
        barrier = threading.Barrier(3)

        def whose():
            barrier.wait(30)  # three threads at once: each a different worker
            return id(workers.tokenizer())

        futures = [workers.pool.submit(whose) for _ in range(3)]
        owners = {f.result(timeout=60) for f in futures}
    finally:
        workers.shutdown()
    assert len(owners) == 3 and id(app.app_state.served.tokenizer) not in owners


# --- 4. OpenAI's fields that take effect -----------------------------------------------------------------------------


@pytest.mark.parametrize("options, usage_chunk", [(None, False), ({"include_usage": False}, False),
                                                  ({"include_usage": True}, True)])
def test_stream_options_include_usage_is_honoured(app, options, usage_chunk):
    body = {"stream": True, "max_tokens": 4}
    if options is not None:
        body["stream_options"] = options
    reply = post(app, **body)
    assert reply.status_code == 200, reply.text
    chunks = events(reply)
    assert chunks[-1] == "[DONE]"
    with_usage = [c for c in chunks[:-1] if c.get("usage") is not None]
    if usage_chunk:  # OpenAI: one last chunk, before [DONE], with empty choices and the usage
        assert with_usage == [chunks[-2]] and chunks[-2]["choices"] == []
        usage = chunks[-2]["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert usage["completion_tokens"] <= 4 and usage["prompt_tokens"] > 0
    else:
        assert with_usage == []
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"]][-1] in ("stop", "length")


def test_equal_token_budgets_and_the_largest_seed_are_accepted(app):
    both = post(app, max_tokens=2, max_completion_tokens=2)
    assert both.status_code == 200 and both.json()["usage"]["completion_tokens"] <= 2
    assert post(app, seed=2**32 - 1, temperature=1.0).status_code == 200
    assert post(app, seed=0, temperature=1.0).status_code == 200


def test_template_variables_of_its_own_are_passed_to_the_template(app):
    assert post(app, chat_template_kwargs={"enable_thinking": False}).status_code == 200


def test_a_template_that_fails_on_the_request_s_kwargs_names_them(app, monkeypatch):
    tokenizer_class = type(app.app_state.served.tokenizer)
    original = tokenizer_class.apply_chat_template

    def strict(self, conversation, *args, **kwargs):
        if "persona" in kwargs:
            raise ValueError("undefined variable in the template: persona.name")
        return original(self, conversation, *args, **kwargs)

    monkeypatch.setattr(tokenizer_class, "apply_chat_template", strict)
    reply = post(app, chat_template_kwargs={"persona": "x"})
    assert reply.status_code == 400
    error = openai_error(reply)
    assert error["param"] == "chat_template_kwargs" and "persona.name" in error["message"]


# --- 5. the 4xx that FastAPI / Starlette answer themselves ----------------------------------------------------------


@pytest.mark.parametrize("method, path, content, status", [
    ("POST", "/v1/chat/completions", b"{not json", 400),
    ("POST", "/v1/chat/completions", b"\xff\xfe", 400),
    ("POST", "/v1/chat/completions", b"[1, 2]", 400),
    ("GET", "/v1/chat/completions", None, 405),
    ("DELETE", "/v1/models", None, 405),
    ("POST", "/v1/nothing", b"{}", 404),
    ("GET", "/", None, 404),
])
def test_every_4xx_has_openai_s_error_shape(app, method, path, content, status):
    reply = app.request(method, path, content=content, headers={"content-type": "application/json"})
    assert reply.status_code == status, reply.text
    error = openai_error(reply)
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    if status in (404, 405):
        assert path in error["message"]


def test_fastapi_s_own_validation_errors_have_openai_s_shape(app):
    """A route with a typed parameter (FastAPI validates it itself, 422): the app's handler answers in OpenAI's
    shape."""
    from fastapi.routing import APIRoute

    def typed(count: int):
        return {"count": count}

    app.app.router.routes.append(APIRoute("/test-typed", typed, methods=["GET"]))
    try:
        reply = app.get("/test-typed", params={"count": "many"})
    finally:
        app.app.router.routes.pop()
    assert reply.status_code == 422
    error = openai_error(reply)
    assert error["param"] == "count" and "count" in error["message"]


@pytest.mark.parametrize("body", [{"response_format": {"type": "text"}}, {"modalities": ["text"]},
                                  {"service_tier": "default"}, {"store": False}, {"metadata": {"k": "v"}},
                                  {"user": "someone"}, {"path": "/v1/completions", "best_of": 1}])
def test_openai_defaults_spelt_out_are_accepted(app, body):
    """Fields set to what the server does anyway (OpenAI's defaults) are served, with the same answer as without."""
    body = dict(body)
    path = body.pop("path", "/v1/chat/completions")
    plain = post(app, path, max_tokens=4, temperature=0)
    reply = post(app, path, max_tokens=4, temperature=0, **body)
    assert plain.status_code == reply.status_code == 200, reply.text
    assert reply.json()["choices"] == plain.json()["choices"] and reply.json()["usage"] == plain.json()["usage"]


@pytest.mark.parametrize("content, headers, status, says", [
    (b"[" * 2000 + b"]" * 2000, {}, 400, "nested too deeply"),  # a RecursionError in json.loads was a 500
    (json.dumps({"messages": USER}).encode(), {"content-encoding": "gzip"}, 415, "Content-Encoding 'gzip'"),
    (__import__("gzip").compress(json.dumps({"messages": USER}).encode()), {"content-encoding": "gzip"}, 415,
     "uncompressed"),
    (json.dumps({"messages": USER}).encode(), {"content-encoding": "br, gzip"}, 415, "Content-Encoding"),
])
def test_bodies_the_server_cannot_read_get_a_4xx_naming_why(app, content, headers, status, says):
    reply = app.post("/v1/chat/completions", content=content, headers={"content-type": "application/json", **headers})
    assert reply.status_code == status, reply.text
    assert says in openai_error(reply)["message"]


def test_identity_content_encoding_is_read_as_usual(app):
    reply = app.post("/v1/chat/completions", content=json.dumps({"messages": USER, "max_tokens": 4}).encode(),
                     headers={"content-type": "application/json", "content-encoding": "identity"})
    assert reply.status_code == 200, reply.text


def test_steps_up_to_the_positions_are_served(app):
    reply = post(app, steps=4, max_tokens=4, block_length=4)
    assert reply.status_code == 200, reply.text


def test_assistant_messages_may_have_null_content_as_in_openai(app):
    reply = post(app, messages=[USER[0], {"role": "assistant", "content": None}, USER[0]])
    assert reply.status_code == 200, reply.text

"""`llada-hf serve`: request checks and answer bookkeeping (fast), then a real server on the quickstart's tiny trained
model driven with the `openai` client (slow: the model trains in the fixture, once per session)."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llada_cli import serve, serve_requests
from llada_cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------- fast


def test_serve_is_a_command_whose_help_imports_nothing_heavy():
    assert "serve" in COMMANDS and COMMANDS["serve"].extra == "serve"
    code = ("import sys; from llada_cli.main import help_text; text = help_text('serve'); "
            "assert '--block_length' in text and '--threshold' in text, text; "
            "heavy = [m for m in ('torch', 'transformers', 'fastapi') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_settings_are_checked_by_the_model_s_own_generation_config():
    """A setting LLaDA's sampler takes is refused, naming the field, when the model's generation config class is
    LLaDA 2's; the server's flags are checked by the same rules."""
    from modeling_llada.generation_llada2 import LLaDA2GenerationConfig

    body = {"kv_cache": "dual", "remasking": "margin"}
    assert serve_requests.sampling_settings(body, {})["kwargs"] == body
    for name, value in body.items():
        with pytest.raises(serve_requests.RequestError) as caught:
            serve_requests.sampling_settings({name: value}, {}, LLaDA2GenerationConfig)
        assert (caught.value.status, caught.value.param) == (400, name) and repr(value) in caught.value.message


def test_bad_sampler_flags_are_one_line_errors(capsys):
    assert main(["serve", "some/model", "--threshold", "1.5"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("llada-hf serve: --threshold 1.5: `threshold` must be in (0, 1]")


def test_batching_flags_are_checked_and_continuous_batching_is_accepted(capsys):
    for flag in ("--max_batch_size", "--max_queue"):
        assert main(["serve", "some/model", flag, "0"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"llada-hf serve: {flag} 0: must be at least 1") and len(err.splitlines()) == 1
    args = serve.build_parser().parse_args(["some/model", "--continuous_batching"])
    serve._check_args(args)  # accepted: the server always batches continuously
    assert (args.max_batch_size, args.max_queue) == (serve.DEFAULT_MAX_BATCH_SIZE, serve.DEFAULT_MAX_QUEUE)


@pytest.mark.parametrize("body, param, status", [
    ({"max_tokens": -1}, "max_tokens", 400),
    ({"max_tokens": 0}, "max_tokens", 400),
    ({"max_completion_tokens": 2.5}, "max_completion_tokens", 400),
    ({"temperature": -0.5}, "temperature", 400),
    ({"temperature": "hot"}, "temperature", 400),
    ({"top_p": 0}, "top_p", 400),
    ({"n": 0}, "n", 400),
    ({"n": 2, "stream": True}, "n", 400),
    ({"stop": [1]}, "stop", 400),
    ({"seed": "x"}, "seed", 400),
    ({"steps": 0}, "steps", 400),
    ({"block_length": -8}, "block_length", 400),
    ({"threshold": 1.5}, "threshold", 400),
    ({"kv_cache": "full"}, "kv_cache", 400),
    ({"remasking": "best"}, "remasking", 400),
])
def test_bad_settings_name_their_field(body, param, status):
    with pytest.raises(serve_requests.RequestError) as caught:
        serve_requests.sampling_settings(body, {})
    assert (caught.value.status, caught.value.param) == (status, param)
    assert f"`{param}`" in caught.value.message


def test_settings_merge_server_defaults_and_the_request():
    defaults = {"steps": 8, "block_length": None, "threshold": 0.9, "kv_cache": None, "remasking": None}
    out = serve_requests.sampling_settings({"temperature": 0.5, "seed": 3, "threshold": None, "block_length": 4,
                                   "stop": "x", "max_tokens": 6}, defaults)
    assert out["kwargs"] == {"steps": 8, "temperature": 0.5, "do_sample": True, "seed": 3, "threshold": None,
                             "block_length": 4}
    assert out["stop"] == ["x"] and out["max_tokens"] == 6 and out["n"] == 1
    assert serve_requests.sampling_settings({}, defaults)["kwargs"] == {"steps": 8, "threshold": 0.9}


@pytest.mark.parametrize("messages, param", [
    ("hi", "messages"),
    ([], "messages"),
    (["hi"], "messages[0]"),
    ([{"role": "wizard", "content": "hi"}], "messages[0].role"),
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "messages[0].content[0]"),
])
def test_malformed_messages_name_the_message(messages, param):
    with pytest.raises(serve_requests.RequestError) as caught:
        serve_requests.chat_messages({"messages": messages})
    assert caught.value.param == param and caught.value.status == 400


def test_unknown_fields_are_named_and_unsupported_ones_refused():
    with pytest.raises(serve_requests.RequestError) as caught:
        serve_requests.check_fields({"messages": [], "stepz": 3}, serve_requests.CHAT_FIELDS)
    assert caught.value.status == 422 and "stepz" in caught.value.message
    with pytest.raises(serve_requests.RequestError) as caught:
        serve_requests.check_fields({"messages": [], "logit_bias": {"1": 2}}, serve_requests.CHAT_FIELDS)
    assert caught.value.param == "logit_bias"
    serve_requests.check_fields({"messages": [], "frequency_penalty": 0, "steps": 4, "remasking": "margin"},
                                serve_requests.CHAT_FIELDS)


# ---------------------------------------------------------------------------------------------------- slow: a server

DIGITS = [("2 9 1"), ("7 0 4"), ("3 3 8"), ("5 1 6"), ("9 2 2"), ("4 8 0"), ("6 5 7"), ("1 4 9")]


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """The quickstart's tiny model (user "Repeat: 2 9 1" -> assistant "2 9 1"), published with its code files."""
    if os.environ.get("LLADA_HF_SERVE_TEST_MODEL"):  # a quickstart hub folder built before (saves ~1-2 min)
        return Path(os.environ["LLADA_HF_SERVE_TEST_MODEL"])
    out = tmp_path_factory.mktemp("quickstart")
    subprocess.run([sys.executable, "-m", "llada_cli", "quickstart", "--quick", "--output_dir", str(out)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)
    return out / "hub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: Path, *flags: str):
        self.port = free_port()
        self.model = str(model)
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llada_cli", "serve", self.model, "--host", "127.0.0.1", "--port",
             str(self.port), *flags], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}): {self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not answer within 120 s: {self.output()}")
            time.sleep(0.3)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=120)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def server(trained_model):
    pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    running = Server(trained_model, "--trust_remote_code")
    yield running
    running.stop()


def ask(client, digits: str, **kwargs):
    return client.chat.completions.create(model=kwargs.pop("model", None) or client._served,
                                          messages=[{"role": "user", "content": f"Repeat: {digits}"}], **kwargs)


@pytest.fixture()
def client(server):
    client = server.client()
    client._served = server.model
    return client


@pytest.mark.slow
def test_a_chat_completion_answers_and_stops_at_eos(client, trained_model):
    from transformers import AutoTokenizer

    response = ask(client, "2 9 1")
    choice = response.choices[0]
    assert choice.message.content.strip() == "2 9 1"
    assert choice.finish_reason == "stop"
    tokenizer = AutoTokenizer.from_pretrained(trained_model)
    assert response.usage.completion_tokens == len(tokenizer(choice.message.content, add_special_tokens=False)
                                                   ["input_ids"])
    assert response.usage.completion_tokens < 8  # the answer, not the canvas
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    assert trained_model.name in " ".join(model.id for model in client.models.list().data)


@pytest.mark.slow
def test_a_streamed_completion_reassembles_to_the_same_text(client):
    plain = ask(client, "7 0 4")
    chunks = list(ask(client, "7 0 4", stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])  # OpenAI: only the last chunk carries usage


@pytest.mark.slow
def test_the_draft_stream_shows_the_canvas_in_its_own_field(client):
    chunks = list(ask(client, "2 9 1", stream=True, extra_body={"stream_denoising_draft": True}))
    drafts = [c.choices[0].model_extra.get("denoising_draft") for c in chunks if c.choices]
    drafts = [d for d in drafts if d is not None]
    assert drafts and serve.MASK_GLYPH in drafts[0]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == "2 9 1"


@pytest.mark.slow
def test_stop_strings_and_the_budget(client):
    stopped = ask(client, "2 9 1", stop=[" 9"])
    assert stopped.choices[0].message.content.strip() == "2"
    assert stopped.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(client, "2 9 1", stop=" 9", stream=True)
                       if c.choices)
    assert streamed == stopped.choices[0].message.content
    short = ask(client, "2 9 1", max_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2


@pytest.mark.slow
def test_n_seed_and_diffusion_settings_per_request(client):
    several = ask(client, "3 3 8", n=3, temperature=0.5, seed=1)
    assert len(several.choices) == 3 and [c.index for c in several.choices] == [0, 1, 2]
    again = ask(client, "3 3 8", n=3, temperature=0.5, seed=1)
    assert [c.message.content for c in again.choices] == [c.message.content for c in several.choices]
    fast = ask(client, "3 3 8", extra_body={"threshold": 0.9, "kv_cache": "prefix", "block_length": 4, "steps": 4,
                                            "remasking": "margin"})
    assert fast.choices[0].message.content.strip() == "3 3 8"


@pytest.mark.slow
def test_text_completions(server):
    client = server.client()
    response = client.completions.create(model=server.model, prompt="hello", max_tokens=8)
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage.completion_tokens <= 8


@pytest.mark.slow
def test_eight_concurrent_requests_each_get_their_own_answer(client):
    def one(index: int):
        digits = DIGITS[index]
        if index % 2:
            chunks = ask(client, digits, stream=True, extra_body={"threshold": 0.9} if index % 4 == 1 else {})
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return ask(client, digits, extra_body={"steps": 4, "block_length": 4} if index % 4 == 2 else {}) \
            .choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    assert [a.strip() for a in answers] == DIGITS


@pytest.mark.slow
@pytest.mark.parametrize("kwargs, status, param", [
    ({"model": "someone/unknown-model"}, 404, "model"),
    ({"max_tokens": -3}, 400, "max_tokens"),
    ({"temperature": -1.0}, 400, "temperature"),
    ({"max_tokens": 16, "extra_body": {"steps": 3}}, 400, "steps"),
    ({"max_tokens": 250}, 400, "messages"),  # beyond the context of 256
    ({"messages": [{"role": "user"}]}, 400, "messages[0].content"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
    ({"extra_body": {"stepz": 4}}, 422, "stepz"),
])
def test_bad_requests_get_a_4xx_naming_the_field(client, server, kwargs, status, param):
    import openai

    messages = kwargs.pop("messages", [{"role": "user", "content": "Repeat: 2 9 1"}])
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=kwargs.pop("model", server.model), messages=messages, **kwargs)
    assert caught.value.status_code == status
    assert caught.value.body["param"] == param, caught.value.body
    assert param in caught.value.body["message"]
    assert ask(client, "2 9 1").choices[0].message.content.strip() == "2 9 1"  # the server lives on


@pytest.mark.slow
def test_serves_without_remote_code_too(trained_model):
    pytest.importorskip("openai")
    running = Server(trained_model)  # llada-hf's own LLaDA classes
    try:
        client = running.client()
        response = client.chat.completions.create(
            model=running.model, messages=[{"role": "user", "content": "Repeat: 4 8 0"}])
        assert response.choices[0].message.content.strip() == "4 8 0"
        assert response.choices[0].finish_reason == "stop"
    finally:
        running.stop()


# ------------------------------------------------------------------------------------- the app in process (no port)


def llada2_test_client(tmp_path_factory, *flags: str):
    """`serve`'s app on the official-format LLaDA 2 fixture (its own tokenizer added), started with `flags`, through
    FastAPI's test client (a generator: the client, `app_state` set, until the caller is done)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import shutil

    from fastapi.testclient import TestClient

    from tests.trainers.test_family_training import LLADA2_DIR, LLADA2_IDS, chat_tokenizer

    folder = tmp_path_factory.mktemp("served") / "llada2"
    shutil.copytree(LLADA2_DIR, folder)
    chat_tokenizer(LLADA2_IDS).save_pretrained(folder)
    app = serve.build_app(serve.build_parser().parse_args([str(folder), "--device", "cpu", *flags]))
    with TestClient(app) as client:
        client.app_state = app.state
        yield client


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    """The app on the official-format LLaDA 2 fixture, through FastAPI's test client."""
    yield from llada2_test_client(tmp_path_factory, "--max_new_tokens", "8", "--block_length", "4", "--steps", "4")


def chat(client, **body):
    return client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "t5 t6 t7"}], **body})


def test_the_app_answers_and_errors_in_openai_shape(app_client):
    answer = chat(app_client)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["finish_reason"] in ("stop", "length")
    assert answer.headers["x-request-id"] == answer.json()["id"]
    assert app_client.post("/v1/chat/completions", json={"messages": []},
                           headers={"x-request-id": "mine"}).headers["x-request-id"] == "mine"
    malformed = app_client.post("/v1/chat/completions", content=b"{not json", headers={"content-type":
                                                                                         "application/json"})
    assert malformed.status_code == 400
    assert "not valid JSON" in malformed.json()["error"]["message"]
    for path, status in (("/v1/nothing", 404), ("/v1/responses", 404)):
        reply = app_client.post(path, json={})
        assert reply.status_code == status and set(reply.json()["error"]) == {"message", "type", "param", "code"}
    models = app_client.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == [app_client.app_state.served.name]


def test_an_error_in_generate_fails_its_request_only(app_client, monkeypatch):
    model = app_client.app_state.served.model

    def broken(*args, **kwargs):
        raise RuntimeError("something odd\nover two lines")

    monkeypatch.setattr(model, "denoising_steps", broken)
    failed = chat(app_client)
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert error["message"] == "generation failed: RuntimeError: something odd over two lines", error
    monkeypatch.undo()
    assert chat(app_client).status_code == 200
    assert app_client.get("/health").status_code == 200


def test_a_full_queue_answers_429_with_retry_after_streamed_or_not(app_client, monkeypatch):
    engine = app_client.app_state.engine
    monkeypatch.setattr(engine, "max_queue", 0)  # every request finds the queue full
    for body in ({}, {"stream": True}):
        reply = chat(app_client, **body)
        assert reply.status_code == 429 and reply.headers["retry-after"] == "1", reply.text
        error = reply.json()["error"]
        assert error["code"] == "queue_full" and "--max_queue 0" in error["message"]
    monkeypatch.undo()
    assert chat(app_client).status_code == 200
    health = app_client.get("/health").json()
    assert health["status"] == "ok" and health["running"] == health["waiting"] == 0


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not streamed"])
def test_a_client_that_leaves_frees_its_work(app_client, monkeypatch, stream):
    """A request whose client goes away leaves the engine at its next denoising step, streamed or not. The app runs
    under uvicorn (a real socket, so the client can leave), and that request's sampler is endless (20000 steps, ~100
    s): only the server's cancellation can end it (state, not time, is asserted)."""
    import http.client
    import threading

    import torch
    import uvicorn

    model = app_client.app_state.served.model
    engine = app_client.app_state.engine
    start, steps = model.start_denoising, model.denoising_steps
    log, endless_started = [], threading.Event()

    class Endless:
        count = 0

    def start_denoising(streamer=None, **kwargs):
        if kwargs.get("seed") != 4242:  # the next request: a real answer
            return start(streamer=streamer, **kwargs)
        streamer.put(kwargs["input_ids"])
        Endless.streamer = streamer
        return Endless()

    def denoising_steps(states):
        real = [state for state in states if not isinstance(state, Endless)]
        going = iter(steps(real) if real else [])
        result = []
        for state in states:
            if isinstance(state, Endless):
                state.count += 1
                if stream:
                    Endless.streamer.put_draft(torch.full((1, 8), model.config.mask_token_id))
                endless_started.set()
                time.sleep(0.005)
                result.append(state.count < 20000)
                if state.count == 20000:
                    log.append("ran to the end")
            else:
                result.append(next(going))
        return result

    monkeypatch.setattr(model, "start_denoising", start_denoising)
    monkeypatch.setattr(model, "denoising_steps", denoising_steps)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app_client.app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        body = {"seed": 4242, "messages": [{"role": "user", "content": "t5 t6 t7"}]}
        if stream:
            body.update(stream=True, stream_denoising_draft=True)
        connection.request("POST", "/v1/chat/completions", body=json.dumps(body),
                           headers={"Content-Type": "application/json"})
        if stream:
            response = connection.getresponse()
            assert response.readline().startswith(b"data: ")
        assert endless_started.wait(60)
        connection.close()  # the client leaves (mid-stream, or while waiting for its answer)
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/chat/completions", method="POST",
                headers={"Content-Type": "application/json"},
                data=json.dumps({"messages": [{"role": "user", "content": "t5 t6 t7"}]}).encode()),
                timeout=120) as queued:
            answer = json.loads(queued.read())
        for _ in range(1200):  # the endless request leaves at its next step once the server sees the client gone
            if engine.load()["running"] == 0:
                log.append("stopped")
                break
            time.sleep(0.05)
    finally:
        server.should_exit = True
        thread.join(60)
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")
    assert log == ["stopped"] and Endless.count < 20000


def test_a_dead_engine_answers_503_with_one_line_never_a_hang(app_client, monkeypatch):
    """A CUDA error leaves the device unusable: the request that hit it, the one waiting behind it and every later one
    get a 503 naming the cause (the waiting one never runs), and /health turns 503. Runs last: the engine stays dead."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    model = app_client.app_state.served.model
    started, release, calls = threading.Event(), threading.Event(), []

    def crashing(*args, **kwargs):
        calls.append(1)
        started.set()
        assert release.wait(60)
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nCompile with TORCH_USE_CUDA_DSA")

    monkeypatch.setattr(model, "denoising_steps", crashing)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(chat, app_client)
        assert started.wait(60)
        waiting = pool.submit(chat, app_client, stream=True)  # queued behind the crash
        time.sleep(0.5)
        release.set()
        replies = [first.result(timeout=60), waiting.result(timeout=60)]
    later = [chat(app_client), chat(app_client, stream=True)]
    assert len(calls) == 1  # nothing ran on the dead engine
    for reply in replies[:1] + later:
        assert reply.status_code == 503, reply.text
        error = reply.json()["error"]
        assert error["code"] == "engine_dead" and "\n" not in error["message"]
        assert "CUDA error: an illegal memory access" in error["message"]
    # the waiting stream: a 503 if the engine had died before it was answered, else its stream carries the error
    assert replies[1].status_code in (200, 503) and "engine_dead" in replies[1].text
    health = app_client.get("/health")
    assert health.status_code == 503 and "CUDA error" in health.json()["reason"]

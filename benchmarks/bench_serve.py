"""Load test of `llada-hf serve` with continuous batching, against the same server with batching off, in one run.

    python benchmarks/bench_serve.py [--model DIR] [--clients 1,4,8,16] [--requests-per-client 4]

--model is a LLaDA folder with a chat template; without it the quickstart's tiny model is trained first (about two
minutes on a CPU, offline). Two servers are started here, one after the other: `--max_batch_size 16` (the default)
and `--max_batch_size 1` (one request at a time). Each runs three workloads: exact decoding (one token per step) with
every answer 32 tokens (the issue's setting: max_tokens 32, blocks of 8, 32 steps), exact decoding with mixed answer lengths
(max_tokens 8, 16, 32, 64 in turn, blocks of 8) and threshold decoding with mixed lengths; for each:
- 1, 4, 8 and 16 concurrent clients, each sending `--requests-per-client` streamed chat requests (more where a load
  would send fewer than `--min-requests` in all, so that one client's baseline is not 4 requests): requests/s, answer
  tokens/s, latency p50/p95 and the time to the first streamed text;
- a late short request (max_tokens 8) sent while a burst of 8 long ones (max_tokens 64 in one block) runs: its
  latency, and whether it finished before the burst did;
- 64 clients at once: how many were answered, refused with 429, lost, or failed with a 5xx.
Every answer (greedy) is compared with the same request sent alone to the same server: "differ" counts those that
are not identical. Ratios are against one client of the same server and decoding ("x 1 client") and against the
server with batching off at the same load ("x unbatched"), all measured in this run; compare figures across
machines only as ratios.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LENGTHS = (8, 16, 32, 64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, log, extra: list[str]) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "llada_cli", "serve", model, "--host", "127.0.0.1", "--port",
                                str(port), *extra], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"the server did not start within 180 s; see {log.name}")


def prompt(index: int) -> str:
    return "Repeat: " + " ".join(str((index * 7 + k * 3) % 10) for k in range(3))


def streamed(url: str, model: str, index: int, settings: dict) -> dict:
    """One streamed chat request: status, latency, time to the first text, the answer and its token count."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt(index)}], "stream": True,
            "stream_options": {"include_usage": True}, **settings}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    first, text, tokens = None, [], 0
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            for line in response:
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return {"status": 500, "seconds": time.perf_counter() - started}
                for choice in chunk.get("choices", []):
                    piece = choice.get("delta", {}).get("content")
                    if piece:
                        first = first if first is not None else time.perf_counter() - started
                        text.append(piece)
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    except urllib.error.HTTPError as error:
        return {"status": error.code, "seconds": time.perf_counter() - started}
    except OSError as error:
        return {"status": f"lost ({type(error).__name__})", "seconds": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    return {"status": 200, "seconds": seconds, "first": first if first is not None else seconds,
            "text": "".join(text), "tokens": tokens}


def settings_for(index: int, decoding: dict) -> dict:
    lengths = decoding.get("lengths", LENGTHS)
    length = lengths[index % len(lengths)]
    extra = {"steps": length} if decoding.get("exact") else {"threshold": decoding["threshold"]}
    return {"max_tokens": length, "block_length": 8, **extra}


def load(url: str, model: str, clients: int, per_client: int, decoding: dict) -> list[tuple[int, dict]]:
    results: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(per_client):
            index = c * per_client + r
            result = streamed(url, model, index, settings_for(index, decoding))
            with lock:
                results.append((index, result))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.append((-1, {"wall": time.perf_counter() - started}))
    return results


def summary(results, alone: dict) -> dict:
    wall = next(r["wall"] for i, r in results if i == -1)
    done = [(i, r) for i, r in results if i >= 0 and r["status"] == 200]
    latencies = sorted(r["seconds"] for _, r in done)
    firsts = sorted(r["first"] for _, r in done)

    def percentile(values, p):
        return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))] if values else float("nan")

    return {"requests": len(done), "failed": sum(1 for i, r in results if i >= 0 and r["status"] != 200),
            "rps": len(done) / wall, "tps": sum(r["tokens"] for _, r in done) / wall,
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95), "first": statistics.median(firsts),
            "differ": sum(1 for i, r in done if i in alone and r["text"] != alone[i])}


def late_short(url: str, model: str, decoding: dict) -> dict:
    """8 long requests at once (one block of 64), then a short one 50 ms later: its latency and whether it beat the
    burst."""
    burst, ends = [], []

    def long_request(i: int) -> None:
        # one block of 64: the quickstart model's answer (a few tokens) is complete only after ~60 steps, so these
        # really run long (with blocks of 8 they would end at their EOS after a block)
        settings = {**settings_for(0, {**decoding, "lengths": (64,)}), "block_length": 64}
        burst.append(streamed(url, model, 100 + i, settings))
        ends.append(time.perf_counter())

    threads = [threading.Thread(target=long_request, args=(i,)) for i in range(8)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    short = streamed(url, model, 200, settings_for(0, {**decoding, "lengths": (8,)}))
    short_end = time.perf_counter()
    for thread in threads:
        thread.join()
    return {"short": short["seconds"], "burst": max(ends) - started, "before": short_end < max(ends)}


def flood(url: str, model: str, clients: int = 64) -> dict:
    results = []
    lock = threading.Lock()

    def client(i: int) -> None:
        result = streamed(url, model, i, {"max_tokens": 16, "block_length": 8, "steps": 16})
        with lock:
            results.append(result["status"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"answered": results.count(200), "429": results.count(429),
            "5xx": sum(1 for s in results if isinstance(s, int) and s >= 500),
            "lost": clients - len(results) + sum(1 for s in results if not isinstance(s, int))}


def measure(model: str, work: Path, batch: int, clients: list[int], per_client: int, decodings,
            min_requests: int = 16) -> dict:
    port = free_port()
    log = open(work / f"server-batch{batch}.log", "w")
    server = start_server(model, port, log, ["--max_batch_size", str(batch)])
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    out = {}
    try:
        streamed(url, model, 0, settings_for(0, decodings[0][1]))  # warm-up
        for name, decoding in decodings:
            # every load sends at least `min_requests` (one client alone sends 16, not 4: a steadier baseline)
            runs = {count: max(per_client, -(-min_requests // count)) for count in clients}
            total = max(count * n for count, n in runs.items())
            alone = {i: streamed(url, model, i, settings_for(i, decoding))["text"] for i in range(total)}
            for count in clients:
                out[(name, count)] = summary(load(url, model, count, runs[count], decoding), alone)
            out[(name, "late")] = late_short(url, model, decoding)
        out["flood"] = flood(url, model)
    finally:
        server.kill()
        server.wait()
        log.close()
    return out


def library_ceiling(model_path: str, clients: list[int], repeats: int = 3) -> dict:
    """What batching can give on this machine at all: in-process batched `model.generate` (no server, no HTTP) on the
    issue's setting (32 tokens, blocks of 8, 32 steps), requests/s at each batch size against batch 1."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    import modeling_llada  # noqa: F401 (registers the LLaDA classes with the Auto classes)

    model, tokenizer = AutoModel.from_pretrained(model_path).eval(), AutoTokenizer.from_pretrained(model_path)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": prompt(i)}], add_generation_prompt=True,
                                           tokenize=False) for i in range(max(clients))]
    tokenizer.padding_side = "left"
    settings = dict(max_new_tokens=32, steps=32, block_length=8, temperature=0.0)
    out = {}
    with torch.no_grad():
        for batch in [1, *clients]:
            inputs = tokenizer(texts[:batch], return_tensors="pt", padding=True, add_special_tokens=False)
            model.generate(**inputs, **settings)  # warm-up
            started = time.perf_counter()
            for _ in range(repeats):
                model.generate(**inputs, **settings)
            out[batch] = batch * repeats / (time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a LLaDA folder or Hub id with a chat template; default: train the "
                                        "quickstart's tiny model")
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--min-requests", type=int, default=16, help="the fewest requests a load sends in all (one "
                                                                      "client then sends 16)")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--clients", default="1,4,8,16")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="llada-bench-serve-"))
    model = args.model
    if model is None:
        print("training the quickstart's tiny model (llada-hf quickstart --quick) ...", flush=True)
        subprocess.run([sys.executable, "-m", "llada_cli", "quickstart", "--quick", "--output_dir", str(work / "qs")],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        model = str(work / "qs" / "hub")
    clients = [int(c) for c in args.clients.split(",")]
    # the setting first (every answer 32 tokens in blocks of 8, 32 steps), then mixed answer lengths
    decodings = [("exact, 32 tokens", {"exact": True, "lengths": (32,)}), ("exact, mixed", {"exact": True}),
                 (f"threshold {args.threshold}, mixed", {"threshold": args.threshold})]
    batched = measure(model, work, 16, clients, args.requests_per_client, decodings, args.min_requests)
    single = measure(model, work, 1, clients, args.requests_per_client, decodings, args.min_requests)
    import torch

    print(f"model={model} requests/client={args.requests_per_client} (at least {args.min_requests} per load), "
          f"blocks of 8, streamed; mixed: max_tokens "
          f"{'/'.join(map(str, LENGTHS))} in turn; torch threads={torch.get_num_threads()}")
    print("| decoding | clients | batching | req/s | tok/s | p50 ms | p95 ms | first text ms | x 1 client | "
          "x unbatched | differ |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, _ in decodings:
        for count in clients:
            for label, runs in (("on", batched), ("off", single)):
                r, base, off = runs[(name, count)], runs[(name, clients[0])], single[(name, count)]
                print(f"| {name} | {count} | {label} | {r['rps']:.1f} | {r['tps']:.0f} | {r['p50'] * 1000:.0f} | "
                      f"{r['p95'] * 1000:.0f} | {r['first'] * 1000:.0f} | {r['rps'] / base['rps']:.2f}x rps, "
                      f"{r['p50'] / base['p50']:.2f}x p50 | {r['rps'] / off['rps']:.2f}x | {r['differ']} |")
    print()
    for name, _ in decodings:
        for label, runs in (("on", batched), ("off", single)):
            late = runs[(name, "late")]
            print(f"late short request ({name}, batching {label}): {late['short'] * 1000:.0f} ms, burst of 8 long "
                  f"{late['burst'] * 1000:.0f} ms, finished first: {late['before']}")
    for label, runs in (("on", batched), ("off", single)):
        print(f"64 clients at once (batching {label}): {runs['flood']}")
    ceiling = library_ceiling(model, clients)
    print("in-process batched model.generate, exact, 32 tokens (the ceiling batching can reach here): " + ", ".join(
        f"batch {batch} {rps:.1f} req/s ({rps / ceiling[1]:.2f}x)" for batch, rps in ceiling.items()))


if __name__ == "__main__":
    main()

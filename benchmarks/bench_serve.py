"""Load test of `llada-hf serve`: requests/s and latency p50/p95 at 1, 4 and 8 concurrent clients, with exact decoding
(one token per step) and fast decoding (confidence threshold), against one server started here.

    python benchmarks/bench_serve.py [--model DIR] [--requests-per-client 4] [--max-tokens 32] [--block-length 8]

--model is a LLaDA folder with a chat template; without it the quickstart's tiny model is trained first (about
two minutes on a CPU, offline). Every row is measured in the same run against the single-client exact baseline (the
"x req/s" and "x p50" columns), so the numbers compare across machines only as ratios. The server runs requests one
at a time in arrival order, so more clients raise latency, not throughput; fast decoding lowers both.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, log) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "llada_cli", "serve", model, "--host", "127.0.0.1", "--port",
                                str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
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


def request(url: str, model: str, index: int, settings: dict) -> tuple[float, dict]:
    digits = " ".join(str((index * 7 + k * 3) % 10) for k in range(3))
    body = {"model": model, "messages": [{"role": "user", "content": f"Repeat: {digits}"}], **settings}
    data = json.dumps(body).encode()
    started = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}),
                                timeout=600) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - started, answer


def load(url: str, model: str, clients: int, per_client: int, settings: dict) -> dict:
    latencies: list[float] = []
    tokens = [0]
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(per_client):
            seconds, answer = request(url, model, c * per_client + r, settings)
            with lock:
                latencies.append(seconds)
                tokens[0] += answer["usage"]["completion_tokens"]

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, round(p / 100 * (len(latencies) - 1)))]

    return {"requests": len(latencies), "rps": len(latencies) / wall, "p50": percentile(50), "p95": percentile(95),
            "tokens_per_s": tokens[0] / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a LLaDA folder or Hub id with a chat template; default: train the "
                                        "quickstart's tiny model")
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--block-length", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--clients", default="1,4,8")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="llada-bench-serve-"))
    model = args.model
    if model is None:
        print("training the quickstart's tiny model (llada-hf quickstart --quick) ...", flush=True)
        subprocess.run([sys.executable, "-m", "llada_cli", "quickstart", "--quick", "--output_dir", str(work / "qs")],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        model = str(work / "qs" / "hub")
    port = free_port()
    log = open(work / "server.log", "w")
    server = start_server(model, port, log)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    common = {"max_tokens": args.max_tokens, "block_length": args.block_length}
    decodings = [("exact", {**common, "steps": args.max_tokens}),
                 (f"fast (threshold {args.threshold})", {**common, "threshold": args.threshold})]
    clients = [int(c) for c in args.clients.split(",")]
    try:
        request(url, model, 0, decodings[0][1])  # warm-up
        rows = []
        for name, settings in decodings:
            for count in clients:
                rows.append((name, count, load(url, model, count, args.requests_per_client, settings)))
    finally:
        server.kill()
        server.wait()
        log.close()
    import torch

    base = rows[0][2]
    print(f"model={model} max_tokens={args.max_tokens} block_length={args.block_length} "
          f"requests/client={args.requests_per_client} torch threads={torch.get_num_threads()}")
    print(f"{'decoding':24s} {'clients':>7s} {'requests':>8s} {'req/s':>7s} {'tok/s':>7s} {'p50 ms':>8s} "
          f"{'p95 ms':>8s} {'x req/s':>8s} {'x p50':>7s}")
    for name, count, r in rows:
        print(f"{name:24s} {count:7d} {r['requests']:8d} {r['rps']:7.2f} {r['tokens_per_s']:7.1f} "
              f"{r['p50'] * 1000:8.0f} {r['p95'] * 1000:8.0f} {r['rps'] / base['rps']:8.2f} "
              f"{r['p50'] / base['p50']:7.2f}")


if __name__ == "__main__":
    main()

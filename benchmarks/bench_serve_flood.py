"""A flood of huge requests against `llada-hf serve`: three concurrent 10 MB chat requests, then a small one sent while
they are in flight. Prints each request's status and seconds and the server's peak resident memory (Linux: VmHWM).

    python benchmarks/bench_serve_flood.py MODEL_DIR [--code DIR]

--code runs the server from another checkout of llada-hf (e.g. `git worktree add /tmp/old <commit>`), to compare
with an older server in the same run conditions. MODEL_DIR: a LLaDA folder with a chat template (the quickstart's
`hub` folder).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--code", default=str(ROOT), help="the llada-hf checkout the server runs from")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    server = subprocess.Popen([sys.executable, "-m", "llada_cli", "serve", args.model, "--port", str(port)],
                              cwd=args.code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.3)

        def peak_mb() -> int:
            for line in open(f"/proc/{server.pid}/status"):
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) // 1024
            return -1

        results = {}

        def post(content: str, key: str) -> None:
            body = json.dumps({"model": args.model, "messages": [{"role": "user", "content": content}],
                               "max_tokens": 8}).encode()
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(urllib.request.Request(
                        url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}),
                        timeout=600) as response:
                    status = response.status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError as error:
                status = type(error).__name__
            results[key] = (status, round(time.perf_counter() - started, 2))

        post("Repeat: 1 2 3", "warm-up")
        after_warm_up = peak_mb()
        post("Repeat: 1 2 3", "small alone")
        huge = [threading.Thread(target=post, args=("word " * 2_000_000, f"10 MB #{i}")) for i in range(3)]
        for thread in huge:
            thread.start()
        time.sleep(0.5)
        post("Repeat: 1 2 3", "small during 3 x 10 MB")
        for thread in huge:
            thread.join()
        print(f"server from {args.code}: peak RSS {after_warm_up} MB after warm-up, {peak_mb()} MB after the flood")
        for key, (status, seconds) in results.items():
            print(f"  {key:24s} {status} in {seconds} s")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()

"""How fast `llada-hf` answers `--help`, `--version` and every `<command> --help`, each in a fresh process.

    python benchmarks/bench_cli.py                # 7 runs per case, 3 per cold-cache case
    python benchmarks/bench_cli.py --repeat 15 --check

Every case runs the installed `llada-hf` console script (else `python -m llada_cli`) `--repeat` times after one
untimed warm-up run; the table gives the median and the fastest wall time and the ratio of the median to the baseline
measured in the same run, `python -c pass` (the interpreter's own start-up). The commands whose help is cached on disk
(pretrain, sft, eval, publish) run twice: with a warm cache (the usual case: any earlier --help or training run fills
it) and with a cold one (LLADA_HF_CACHE pointed at a new empty folder for every run: the parser is built, which for
pretrain and sft imports transformers, TRL and torch). Caches of this benchmark live in temporary folders; the user's
cache is never touched. `--check` exits with status 1 when a warm case's median reaches `--limit` seconds (1 s).
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llada_cli import help_cache  # noqa: E402  (both light: the standard library only)
from llada_cli.main import COMMANDS  # noqa: E402


def cli() -> list[str]:
    script = Path(sys.executable).with_name("llada-hf")
    return [str(script)] if script.exists() else [sys.executable, "-m", "llada_cli"]


def run_once(argv: list[str], env: dict) -> float:
    began = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with status {result.returncode}:\n{result.stderr[-2000:]}")
    return seconds


def measure(argv: list[str], env: dict, repeat: int, fresh_cache: bool = False) -> list[float]:
    if not fresh_cache:
        run_once(argv, env)  # warm-up: bytecode, the disk cache of the OS, the help cache
        return [run_once(argv, env) for _ in range(repeat)]
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="llada-hf-bench-cold-") as empty:
            times.append(run_once(argv, {**env, help_cache.CACHE_ENV: empty}))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per case (default: 7)")
    parser.add_argument("--cold-repeat", "--cold_repeat", type=int, default=3,
                        help="timed runs per cold-cache case (default: 3)")
    parser.add_argument("--limit", type=float, default=1.0, help="seconds a warm case must stay under (default: 1)")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a warm case reaches --limit")
    args = parser.parse_args(argv)

    llada_hf = cli()
    with tempfile.TemporaryDirectory(prefix="llada-hf-bench-warm-") as warm_cache:
        env = {**os.environ, help_cache.CACHE_ENV: warm_cache}
        env.pop("LLADA_HF_DEBUG", None)
        cases = [("python -c pass (baseline)", [sys.executable, "-c", "pass"], False),
                 ("llada-hf --help", [*llada_hf, "--help"], False),
                 ("llada-hf --version", [*llada_hf, "--version"], False)]
        for name, command in COMMANDS.items():
            label = f"llada-hf {name} --help" + (" (warm cache)" if command.cached_help else "")
            cases.append((label, [*llada_hf, name, "--help"], False))
        for name, command in COMMANDS.items():
            if command.cached_help:
                cases.append((f"llada-hf {name} --help (cold cache)", [*llada_hf, name, "--help"], True))

        rows = []
        for label, command_line, cold in cases:
            times = measure(command_line, env, args.cold_repeat if cold else args.repeat, fresh_cache=cold)
            rows.append((label, statistics.median(times), min(times), len(times), cold))
            print(f"  measured {label}", file=sys.stderr, flush=True)

    baseline = rows[0][1]
    print(f"llada-hf CLI start-up, {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, command: {' '.join(Path(part).name for part in llada_hf)}")
    print()
    width = max(len(row[0]) for row in rows)
    print(f"| {'case':<{width}} | runs | median s | fastest s | x baseline | < {args.limit:g} s |")
    print(f"| {'-' * width} | ---: | -------: | --------: | ---------: | ----- |")
    slow = []
    for label, median, fastest, runs, cold in rows:
        under = "yes" if median < args.limit else "no"
        if not cold and median >= args.limit:
            slow.append(label)
        print(f"| {label:<{width}} | {runs:>4} | {median:>8.3f} | {fastest:>9.3f} | {median / baseline:>10.1f} | "
              f"{under:<5} |")
    if slow:
        print(f"\nover {args.limit:g} s with a warm cache: {', '.join(slow)}")
    return 1 if args.check and slow else 0


if __name__ == "__main__":
    sys.exit(main())

"""The bad-input sweep (issue #30): about 200 careless or hostile inputs across library `generate` and the family
checkpoints, the trainers, the CLI and the server, each classified as correct, clear error, unclear error, silently
wrong or stalled (benchmarks/bad_inputs/harness.py). Offline, tiny models, a few minutes on a CPU.

    python benchmarks/bad_inputs/run.py [--area generate train cli serve] [--quiet]

Exits 1 when any case is silently wrong, stalls or is refused although valid, or more than 2% are unclear.
"""

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AREAS = ("generate", "family", "train", "cli", "serve")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area", nargs="*", choices=AREAS, default=list(AREAS))
    parser.add_argument("--quiet", action="store_true", help="print only the cases that are not correct or clear")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="llada-sweep-hf-"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    from bad_inputs.harness import report, run_case

    cases = []
    for area in args.area:
        module = importlib.import_module(f"bad_inputs.cases_{area}")
        for case in module.cases():
            cases.append(run_case(case))
    counts = report(cases, verbose=not args.quiet)
    wrong = counts["silent"] + counts["refused"] + counts["stall"]
    return 1 if wrong or counts["unclear"] > 0.02 * len(cases) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The sweep's harness: each case says what a careless or hostile input must give, and is classified by what it gave.

Outcomes:
- correct: an input that must work worked, and its check of the result held (the result, not just "no error");
- clear: an input that must be refused raised the expected type with a message matching the case's regex (which
  names the setting, field or row, and usually the value); for the CLI: exit status 2, one line, no traceback;
  a case that expects a warning got one matching the regex;
- unclear: refused, but the message does not name the cause (or a traceback, or a deep error type);
- silent: must be refused or warned about and was not, or must work and gave a wrong result;
- stall: a request that waited on another one's work (serve cases measure this themselves);
- refused: an input that must work was refused (a bug too: counted with "silent" as wrong).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

OUTCOMES = ("correct", "clear", "unclear", "silent", "stall", "refused")


@dataclass
class Case:
    """One input. `expect` is "error" (refused: `error` type, message matching `says`), "warn" (runs, and a warning or
    log record matching `says` is emitted), "ok" (runs, and `check(result)` is true), "cli" (`call` returns
    (exit_status, stderr): status 2, one line matching `says`, no traceback) or "timing" (`call` returns an outcome
    name and a detail itself)."""

    area: str
    name: str
    call: Callable[[], Any]
    expect: str = "error"
    says: str = ""
    error: type | tuple = Exception
    check: Callable[[Any], bool] | None = None
    outcome: str = ""
    detail: str = ""
    seconds: float = 0.0
    tags: list = field(default_factory=list)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 220 else text[:217] + "..."


def run_case(case: Case) -> Case:
    start = time.perf_counter()
    try:
        _classify(case)
    except Exception as error:  # the harness itself must never stop the sweep
        case.outcome, case.detail = "unclear", f"harness: {type(error).__name__}: {error}"
    case.seconds = time.perf_counter() - start
    return case


def _classify(case: Case) -> None:
    if case.expect == "timing":
        case.outcome, case.detail = case.call()
        return
    if case.expect == "cli":
        status, stderr = case.call()
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        text = " ".join(lines)
        if status == 0:
            case.outcome, case.detail = "silent", f"exit 0; stderr: {_one_line(text)}"
        elif "Traceback" in stderr or len(lines) != 1 or not re.search(case.says, text, re.S):
            case.outcome, case.detail = "unclear", f"exit {status}; {len(lines)} line(s): {_one_line(text)}"
        else:
            case.outcome, case.detail = "clear", f"exit {status}: {_one_line(text)}"
        return
    records = _Records()
    root = logging.getLogger()
    root.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(io.StringIO()) as stderr:
            warnings.simplefilter("always")
            try:
                result = case.call()
            except Exception as error:
                message = f"{type(error).__name__}: {error}"
                if case.expect in ("ok", "warn"):
                    case.outcome, case.detail = "refused", _one_line(message)
                elif isinstance(error, case.error) and re.search(case.says, str(error), re.S):
                    case.outcome, case.detail = "clear", _one_line(message)
                else:
                    where = traceback.extract_tb(error.__traceback__)[-1]
                    case.outcome = "unclear"
                    case.detail = _one_line(f"{message} (at {where.filename.split('/')[-1]}:{where.lineno})")
                return
    finally:
        root.removeHandler(records)
    said = [str(w.message) for w in caught] + records.messages + [stderr.getvalue()]
    if case.expect == "error":
        case.outcome, case.detail = "silent", f"no error; returned {_one_line(repr(result))}"
    elif case.expect == "warn":
        hit = next((text for text in said if re.search(case.says, text, re.S)), None)
        case.outcome = "clear" if hit else "silent"
        case.detail = _one_line(hit or f"no warning matching {case.says!r}; said: {said[:3]}")
    else:
        good = bool(case.check(result)) if case.check is not None else True
        case.outcome = "correct" if good else "silent"
        case.detail = "" if good else _one_line(f"wrong result: {result!r}")


def report(cases: list[Case], verbose: bool = True) -> dict:
    """Print each case (verbose) and the counts; return the counts."""
    counts = {outcome: 0 for outcome in OUTCOMES}
    for case in cases:
        counts[case.outcome] += 1
        if verbose or case.outcome not in ("correct", "clear"):
            print(f"{case.outcome:8} {case.area:9} {case.name}  [{case.seconds:.1f}s]"
                  + (f"\n         {case.detail}" if case.detail else ""))
    total = len(cases)
    print()
    print(f"{total} cases: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES))
    areas = sorted({case.area for case in cases})
    for area in areas:
        mine = [case for case in cases if case.area == area]
        print(f"  {area:9} {len(mine):4}: " + ", ".join(
            f"{sum(c.outcome == o for c in mine)} {o}" for o in OUTCOMES if any(c.outcome == o for c in mine)))
    if total:
        print(f"unclear: {100 * counts['unclear'] / total:.1f}% (target <= 2%); wrong (silent + refused): "
              f"{counts['silent'] + counts['refused']} (target 0); stalls: {counts['stall']} (target 0)")
    return counts

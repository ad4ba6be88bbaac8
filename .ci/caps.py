"""The caps pyproject.toml puts on the packages whose internals we lean on, against what is installed.

    python .ci/caps.py check NAME...    the newest run: each cap must be `<X.Y`, the next minor after the installed
                                        release (exit 1 naming each one that is not)
    python .ci/caps.py report NAME...   the upcoming run: which installed releases lie past their caps
"""

import re
import sys
from importlib.metadata import version

from packaging.version import Version


def cap(text: str, name: str) -> str | None:
    found = re.search(rf'"{re.escape(name)}>=[^,"]+,<([0-9][0-9.]*)"', text)
    return found[1] if found else None


def main(mode: str, names: list[str]) -> int:
    text = open("pyproject.toml").read()
    caps = {name: cap(text, name) for name in names}
    if mode == "report":
        past = [f"{name} {version(name)} (cap <{caps[name]})" for name in names
                if caps[name] and Version(version(name)) >= Version(caps[name])]
        print("past the caps: " + ", ".join(past) if past else "no release past the caps today: this run is the "
                                                               "newest run")
        return 0
    bad = []
    for name in names:
        major, minor = (int(x) for x in version(name).split(".")[:2])
        if caps[name] is None or not re.fullmatch(r"[0-9]+\.[0-9]+", caps[name]):
            bad.append(f"{name} has no `<X.Y` cap in pyproject.toml")
        elif caps[name] != f"{major}.{minor + 1}":
            bad.append(f"{name}: pip resolved {version(name)} under the cap <{caps[name]}; the cap must be the next "
                       f"minor after the newest release CI ran (<{major}.{minor + 1})")
    print("\n".join(bad) or "caps: each sits right above the release resolved today")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))

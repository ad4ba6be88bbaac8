"""The `--help` text of the commands whose parser is expensive to build, cached on disk.

`llada-hf pretrain --help`, `sft --help`, `dpo --help` and `grpo --help` list every field of transformers'
`TrainingArguments`, and building that parser imports transformers, torch, peft and accelerate (5 s or more). The
rendered text is stored once (by the first `--help`, or by a run, which builds the parser anyway: `warm`) and printed
from then on without importing any of them. (`eval` and `publish` cache theirs the same way.)

Where: `$LLADA_HF_CACHE/help`, else `$XDG_CACHE_HOME/llada-hf/help`, else `~/.cache/llada-hf/help`; one JSON file per
command and terminal width, holding the text and the key it was rendered under. The key is everything the text
depends on: the llada-hf version, a hash of its source files (the flags, their help and defaults are defined there),
the versions of the libraries that define the rest (transformers, trl, peft, accelerate, ...), the Python version (it
formats the help) and the terminal width (argparse wraps to it). A file whose key differs, or that cannot be read or
parsed, is a miss: the help is built, printed and stored again. Writes are atomic (a temporary file, then
`os.replace`); a cache folder that cannot be written is no error, the help is only slower.

Importing this module costs nothing (the standard library only).
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
from importlib import metadata, util
from pathlib import Path

CACHE_ENV = "LLADA_HF_CACHE"
# Bump when the file layout or the key changes.
FORMAT = 1
# The packages of llada-hf whose source defines flags, help text and defaults (any change of theirs is a miss).
SOURCE_PACKAGES = ("llada_cli", "trainers", "hub_cards", "modeling_llada")
# The libraries that define flags too (TrainingArguments, TRL's ModelConfig and ScriptArguments, lm-eval, ...).
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "huggingface-hub", "lm-eval")


def cache_dir() -> Path:
    """The folder of the cached help texts (not created here)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "help"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llada-hf" / "help"


def terminal_width() -> int:
    """The width argparse formats help to (it reads `COLUMNS`, then the terminal, else 80)."""
    return shutil.get_terminal_size().columns


def _package_dir(name: str) -> Path | None:
    spec = util.find_spec(name)  # finds a top-level package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sources_digest() -> str:
    """sha256 of the Python source files of llada-hf's packages (paths and contents)."""
    digest = hashlib.sha256()
    for name in SOURCE_PACKAGES:
        folder = _package_dir(name)
        if folder is None:
            digest.update(f"{name}: missing\n".encode())
            continue
        for path in sorted(folder.rglob("*.py")):
            digest.update(f"{name}/{path.relative_to(folder).as_posix()}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _library_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def key(command: str) -> dict:
    """Everything the help text of `command` depends on."""
    from . import version

    return {
        "format": FORMAT,
        "command": command,
        "llada-hf": version(),
        "sources": sources_digest(),
        "libraries": {name: _library_version(name) for name in LIBRARIES},
        "python": sys.version,
        "width": terminal_width(),
    }


def _path(command: str, width: int) -> Path:
    return cache_dir() / f"{command}-{width}.json"


def load(command: str, expected: dict | None = None) -> str | None:
    """The cached help of `command` when it was rendered under the current key; None otherwise."""
    expected = key(command) if expected is None else expected
    try:
        entry = json.loads(_path(command, expected["width"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not JSON (ValueError covers UnicodeDecodeError)
        return None
    if not isinstance(entry, dict) or entry.get("key") != expected or not isinstance(entry.get("text"), str):
        return None
    return entry["text"]


def store(command: str, text: str, under: dict | None = None) -> bool:
    """Cache `text` as the help of `command` (atomically); False when the cache folder cannot be written."""
    under = key(command) if under is None else under
    path = _path(command, under["width"])
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump({"key": under, "text": text}, file)
        os.replace(temporary, path)
        return True
    except OSError:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
        return False


def help_text(command: str, build) -> str:
    """The help of `command`: from the cache when it is valid, else `build()` (a function returning the parser),
    rendered and stored."""
    expected = key(command)
    text = load(command, expected)
    if text is None:
        text = build().format_help()
        store(command, text, expected)
    return text


def warm(command: str, parser) -> None:
    """Store `parser`'s help as that of `command` unless the cache already holds it: a run that builds its parser
    anyway makes the next `--help` fast. Never raises."""
    try:
        expected = key(command)
        if load(command, expected) is None:
            store(command, parser.format_help(), expected)
    except Exception:  # noqa: BLE001 (a cache is never worth failing a training run)
        pass

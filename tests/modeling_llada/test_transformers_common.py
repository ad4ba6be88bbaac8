"""transformers' own common tests, run on LLaDA: `ModelTesterMixin` and `ConfigTester`.

They come from the source distribution of the installed transformers release (the wheel does not ship `tests/`):
`pip download` fetches it once, its `tests/` folder is cached under
`$XDG_CACHE_HOME/llada-hf/transformers-tests/<version>/` (default `~/.cache/...`) and reused by later runs. Where
the download is impossible (no network, a development build of transformers), the whole module is skipped.

Our own test folder is a package named `tests` as well, so transformers' folder is imported under another name
(`transformers_upstream_tests`), leaving `tests.*` alone. The sdist leaves out three modules that
`test_modeling_common` / `test_configuration_common` import; they are stood in for below, see `MISSING_MODULES`.

Every common test runs; those about features LLaDA does not have (rotary scaling, experts, sliding windows, a
transformers `Cache`, ...) or hardware this machine lacks skip themselves. The one adaptation is the one transformers
prescribes for a model with a `generate` of its own: `all_generative_model_classes = ()`, see `LLaDAModelTest`.
"""

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import types
import unittest
from pathlib import Path

import pytest
import transformers
import transformers.testing_utils

UPSTREAM_PACKAGE = "transformers_upstream_tests"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llada-hf" / "transformers-tests"


def upstream_tests_dir(version: str) -> Path:
    """The `tests/` folder of transformers' sdist for `version`, downloaded and unpacked once, then cached.

    Unpacked into a scratch folder beside the cache entry and renamed into place, so a concurrent run sees either
    no folder or a complete one. Raises RuntimeError with the reason when the sdist cannot be had.
    """
    target = cache_root() / version
    if (target / "test_modeling_common.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{version}-") as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--no-input",
                   "--disable-pip-version-check", "--retries", "2", "--timeout", "30",
                   f"transformers=={version}", "-d", scratch]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RuntimeError(f"`pip download` of the transformers {version} sdist failed: {error}") from error
        archives = sorted(Path(scratch).glob("transformers-*.tar.gz"))
        if result.returncode != 0 or not archives:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"`pip download` of the transformers {version} sdist failed: {tail[0]}")
        unpacked = Path(scratch) / "tests"
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                # the top-level test modules only: <root>/tests/<name>.py
                if len(parts) == 3 and parts[1] == "tests" and member.isfile() and parts[2].endswith(".py"):
                    unpacked.mkdir(exist_ok=True)
                    (unpacked / parts[2]).write_bytes(archive.extractfile(member).read())
        if not (unpacked / "test_modeling_common.py").is_file():
            raise RuntimeError(f"The transformers {version} sdist has no tests/test_modeling_common.py.")
        # transformers' repository has an (empty) tests/__init__.py that test_configuration_common executes
        (unpacked / "__init__.py").touch()
        try:
            unpacked.rename(target)
        except OSError:  # another run renamed its copy into place first
            if not (target / "test_modeling_common.py").is_file():
                raise
    return target


# Modules of transformers' repository that the sdist leaves out but the common test modules import. The sdist ships
# neither the generation tests (autoregressive `generate`; LLaDA's diffusion generation has tests/modeling_llada/
# test_generation.py) nor the export tests (ExportTesterMixin, the base class of ModelTesterMixin); the test config
# arguments are those of transformers 5's tests/utils/test_configuration_utils.py.
MISSING_MODULES = {
    "generation.test_utils": {"GenerationTesterMixin": type("GenerationTesterMixin", (), {})},
    "exporters.test_export": {"ExportTesterMixin": type("ExportTesterMixin", (), {})},
    "utils.test_configuration_utils": {
        "config_common_kwargs": {
            "return_dict": False,
            "output_hidden_states": True,
            "output_attentions": True,
            "dtype": "float16",
            "chunk_size_feed_forward": 5,
            "architectures": ["BertModel"],
            "id2label": {0: "label"},
            "label2id": {"label": "0"},
            "problem_type": "regression",
        }
    },
}


def register_markers(*sources: Path) -> None:
    """Declare the pytest marks the upstream modules apply at import time, which `--strict-markers` would reject."""
    config = getattr(pytest.mark, "_config", None)  # the running pytest's config; None outside pytest
    if config is None:
        return
    known = {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}
    for source in sources:
        for name in sorted(set(re.findall(r"\bmark\.([A-Za-z]\w*)", source.read_text())) - known):
            config.addinivalue_line("markers", f"{name}: a mark of transformers' common tests")
            known.add(name)


def load_upstream(tests_dir: Path) -> types.ModuleType:
    """transformers' tests folder as the package `transformers_upstream_tests` (not `tests`: ours has that name)."""
    if UPSTREAM_PACKAGE in sys.modules:
        return sys.modules[UPSTREAM_PACKAGE]
    register_markers(
        tests_dir / "test_modeling_common.py",
        tests_dir / "test_configuration_common.py",
        Path(transformers.testing_utils.__file__),
    )
    spec = importlib.util.spec_from_file_location(
        UPSTREAM_PACKAGE, tests_dir / "__init__.py", submodule_search_locations=[str(tests_dir)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[UPSTREAM_PACKAGE] = package
    spec.loader.exec_module(package)
    for dotted, attributes in MISSING_MODULES.items():
        if (tests_dir / (dotted.replace(".", "/") + ".py")).is_file():
            continue
        parent = UPSTREAM_PACKAGE
        for part in dotted.split("."):
            name = f"{parent}.{part}"
            if name not in sys.modules:
                module = types.ModuleType(name)
                module.__path__ = []
                sys.modules[name] = module
                setattr(sys.modules[parent], part, module)
            parent = name
        sys.modules[parent].__dict__.update(attributes)
    for name in ("test_modeling_common", "test_configuration_common"):
        setattr(package, name, importlib.import_module(f"{UPSTREAM_PACKAGE}.{name}"))
    return package


try:
    upstream = load_upstream(upstream_tests_dir(transformers.__version__))
except RuntimeError as error:
    pytest.skip(f"transformers' common tests are unavailable: {error}", allow_module_level=True)

from modeling_llada import LLaDAConfig, LLaDAModel, LLaDAModelLM  # noqa: E402
from tests.utils import tiny_config  # noqa: E402

common = upstream.test_modeling_common
ModelTesterMixin = common.ModelTesterMixin
ConfigTester = upstream.test_configuration_common.ConfigTester
ids_tensor = common.ids_tensor
random_attention_mask = common.random_attention_mask

# The common tests tell a bare model from a head, and pick the labels of a head, by looking the class name up in the
# Auto-class name tables of in-library models. List LLaDA there as it would be if it were one: LLaDAModel is the bare
# model, LLaDAModelLM a masked-LM head (unshifted labels). Copies, so transformers' own tables stay untouched.
common.MODEL_MAPPING_NAMES = {**common.MODEL_MAPPING_NAMES, "llada": "LLaDAModel"}
common.MODEL_FOR_MASKED_LM_MAPPING_NAMES = {**common.MODEL_FOR_MASKED_LM_MAPPING_NAMES, "llada": "LLaDAModelLM"}


class LLaDAModelTester:
    """Inputs for the common tests: the tiny config of tests/utils.py, 13 canvases of 7 tokens with random padding."""

    def __init__(self, parent, batch_size: int = 13, seq_length: int = 7, is_training: bool = True):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = is_training
        config = self.get_config()
        self.vocab_size = config.vocab_size
        self.hidden_size = config.hidden_size
        self.num_hidden_layers = config.num_hidden_layers
        self.num_attention_heads = config.num_attention_heads

    def get_config(self) -> LLaDAConfig:
        return tiny_config(n_kv_heads=2)  # grouped-query attention, as in LLaDA's successors

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        input_ids = ids_tensor([self.batch_size, self.seq_length], config.vocab_size)
        attention_mask = random_attention_mask([self.batch_size, self.seq_length])
        return config, {"input_ids": input_ids, "attention_mask": attention_mask}


class LLaDAModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (LLaDAModel, LLaDAModelLM)
    # LLaDAModelLM.can_generate() is True, but its `generate` is the diffusion reverse process, not GenerationMixin's
    # autoregressive loop that GenerationTesterMixin (not in the sdist either) drives; transformers' rule for such a
    # custom `generate` is to list no generative class here. It is tested in test_generation.py.
    all_generative_model_classes = ()
    # transformers runs this check only for models added since 2023, dated by the file's copyright line (ours has none)
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = LLaDAModelTester(self)
        self.config_tester = ConfigTester(self, config_class=LLaDAConfig, d_model=64, n_heads=4, vocab_size=99)

    def test_config(self):
        self.config_tester.run_common_tests()

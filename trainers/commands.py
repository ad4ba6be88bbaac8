"""Moved to `llada_cli.commands` (the command-line application has its own package); this name stays an alias of it.

The training library never imports this module: only code written for the old layout does.
"""

import importlib
import sys
import warnings

warnings.warn("trainers.commands moved to llada_cli.commands; import it from there (this alias will be removed in a future "
              "release).", FutureWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("llada_cli.commands")

"""Moved to `llada_cli.local_data` (the command-line application has its own package); this name stays an alias of it.

The training library never imports this module: only code written for the old layout does.
"""

import importlib
import sys
import warnings

warnings.warn("trainers.local_data moved to llada_cli.local_data; import it from there (this alias will be removed in a future "
              "release).", FutureWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("llada_cli.local_data")

"""Moved to `llada_cli.live_view` (the command-line application has its own package); this name stays an alias of it.

The training library never imports this module: only code written for the old layout does.
"""

import importlib
import sys
import warnings

warnings.warn("trainers.live_view moved to llada_cli.live_view; import it from there (this alias will be removed in a future "
              "release).", FutureWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("llada_cli.live_view")

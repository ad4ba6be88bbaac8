"""`python -m llada_cli ...` runs the `llada-hf` command."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())

"""Evaluate a LLaDA model (or a LoRA adapter on its base) with lm-evaluation-harness (`pip install -e ".[eval]"`).

    python examples/evaluate.py --model GSAI-ML/LLaDA-8B-Instruct --tasks gsm8k --limit 50 \\
        --max_new_tokens 256 --block_length 32 --steps 256
    python examples/evaluate.py --model runs/base --peft runs/sft-lora --tasks my_task --include_path my_tasks/

Prints lm-eval's results table, then the generation speed: tokens/s and forward passes per generated token.
"""

import sys

from llada_cli.main import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))  # mistakes get the CLI's one-line message

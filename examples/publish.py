"""Publish a saved LLaDA model or LoRA adapter folder to the Hugging Face Hub, with a generated model card.

    python examples/publish.py runs/sft org/my-llada --dry-run          # check, stage and print; no network
    python examples/publish.py runs/sft org/my-llada --dataset org/data --license apache-2.0
    python examples/publish.py runs/sft-lora org/my-llada-lora --base-model org/my-llada-base
    python examples/publish.py runs/sft-lora org/my-llada-merged --merge  # base + adapter as one model

Only what a model or adapter repository needs is uploaded (an allow-list: configs, safetensors weights checked to
parse, the LLaDA code files, tokenizer files, the training record, the card); anything else is left out and listed.
"""

import sys

from llada_cli.publish import main

if __name__ == "__main__":
    sys.exit(main())

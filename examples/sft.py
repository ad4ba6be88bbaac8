"""Response-only masked-diffusion SFT of a LLaDA model, full or LoRA.

    # a fresh tiny model on a checkable addition task (no download):
    python examples/sft.py --output_dir runs/sft
    # LoRA on a pre-trained checkpoint (LLaDA's block projections by default):
    python examples/sft.py --model_name_or_path runs/pretrain --use_peft --lora_r 16 --output_dir runs/sft-lora
    # a chat dataset from the Hub (`messages` column; the response is the last assistant turn), on several GPUs:
    accelerate launch examples/sft.py --model_name_or_path GSAI-ML/LLaDA-8B-Instruct \\
        --dataset_name trl-lib/Capybara --bf16 --use_peft --output_dir runs/capybara
"""

import sys

from llada_cli.main import main

if __name__ == "__main__":
    sys.exit(main(["sft", *sys.argv[1:]]))  # mistakes get the CLI's one-line message

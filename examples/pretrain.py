"""Masked-diffusion pre-training of a LLaDA model.

    # fresh tiny model on the Python docs (no download), a minute or two on a CPU:
    python examples/pretrain.py --output_dir runs/pretrain
    # any LLaDA checkpoint and dataset, on several GPUs:
    accelerate launch examples/pretrain.py --model_name_or_path GSAI-ML/LLaDA-8B-Base \\
        --dataset_name allenai/c4 --dataset_config en --block_size 4096 --output_dir runs/c4 --bf16
    # or with a YAML file of the same flags: python examples/pretrain.py --config pretrain.yaml
"""

import sys

from llada_cli.main import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))  # mistakes get the CLI's one-line message

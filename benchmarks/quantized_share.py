"""What bitsandbytes 4-bit quantization covers in each LLaDA family member at its released shape.

    python benchmarks/quantized_share.py

Each model (LLaDA-8B, LLaDA-MoE-7B-A1B, LLaDA2.0-mini, from the official configs the tests pin) is built on the meta
device (no memory, no weights) and converted by transformers' own bitsandbytes integration, with the modules that
integration keeps unconverted (the output head). Printed per model: the share of weights that become 4-bit
(`nn.Linear`) and of those that stay 16-bit (the fused 3-D routed experts, embeddings, head, routers, norms), and the
weights' memory in bf16, in nf4 (0.5 byte per weight plus an fp32 scale per block of 64) and nf4 nested (8-bit block
scales). The README's "Fine-tune on one GPU" table quotes it.
"""

import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")

GiB = 2**30


def main() -> None:
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModel, BitsAndBytesConfig
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear
    from transformers.quantizers.base import get_keys_to_not_convert

    from modeling_llada import LLaDAConfig
    from modeling_llada.configuration_llada2_moe import LLaDA2MoeConfig
    from modeling_llada.configuration_lladamoe import LLaDAMoEConfig
    from tests.modeling_llada.test_llada2 import LLADA2_MINI
    from tests.modeling_llada.test_lladamoe import LLADA_MOE_7B_A1B

    configs = {"LLaDA-8B": LLaDAConfig(), "LLaDA-MoE-7B-A1B": LLaDAMoEConfig(**LLADA_MOE_7B_A1B),
               "LLaDA2.0-mini": LLaDA2MoeConfig(**LLADA2_MINI)}
    print("| model | parameters | 4-bit (nn.Linear) | 16-bit: fused experts | 16-bit: embedding + head | 16-bit: "
          "routers, norms | bf16 weights | nf4 weights | nf4 nested |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, config in configs.items():
        with torch.device("meta"):
            model = AutoModel.from_config(config)
        kept = get_keys_to_not_convert(model)
        replace_with_bnb_linear(model, modules_to_not_convert=kept,
                                quantization_config=BitsAndBytesConfig(load_in_4bit=True))
        groups = {"4-bit": 0, "experts": 0, "embedding + head": 0, "other": 0}
        for module_name, module in model.named_modules():
            for parameter_name, parameter in module.named_parameters(recurse=False):
                count = parameter.numel()
                if isinstance(module, bnb.nn.Linear4bit) and parameter_name == "weight":
                    groups["4-bit"] += module.in_features * module.out_features  # stored packed, two per byte
                elif parameter.dim() == 3:
                    groups["experts"] += count
                elif isinstance(module, torch.nn.Embedding) or any(module_name.endswith(k) for k in kept):
                    groups["embedding + head"] += count
                else:
                    groups["other"] += count
        total = sum(groups.values())
        quantized, rest = groups["4-bit"], total - groups["4-bit"]
        nf4 = (quantized * 0.5 + quantized / 64 * 4 + rest * 2) / GiB
        nested = (quantized * 0.5 + quantized / 64 + quantized / 64 / 256 * 4 + rest * 2) / GiB
        shares = " | ".join(f"{100 * groups[key] / total:.1f}%" for key in ("4-bit", "experts", "embedding + head",
                                                                             "other"))
        print(f"| {name} | {total / 1e9:.2f}B | {shares} | {total * 2 / GiB:.2f} GiB | {nf4:.2f} GiB | "
              f"{nested:.2f} GiB |")


if __name__ == "__main__":
    main()

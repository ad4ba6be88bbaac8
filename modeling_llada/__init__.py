"""LLaDA for transformers: config, model and diffusion generation.

Importing this package registers LLaDA with the Auto classes, so that official checkpoints (`model_type: "llada"`)
load with `AutoModel.from_pretrained(path)` without `trust_remote_code`; the official LLaDA-MoE checkpoints (also
`model_type: "llada"`, `architectures: ["LLaDAMoEModelLM"]`) load the same way as [`LLaDAMoEModelLM`].
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from .configuration_llada import LLaDAConfig
from .configuration_lladamoe import LLaDAMoEConfig
from .generation_llada import LLaDAGenerateOutput, LLaDAGenerationConfig, LLaDAGenerationMixin, num_transfer_tokens
from .likelihood_llada import LikelihoodEstimate, LLaDALikelihoodMixin
from .modeling_llada import (
    AUTO_MAP,
    LLaDAModel,
    LLaDAModelLM,
    LLaDAModelOutput,
    LLaDAOutput,
    LLaDAPreTrainedModel,
)
from .modeling_lladamoe import (
    LLaDAMoEModel,
    LLaDAMoEModelLM,
    LLaDAMoEModelOutput,
    LLaDAMoEOutput,
    LLaDAMoEPreTrainedModel,
)


def _register() -> None:
    LLaDAConfig.moe_config_class = LLaDAMoEConfig  # official LLaDA-MoE configs also say model_type "llada"
    AutoConfig.register(LLaDAConfig.model_type, LLaDAConfig, exist_ok=True)
    # The official checkpoints map AutoModel to the model with its head, and tools (TRL, lm-eval) load through
    # AutoModelForCausalLM; all three give the same class.
    for auto_class in (AutoModel, AutoModelForMaskedLM, AutoModelForCausalLM):
        auto_class.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
        # LLaDA-MoE's official config.json also says `model_type: "llada"`: `LLaDAConfig.from_dict` returns an
        # LLaDAMoEConfig for it (it names `LLaDAMoEModelLM` in `architectures`), and the Auto classes map that config
        # class to the MoE model. The config class is not registered with AutoConfig: the model type belongs to the
        # dense config, which dispatches.
        auto_class.register(LLaDAMoEConfig, LLaDAMoEModelLM, exist_ok=True)


_register()

__all__ = [
    "AUTO_MAP",
    "LLaDAConfig",
    "LLaDAGenerateOutput",
    "LLaDAGenerationConfig",
    "LLaDAGenerationMixin",
    "LLaDALikelihoodMixin",
    "LikelihoodEstimate",
    "LLaDAModel",
    "LLaDAModelLM",
    "LLaDAModelOutput",
    "LLaDAMoEConfig",
    "LLaDAMoEModel",
    "LLaDAMoEModelLM",
    "LLaDAMoEModelOutput",
    "LLaDAMoEOutput",
    "LLaDAMoEPreTrainedModel",
    "LLaDAOutput",
    "LLaDAPreTrainedModel",
    "num_transfer_tokens",
]

"""LLaDA for transformers: config, model and diffusion generation.

Importing this package registers LLaDA with the Auto classes, so that official checkpoints (`model_type: "llada"`)
load with `AutoModel.from_pretrained(path)` without `trust_remote_code`; the official LLaDA-MoE checkpoints (also
`model_type: "llada"`, `architectures: ["LLaDAMoEModelLM"]`) load the same way as [`LLaDAMoEModelLM`].
LLaDA 2.0 / 2.1 checkpoints (`model_type: "llada2_moe"`) load as [`LLaDA2MoeModelLM`] through every Auto class.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from .configuration_llada import LLaDAConfig
from .configuration_llada2_moe import LLaDA2MoeConfig
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
from .modeling_llada2_moe import (
    LLaDA2MoeModel,
    LLaDA2MoeModelLM,
    LLaDA2MoeModelOutput,
    LLaDA2MoeOutput,
    LLaDA2MoePreTrainedModel,
)
from .modeling_lladamoe import (
    LLaDAMoEExperts,
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
    # LLaDA 2.x (model_type "llada2_moe"): every Auto class gives the model with its head, as for LLaDA and LLaDA-MoE
    # (the official auto_map names the bare model for AutoModel, which would drop the head's weights).
    AutoConfig.register(LLaDA2MoeConfig.model_type, LLaDA2MoeConfig, exist_ok=True)
    for auto_class in (AutoModel, AutoModelForMaskedLM, AutoModelForCausalLM):
        auto_class.register(LLaDA2MoeConfig, LLaDA2MoeModelLM, exist_ok=True)


_register()

__all__ = [
    "AUTO_MAP",
    "LLaDA2MoeConfig",
    "LLaDA2MoeModel",
    "LLaDA2MoeModelLM",
    "LLaDA2MoeModelOutput",
    "LLaDA2MoeOutput",
    "LLaDA2MoePreTrainedModel",
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
    "LLaDAMoEExperts",
    "LLaDAMoEModel",
    "LLaDAMoEModelLM",
    "LLaDAMoEModelOutput",
    "LLaDAMoEOutput",
    "LLaDAMoEPreTrainedModel",
    "LLaDAOutput",
    "LLaDAPreTrainedModel",
    "num_transfer_tokens",
]

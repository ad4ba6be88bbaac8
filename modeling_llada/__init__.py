"""LLaDA for transformers: config, model and diffusion generation.

Importing this package registers LLaDA with the Auto classes, so that official checkpoints (`model_type: "llada"`)
load with `AutoModel.from_pretrained(path)` without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from .configuration_llada import LLaDAConfig
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


def _register() -> None:
    AutoConfig.register(LLaDAConfig.model_type, LLaDAConfig, exist_ok=True)
    # The official checkpoints map AutoModel to the model with its head, and tools (TRL, lm-eval) load through
    # AutoModelForCausalLM; all three give the same class.
    for auto_class in (AutoModel, AutoModelForMaskedLM, AutoModelForCausalLM):
        auto_class.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)


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
    "LLaDAOutput",
    "LLaDAPreTrainedModel",
    "num_transfer_tokens",
]

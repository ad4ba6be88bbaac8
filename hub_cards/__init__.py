"""Model cards and Hub publishing for LLaDA checkpoints and adapters."""

from .cards import build_adapter_card, build_model_card, card_for_folder, count_parameters, training_record
from .publish import IncompleteFolderError, PublishResult, check_folder, merge_adapter, publish, stage

__all__ = [
    "IncompleteFolderError",
    "PublishResult",
    "build_adapter_card",
    "build_model_card",
    "card_for_folder",
    "check_folder",
    "count_parameters",
    "merge_adapter",
    "publish",
    "stage",
    "training_record",
]

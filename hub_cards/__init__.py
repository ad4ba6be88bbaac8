"""Model cards and Hub publishing for LLaDA checkpoints and adapters."""

from .cards import (build_adapter_card, build_model_card, card_for_folder, count_parameters, training_markdown,
                    training_record)
from .publish import (
    ALLOW_LIST,
    BaseModel,
    BaseModelError,
    IncompleteFolderError,
    PublishResult,
    UnpublishableFolderError,
    UnsafeFolderError,
    check_folder,
    check_repo_id,
    merge_adapter,
    publish,
    resolve_base_model,
    select_files,
    stage,
)

__all__ = [
    "ALLOW_LIST",
    "BaseModel",
    "BaseModelError",
    "IncompleteFolderError",
    "PublishResult",
    "UnpublishableFolderError",
    "UnsafeFolderError",
    "build_adapter_card",
    "build_model_card",
    "card_for_folder",
    "check_folder",
    "check_repo_id",
    "count_parameters",
    "merge_adapter",
    "publish",
    "resolve_base_model",
    "select_files",
    "stage",
    "training_markdown",
    "training_record",
]

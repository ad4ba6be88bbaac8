"""Where the publishing code meets upstream behaviour it cannot change: the deprecation warnings upstream code raises
about its own calls while an adapter is merged (`hub_cards.publish.merge_adapter`). It sits in the lowest layer that
needs it, so that the training code above (trainers/compat.py, which silences the same warnings while the trainers
wrap a model or generate) can take it from here.

Importing this module costs nothing (the standard library only).
"""

import warnings
from contextlib import contextmanager


@contextmanager
def quiet_upstream_deprecations():
    """Upstream code calls names transformers >= 5.23 deprecates, with a FutureWarning about code the user cannot
    change: PEFT (<= 0.21) reads `model.is_gradient_checkpointing` when it wraps a model (every LoRA run, every
    adapter merge), and TRL's `unwrap_model_for_generation` turns `gradient_checkpointing_disable` / `_enable` around
    every GRPO rollout when activation checkpointing is on. Silence exactly those while the model is wrapped or
    generates."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*`gradient_checkpointing_(enable|disable)` is deprecated",
                                category=FutureWarning)
        yield

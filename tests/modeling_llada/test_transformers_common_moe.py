"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`) run on LLaDA-MoE.

Same set-up as test_transformers_common.py (whose loader of transformers' sdist tests this module reuses): skipped
where those tests are unavailable.
"""

import unittest

from tests.modeling_llada import test_transformers_common as dense_common  # skips this module when unavailable

from modeling_llada import LLaDAMoEConfig, LLaDAMoEModel, LLaDAMoEModelLM  # noqa: E402

common = dense_common.common
ids_tensor = dense_common.ids_tensor
random_attention_mask = dense_common.random_attention_mask

# LLaDA-MoE shares the model type "llada" with dense LLaDA: list both classes under it (copies, as the dense module).
common.MODEL_MAPPING_NAMES = {**common.MODEL_MAPPING_NAMES, "llada": ("LLaDAModel", "LLaDAMoEModel")}
common.MODEL_FOR_MASKED_LM_MAPPING_NAMES = {
    **common.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    "llada": ("LLaDAModelLM", "LLaDAMoEModelLM"),
}


def tiny_moe_config(**overrides) -> LLaDAMoEConfig:
    """2 layers (the first dense), d 32, 4 heads (2 key/value heads), 4 experts top-2, vocab 64 (mask 60)."""
    values = dict(
        vocab_size=64, hidden_size=32, dense_intermediate_size=64, expert_intermediate_size=16,
        shared_expert_intermediate_size=24, num_hidden_layers=2, moe_layer_freq=[0, 1], num_attention_heads=4,
        num_key_value_heads=2,
        num_experts=4, num_experts_per_tok=2, max_position_embeddings=128, mask_token_id=60, eos_token_id=61,
        pad_token_id=61, bos_token_id=62,
    )
    values.update(overrides)
    return LLaDAMoEConfig(**values)


class LLaDAMoEModelTester(dense_common.LLaDAModelTester):
    def get_config(self) -> LLaDAMoEConfig:
        return tiny_moe_config()


class LLaDAMoEModelTest(common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (LLaDAMoEModel, LLaDAMoEModelLM)
    # as for dense LLaDA: `generate` is the diffusion reverse process (tested in test_lladamoe.py)
    all_generative_model_classes = ()
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = LLaDAMoEModelTester(self)
        self.config_tester = dense_common.ConfigTester(
            self, config_class=LLaDAMoEConfig, hidden_size=32, num_attention_heads=4, vocab_size=99
        )

    def test_config(self):
        self.config_tester.run_common_tests()

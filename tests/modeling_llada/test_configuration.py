import json

import pytest
from transformers import AutoConfig

from modeling_llada import LLaDAConfig

# The official GSAI-ML/LLaDA-8B-Instruct config.json values (REFERENCE.md section 2).
OFFICIAL_8B = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 4096,
    "embedding_dropout": 0.0,
    "embedding_size": 126464,
    "eos_token_id": 126081,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 126336,
    "max_sequence_length": 4096,
    "mlp_hidden_size": 12288,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 32,
    "n_kv_heads": 32,
    "n_layers": 32,
    "pad_token_id": 126081,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": 126464,
    "weight_tying": False,
}


def test_defaults_are_the_8b_values():
    config = LLaDAConfig()
    assert config.num_key_value_heads == OFFICIAL_8B["n_kv_heads"]
    for key in ("d_model", "n_heads", "n_layers", "mlp_hidden_size", "vocab_size", "mask_token_id",
                "eos_token_id", "pad_token_id", "max_sequence_length", "rope_theta", "rms_norm_eps", "weight_tying"):
        assert getattr(config, key) == OFFICIAL_8B[key], key
    assert config.bos_token_id == 126080


def test_official_config_json_loads_through_autoconfig(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_8B))
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, LLaDAConfig)
    assert (config.d_model, config.n_layers, config.mask_token_id) == (4096, 32, 126336)
    # fields with no effect here are kept, so a re-save writes them back
    assert config.init_fn == "mitchell" and config.precision == "amp_bf16"


def test_transformers_names_alias_the_official_ones():
    config = LLaDAConfig(d_model=64, n_heads=8, n_kv_heads=2, n_layers=3, mlp_hidden_size=96, vocab_size=100,
                         embedding_size=128, mask_token_id=99, eos_token_id=98, pad_token_id=98, bos_token_id=97,
                         max_sequence_length=512, weight_tying=True)
    assert config.hidden_size == 64
    assert config.num_attention_heads == 8
    assert config.num_key_value_heads == 2
    assert config.num_hidden_layers == 3
    assert config.intermediate_size == 96
    assert config.max_position_embeddings == 512
    assert config.tie_word_embeddings is True
    assert config.head_dim == 8
    config.tie_word_embeddings = False
    assert config.weight_tying is False


def test_transformers_names_are_accepted_as_arguments():
    config = LLaDAConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=128,
                         vocab_size=320, embedding_size=320, mask_token_id=300, eos_token_id=301, pad_token_id=301,
                         bos_token_id=302, tie_word_embeddings=True)
    assert (config.d_model, config.n_heads, config.n_layers, config.mlp_hidden_size) == (64, 4, 2, 128)
    assert config.weight_tying is True


def test_mlp_hidden_size_none_falls_back_to_ratio():
    config = LLaDAConfig(d_model=64, n_heads=4, mlp_hidden_size=None, mlp_ratio=3, vocab_size=320,
                         embedding_size=None, mask_token_id=300, eos_token_id=301, pad_token_id=301, bos_token_id=302)
    assert config.intermediate_size == 192
    assert config.padded_vocab_size == 320


def test_a_small_vocabulary_drops_the_8b_token_ids_it_cannot_hold():
    # transformers' rule: a config builds from its sizes alone, e.g. for tests
    config = LLaDAConfig(vocab_size=99)
    assert (config.mask_token_id, config.eos_token_id, config.pad_token_id, config.bos_token_id) == (None,) * 4
    assert LLaDAConfig(vocab_size=126200).mask_token_id is None
    assert LLaDAConfig(vocab_size=126200).eos_token_id == 126081
    # ids given explicitly are kept, and checked
    assert LLaDAConfig(vocab_size=99, mask_token_id=98, eos_token_id=[1, 2]).mask_token_id == 98
    with pytest.raises(ValueError, match=r"`bos_token_id` must be an integer id in \[0, vocab_size=99\), got 120"):
        LLaDAConfig(vocab_size=99, bos_token_id=120)


def test_no_mask_token_is_allowed_and_survives_a_round_trip(tmp_path):
    config = LLaDAConfig(vocab_size=99, d_model=64, n_heads=4)
    config.save_pretrained(tmp_path)
    assert LLaDAConfig.from_pretrained(tmp_path).mask_token_id is None
    assert LLaDAConfig(mask_token_id=None).mask_token_id is None


def test_multi_query_attention_means_one_kv_head():
    config = LLaDAConfig(multi_query_attention=True)
    assert config.num_key_value_heads == 1


def test_save_and_reload_round_trips(tmp_path):
    config = LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, vocab_size=320, embedding_size=384,
                         mask_token_id=300, eos_token_id=[301, 303], pad_token_id=301, bos_token_id=302)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["d_model"] == 64 and saved["n_kv_heads"] == 2 and "hidden_size" not in saved
    again = LLaDAConfig.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(d_model=100, n_heads=3), "divisible by `n_heads`"),
        (dict(n_heads=32, n_kv_heads=5), "multiple of `n_kv_heads`"),
        (dict(mask_token_id=200000), "mask_token_id"),
        (dict(eos_token_id=-1), "eos_token_id"),
        (dict(eos_token_id=[126081, 999999]), "eos_token_id"),
        (dict(vocab_size=99, mask_token_id=99), "mask_token_id"),
        (dict(mask_token_id=126081), r"must differ from `eos_token_id` \(126081\)"),
        (dict(mask_token_id=126080), r"must differ from `bos_token_id` \(126080\)"),
        (dict(mask_token_id=7, pad_token_id=7), r"must differ from `pad_token_id` \(7\)"),
        (dict(rope_theta=0.0), r"`rope_theta` must be a finite number > 0.*got 0.0"),
        (dict(rope_theta=-10000.0), r"`rope_theta` must be a finite number > 0.*-10000.0"),
        (dict(rope_theta=float("nan")), r"`rope_theta` must be a finite number > 0.*nan"),
        (dict(rms_norm_eps=0.0), r"`rms_norm_eps` must be a finite number > 0"),
        (dict(init_std=-0.02), r"`init_std` must be a finite number > 0"),
        (dict(block_type="sequential"), "block_type"),
        (dict(activation_type="gelu"), "activation_type"),
        (dict(layer_norm_type="default"), "layer_norm_type"),
        (dict(alibi=True), "alibi"),
        (dict(rope=False), "rope"),
        (dict(embedding_size=1000), "embedding_size"),
        (dict(n_layers=0), "n_layers"),
        (dict(residual_dropout=1.5), "residual_dropout"),
        (dict(clip_qkv=8.0), "clip_qkv"),
    ],
)
def test_invalid_configs_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message) as info:
        LLaDAConfig(**overrides)
    assert "Invalid LLaDAConfig" in str(info.value)


# --- the rules the three configs share (configuration_llada.py holds them) ---------------------------------------


def config_classes():
    from modeling_llada import LLaDA2MoeConfig, LLaDAMoEConfig

    return [LLaDAConfig, LLaDAMoEConfig, LLaDA2MoeConfig]


@pytest.mark.parametrize("config_class", config_classes(), ids=lambda cls: cls.__name__)
def test_every_config_drops_the_default_special_ids_a_small_vocabulary_does_not_hold(config_class):
    config = config_class(vocab_size=100)  # the real ids are all >= 126080
    assert (config.mask_token_id, config.eos_token_id, config.pad_token_id, config.bos_token_id) == (None,) * 4
    assert config_class(vocab_size=100, mask_token_id=99).mask_token_id == 99  # an id given is kept


@pytest.mark.parametrize("config_class", config_classes(), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("name", ["mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id"])
def test_every_config_rejects_a_given_special_id_outside_the_vocabulary_saying_what_to_do(config_class, name):
    message = (rf"Invalid {config_class.__name__}: `{name}` must be an integer id in \[0, vocab_size=100\), got 120\. "
               "Set it to the id your tokenizer uses for that token.")
    with pytest.raises(ValueError, match=message):
        config_class(vocab_size=100, **{name: 120})


@pytest.mark.parametrize("config_class", config_classes(), ids=lambda cls: cls.__name__)
def test_every_config_rejects_a_mask_id_shared_with_another_special_token(config_class):
    with pytest.raises(ValueError, match=r"`mask_token_id` \(7\) must differ from `eos_token_id` \(7\); the \[MASK\]"):
        config_class(vocab_size=100, mask_token_id=7, eos_token_id=7)

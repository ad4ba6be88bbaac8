import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

import modeling_llada.modeling_llada as modeling
from modeling_llada import LLaDAConfig, LLaDAModelLM
from tests.utils import assert_close_fp32, tiny_config, tiny_model


def official_parameter_names(n_layers: int, tied: bool) -> set[str]:
    names = {"model.transformer.wte.weight", "model.transformer.ln_f.weight"}
    if not tied:
        names.add("model.transformer.ff_out.weight")
    for i in range(n_layers):
        for part in ("attn_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_norm", "ff_proj", "up_proj", "ff_out"):
            names.add(f"model.transformer.blocks.{i}.{part}.weight")
    return names


# --- parity with the official implementation -------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager", "flex_attention"])
@torch.no_grad()  # flex attention has no backward on CPU
def test_fixture_logits_match_reference(fixture_dir, reference, attn_implementation):
    model = AutoModel.from_pretrained(fixture_dir, attn_implementation=attn_implementation).eval()
    case = reference["logits"]
    logits = model(torch.tensor(case["input_ids"])).logits
    # float32 rounding only: measured <= 5e-7 of the largest logit (~15) across kernels and thread counts
    assert_close_fp32(logits, torch.tensor(case["logits"]))
    padded = reference["logits_padded"]
    mask = torch.tensor(padded["attention_mask"])
    logits = model(torch.tensor(padded["input_ids"]), attention_mask=mask).logits
    real = mask.bool()
    assert_close_fp32(logits[real], torch.tensor(padded["logits"])[real])


def test_fixture_left_padded_logits_match_reference_on_real_positions(official_model, reference):
    case = reference["logits_padded"]
    mask = torch.tensor(case["attention_mask"])
    logits = official_model(torch.tensor(case["input_ids"]), attention_mask=mask).logits
    real = mask.bool()
    assert_close_fp32(logits[real], torch.tensor(case["logits"])[real])  # rounding only, as above


def test_official_folder_loads_with_our_classes_without_remote_code(official_model, fixture_dir):
    # the folder has the official auto_map but no code files: only our registration can make this work
    assert not any(p.suffix == ".py" for p in fixture_dir.iterdir())
    assert type(official_model) is LLaDAModelLM
    for auto_class in (AutoModelForCausalLM, AutoModelForMaskedLM):
        assert type(auto_class.from_pretrained(fixture_dir)) is LLaDAModelLM


# --- architecture ------------------------------------------------------------------------------------------------


def test_official_8b_config_builds_on_meta_with_official_names_and_size():
    with torch.device("meta"):
        model = LLaDAModelLM(LLaDAConfig())
    names = {name for name, _ in model.named_parameters()}
    assert names == official_parameter_names(32, tied=False)
    assert sum(p.numel() for p in model.parameters()) == 8_015_581_184
    shapes = dict(model.named_parameters())
    assert shapes["model.transformer.wte.weight"].shape == (126464, 4096)
    assert shapes["model.transformer.blocks.0.ff_proj.weight"].shape == (12288, 4096)
    assert shapes["model.transformer.blocks.0.ff_out.weight"].shape == (4096, 12288)
    assert shapes["model.transformer.ff_out.weight"].shape == (126464, 4096)


def test_grouped_query_attention_equals_attention_with_repeated_kv_heads():
    gqa = tiny_model(n_heads=4, n_kv_heads=2)
    mha = tiny_model(seed=1, n_heads=4, n_kv_heads=4)
    state = gqa.state_dict()
    head_dim = 32 // 4
    for name, tensor in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            # query head h reads key/value head h // 2
            state[name] = tensor.view(2, head_dim, 32).repeat_interleave(2, dim=0).reshape(4 * head_dim, 32)
    mha.load_state_dict(state)
    assert gqa.model.transformer.blocks[0].k_proj.weight.shape == (2 * head_dim, 32)
    ids = torch.randint(0, 60, (2, 9))
    assert_close_fp32(gqa(ids).logits, mha(ids).logits)


def test_tied_embeddings_share_one_matrix_and_save_without_a_head(tmp_path):
    model = tiny_model(weight_tying=True)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    ids = torch.randint(0, 60, (1, 7))
    hidden = model.model(ids).last_hidden_state
    torch.testing.assert_close(model(ids).logits, hidden @ model.model.transformer.wte.weight.T)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == official_parameter_names(2, tied=True)
    again = AutoModel.from_pretrained(tmp_path)
    assert again.get_output_embeddings().weight is again.get_input_embeddings().weight
    torch.testing.assert_close(again(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_no_causal_mask_every_position_sees_the_future():
    model = tiny_model()
    ids = torch.randint(0, 60, (1, 8))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 60
    # changing the last token changes the prediction at the first position
    assert not torch.allclose(model(ids).logits[0, 0], model(changed).logits[0, 0])


def test_padded_row_gives_the_logits_of_the_unpadded_row():
    model = tiny_model()
    ids = torch.randint(0, 60, (1, 10))
    padded = torch.cat([torch.full((1, 3), 61), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], dim=1)
    assert_close_fp32(model(padded, attention_mask=mask).logits[:, 3:], model(ids).logits)


def test_sdpa_and_eager_agree_with_padding():
    sdpa = tiny_model(n_kv_heads=2)
    eager = tiny_model(n_kv_heads=2)
    eager.config._attn_implementation = "eager"
    assert sdpa.config._attn_implementation == "sdpa"
    ids = torch.randint(0, 60, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    assert_close_fp32(sdpa(ids, attention_mask=mask).logits, eager(ids, attention_mask=mask).logits)


def test_eager_returns_attention_weights_that_ignore_padding():
    model = tiny_model()
    model.config._attn_implementation = "eager"
    ids = torch.randint(0, 60, (1, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    out = model(ids, attention_mask=mask, output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (1, 4, 6, 6)
    assert out.attentions[0][..., :2].abs().max() == 0
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(1, 4, 6))


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = tiny_model().train()
        if checkpointing:  # the newer transformers name, and the one of transformers 5.20 (deprecated since)
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        ids = torch.randint(0, 60, (2, 8), generator=torch.Generator().manual_seed(0))
        model(ids, labels=ids).loss.backward()
        return {n: p.grad for n, p in model.named_parameters()}

    plain, checkpointed = grads(False), grads(True)
    for name in plain:
        # the same operations run again: bit-identical here; 1e-6 allows a few roundings of another order
        assert_close_fp32(checkpointed[name], plain[name], rtol=1e-6)


def test_labels_give_unshifted_masked_cross_entropy():
    model = tiny_model()
    ids = torch.randint(0, 60, (2, 6))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5] = 7, 9
    out = model(ids, labels=labels)
    log_probs = out.logits.log_softmax(-1)
    expected = -(log_probs[0, 2, 7] + log_probs[1, 5, 9]) / 2
    torch.testing.assert_close(out.loss, expected)


def test_logits_to_keep_selects_positions_of_the_full_output():
    model = tiny_model()
    ids = torch.randint(0, 60, (2, 10))
    full = model(ids).logits
    torch.testing.assert_close(model(ids, logits_to_keep=3).logits, full[:, -3:])
    torch.testing.assert_close(model(ids, logits_to_keep=slice(2, 5)).logits, full[:, 2:5])
    keep = torch.zeros(2, 10, dtype=torch.bool)
    keep[0, 1], keep[1, 7], keep[1, 8] = True, True, True
    torch.testing.assert_close(model(ids, logits_to_keep=keep).logits, full[keep])


def test_hidden_states_are_the_block_inputs_then_the_final_norm_output():
    # the official implementation's and transformers' convention: n_layers + 1 states, the last one after ln_f
    model = tiny_model()
    ids = torch.randint(0, 60, (1, 5))
    out = model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == 3
    torch.testing.assert_close(out.hidden_states[0], model.model.transformer.wte(ids))
    block_0 = model.model.transformer.blocks[0]
    rotary = modeling.rotary_cos_sin(torch.arange(5)[None], 8, model.config.rope_theta)
    torch.testing.assert_close(out.hidden_states[1], block_0(out.hidden_states[0], rotary)[0])
    torch.testing.assert_close(out.hidden_states[-1], model.model(ids).last_hidden_state)
    torch.testing.assert_close(out.logits, model.get_output_embeddings()(out.hidden_states[-1]))


def test_return_dict_false_returns_the_set_fields_as_a_tuple():
    model = tiny_model()
    ids = torch.randint(0, 60, (2, 5))
    out = model(ids, labels=ids, output_hidden_states=True)
    loss, logits, hidden_states = model(ids, labels=ids, output_hidden_states=True, return_dict=False)
    torch.testing.assert_close(loss, out.loss)
    torch.testing.assert_close(logits, out.logits)
    assert len(hidden_states) == len(out.hidden_states)
    (last_hidden_state,) = model.model(ids, return_dict=False)
    torch.testing.assert_close(last_hidden_state, model.model(ids).last_hidden_state)
    model.config.return_dict = False
    assert isinstance(model(ids), tuple)


@pytest.mark.parametrize("model_class", ["LLaDAModel", "LLaDAModelLM"])
def test_unknown_forward_arguments_raise_and_are_named(model_class):
    model = getattr(modeling, model_class)(tiny_config()).eval()
    ids = torch.randint(0, 60, (1, 5))
    with pytest.raises(TypeError, match=rf"{model_class}.forward\(\) got unexpected keyword arguments \['attn_mask'\]"):
        model(ids, attn_mask=torch.ones_like(ids))
    with pytest.raises(TypeError, match=r"\['shift_labels'\].*unshifted"):
        model(ids, shift_labels=ids)


def test_num_items_in_batch_normalises_the_loss_as_the_trainer_expects():
    # gradient accumulation: the Trainer passes the count of predicted tokens over all accumulated batches
    model = tiny_model()
    ids = torch.randint(0, 60, (2, 6))
    labels = torch.full_like(ids, -100)
    labels[:, 2:5] = ids[:, 2:5]
    mean = model(ids, labels=labels).loss
    torch.testing.assert_close(model(ids, labels=labels, num_items_in_batch=torch.tensor(12)).loss, mean / 2)


def test_transformers_keyword_arguments_are_accepted_but_not_a_causal_mask():
    model = tiny_model()
    ids = torch.randint(0, 60, (2, 6))
    torch.testing.assert_close(model(ids, output_router_logits=False, is_causal=False).logits, model(ids).logits)
    with pytest.raises(ValueError, match="bidirectionally"):
        model(ids, is_causal=True)


def test_only_the_model_with_the_head_can_generate():
    assert LLaDAModelLM.can_generate()
    assert not modeling.LLaDAModel.can_generate()


def test_resize_token_embeddings_grows_embedding_head_and_config():
    model = tiny_model()
    model.resize_token_embeddings(72)
    assert model.get_input_embeddings().weight.shape == (72, 32)
    assert model.get_output_embeddings().weight.shape == (72, 32)
    assert (model.config.vocab_size, model.config.embedding_size) == (72, 72)
    assert model(torch.tensor([[70, 71, 3]])).logits.shape == (1, 3, 72)
    bare = modeling.LLaDAModel(tiny_config())
    bare.resize_token_embeddings(70, pad_to_multiple_of=8)
    assert (bare.config.vocab_size, bare.config.embedding_size) == (70, 72)
    assert bare(torch.tensor([[69, 3]])).last_hidden_state.shape == (1, 2, 32)


def test_dtype_argument_loads_bf16_weights(fixture_dir, official_model, reference):
    model = AutoModel.from_pretrained(fixture_dir, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.tensor(reference["logits"]["input_ids"])
    logits = model(ids).logits
    assert logits.dtype == torch.bfloat16
    # same predictions as fp32 at most positions (bf16 keeps ~3 significant digits)
    agree = (logits.float().argmax(-1) == official_model(ids).logits.argmax(-1)).float().mean()
    assert agree >= 0.9


def test_device_map_auto_loads(fixture_dir, reference):
    model = AutoModel.from_pretrained(fixture_dir, device_map="auto")
    ids = torch.tensor(reference["logits"]["input_ids"])
    assert_close_fp32(model(ids).logits, torch.tensor(reference["logits"]["logits"]))


# --- saving and loading -------------------------------------------------------------------------------------------


def test_save_and_reload_is_bit_exact(tmp_path):
    model = tiny_model(n_kv_heads=2)
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == modeling.AUTO_MAP
    assert config["model_type"] == "llada"
    for code_file in ("configuration_llada.py", "modeling_llada.py", "generation_llada.py", "likelihood_llada.py"):
        assert (tmp_path / code_file).exists()


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    # our package must not be importable here: only the copied code files can serve the model
    for name in ("modeling_llada", "trainers", "hub_cards"):
        sys.modules[name] = None
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM
    folder, ids_path, out_path = sys.argv[1:4]
    ids = torch.load(ids_path)
    models = [cls.from_pretrained(folder, trust_remote_code=True)
              for cls in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM)]
    assert all(type(m).__module__.startswith("transformers_modules") for m in models), [type(m) for m in models]
    assert type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__ == "LLaDAConfig"
    model = models[0].eval()
    with torch.no_grad():
        torch.save({"logits": model(ids).logits, "state": model.state_dict(),
                    "generated": model.generate(ids, max_new_tokens=8, steps=8, block_length=4),
                    "likelihood": model.log_likelihood(ids[0, :3], ids[0, 3:], mc_num=16).log_likelihood}, out_path)
    """
)


@pytest.mark.slow
def test_saved_folder_loads_with_trust_remote_code_without_our_package(tmp_path):
    model = tiny_model(n_kv_heads=2)
    model.save_pretrained(tmp_path / "ckpt")
    ids = torch.randint(0, 60, (2, 6))
    torch.save(ids, tmp_path / "ids.pt")
    script = tmp_path / "load_remote.py"
    script.write_text(REMOTE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ckpt"), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(remote["state"][name], tensor), name
    with torch.no_grad():
        assert torch.equal(remote["logits"], model(ids).logits)
        assert torch.equal(remote["generated"], model.generate(ids, max_new_tokens=8, steps=8, block_length=4))
    assert remote["likelihood"] == model.log_likelihood(ids[0, :3], ids[0, 3:], mc_num=16).log_likelihood


# --- torch.compile ------------------------------------------------------------------------------------------------


# transformers' mask functions call torch.compiler.is_exporting while compiling, which torch < 2.7 lacks
needs_compilable_transformers = pytest.mark.skipif(
    not hasattr(torch.compiler, "is_exporting"), reason="torch < 2.7: transformers' masks do not compile"
)


@pytest.fixture
def fresh_dynamo():
    """Compiled frames are cached per code object across models: start and end each compile test with none."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 60, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    return ids, mask


@needs_compilable_transformers
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
@torch.no_grad()
def test_fullgraph_compiled_forward_gives_the_eager_logits(fresh_dynamo, attn_implementation, padded):
    # fullgraph=True fails on any graph break (a host sync, a data-dependent branch); aot_eager traces the graph as
    # inductor would but skips code generation, which takes half a minute on a small CPU
    model = tiny_model(n_kv_heads=2)
    model.config._attn_implementation = attn_implementation
    ids, mask = padded_batch()
    mask = mask if padded else None
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert_close_fp32(compiled(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)


@needs_compilable_transformers
@pytest.mark.slow
@torch.no_grad()
def test_inductor_compiled_forward_gives_the_eager_logits(fresh_dynamo):
    model = tiny_model(n_kv_heads=2)
    ids, mask = padded_batch()
    compiled = torch.compile(model, fullgraph=True)
    # inductor fuses kernels and reorders sums: rounding only (measured 2e-7 of the largest logit)
    assert_close_fp32(compiled(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)


@needs_compilable_transformers
def test_compiled_forward_still_checks_shapes(fresh_dynamo):
    compiled = torch.compile(tiny_model(), backend="eager")
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 4\)"):
        compiled(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 4))


# --- bad inputs ------------------------------------------------------------------------------------------------


def test_token_ids_outside_the_vocabulary_raise():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 64\).*\[64\]"):
        model(torch.tensor([[1, 2, 64]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[-1, 2, 3]]))


def test_attention_mask_of_the_wrong_shape_raises():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 4\) but the inputs have shape \(1, 3\)"):
        model(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 4))


def test_attention_mask_row_without_tokens_raises():
    model = tiny_model()
    with pytest.raises(ValueError, match="no attended token"):
        model(torch.tensor([[1, 2, 3], [4, 5, 6]]), attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]]))


def test_one_dimensional_input_ids_raise_with_advice():
    with pytest.raises(ValueError, match="batch dimension"):
        tiny_model()(torch.tensor([1, 2, 3]))


def test_sequence_beyond_max_sequence_length_warns(monkeypatch):
    messages = []
    monkeypatch.setattr(modeling.logger, "warning_once", lambda message, *a, **k: messages.append(message))
    model = tiny_model(max_sequence_length=16)
    model(torch.randint(0, 60, (1, 16)))
    assert messages == []
    model(torch.randint(0, 60, (1, 17)))
    assert len(messages) == 1 and "exceeds max_sequence_length=16" in messages[0]


# --- what the three model files share (modeling_llada.py is its one home) ----------------------------------------


def family_model(family: str):
    """A tiny random model of each family (vocab 64: mask 60, eos/pad 61), built from its config."""
    from modeling_llada import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAMoEConfig, LLaDAMoEModelLM

    torch.manual_seed(0)
    ids = dict(vocab_size=64, mask_token_id=60, eos_token_id=61, pad_token_id=61, max_position_embeddings=128)
    if family == "dense":
        return tiny_model()
    if family == "moe":
        config = LLaDAMoEConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, dense_intermediate_size=64,
                                expert_intermediate_size=16, num_experts=4, num_experts_per_tok=2, moe_layer_freq=[0, 1],
                                partial_rotary_factor=0.5, bos_token_id=62, **ids)
        return LLaDAMoEModelLM(config).eval()
    config = LLaDA2MoeConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                             intermediate_size=64, moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2,
                             n_group=1, topk_group=1, **ids)
    return LLaDA2MoeModelLM(config).eval()


FAMILIES = ["dense", "moe", "llada2"]


def test_rotary_embeddings_rotate_pairs_of_the_leading_dimensions_by_position_times_frequency():
    x = torch.randn(1, 2, 3, 8, generator=torch.Generator().manual_seed(0))
    theta = 10000.0
    for rotary_dim in (8, 4):  # dense LLaDA rotates the whole head; LLaDA-MoE and LLaDA 2 can rotate a part
        cos, sin = modeling.rotary_cos_sin(torch.arange(3)[None], rotary_dim, theta)
        out = modeling.apply_rotary(x, cos, sin)
        half = rotary_dim // 2
        expected = x.clone()
        for p in range(3):  # NeoX pairs (i, i + half) turn by p * theta^(-2i / rotary_dim)
            for i in range(half):
                angle = torch.tensor(p * theta ** (-2 * i / rotary_dim))
                a, b = x[..., p, i], x[..., p, i + half]
                expected[..., p, i] = a * angle.cos() - b * angle.sin()
                expected[..., p, i + half] = b * angle.cos() + a * angle.sin()
        torch.testing.assert_close(out, expected)
        assert torch.equal(out[..., rotary_dim:], x[..., rotary_dim:])  # the rest passes through untouched


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_switches_its_attention_implementation_after_loading(family):
    # transformers allows it only for models whose file it judges to use the attention interface
    model = family_model(family)
    ids = torch.randint(0, 60, (2, 6), generator=torch.Generator().manual_seed(1))
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    eager = model(ids, output_attentions=True)
    assert eager.attentions[0].shape == (2, 4, 6, 6)  # only eager attention returns the weights
    model.set_attn_implementation("sdpa")
    assert model.config._attn_implementation == "sdpa"
    assert_close_fp32(model(ids).logits, eager.logits)  # another kernel, the same attention


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_takes_its_cache_as_past_key_values_with_one_warning(family):
    model = family_model(family)
    ids = torch.randint(0, 60, (1, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids, use_cache=True)
        assert full.past_key_values is full.cache
        cache, slice_at = full.cache, {}
        if family == "llada2":  # a transformers cache: drop the last 4 positions, then append them again
            cache.crop(-4)
        else:  # a LLaDA canvas cache: recompute the slice from position 4 inside the cached canvas
            slice_at = {"cache_position": 4}
        with pytest.warns(FutureWarning, match="`past_key_values` is deprecated for `forward`. Use `cache` instead."):
            part = model(ids[:, 4:], past_key_values=cache, **slice_at)
        assert_close_fp32(part.logits, full.logits[:, 4:])  # no mask: the 4 queries attend to all 8 positions
        with pytest.raises(ValueError, match="Pass the cache once"):
            model(ids[:, 4:], cache=cache, past_key_values=cache, **slice_at)


@pytest.mark.parametrize("family", ["dense", "moe"])
def test_canvas_models_refuse_a_cache_of_another_kind(family):
    from transformers import DynamicCache

    model = family_model(family)
    with pytest.raises(ValueError, match="must be the LLaDACache .*got DynamicCache"):
        model(torch.randint(0, 60, (1, 4)), cache=DynamicCache(), cache_position=4)

"""Merging and publishing a QLoRA adapter (issue #29, item 3).

The adapter is built through the library, as QLoRA training leaves it: the base loaded 4-bit (bitsandbytes nf4,
float32 compute), a PEFT LoRA on it with non-zero lora_B, saved. `publish(..., merge=True)` must fold it into the
full-precision base (never into 4-bit weights), and the merged folder must load and generate without bitsandbytes.

Independent truth: the unmerged full-precision model, base + adapter through PEFT (the dequantized view of what was
trained). Merging adds B A * scale to each weight instead of computing x A^T B^T * scale beside x W^T: the same
numbers up to float32 rounding, so logits agree within `assert_close_fp32` and greedy answers are identical.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hub_cards import BaseModelError, publish
from hub_cards.cards import quantization_summary, quantization_text, quantized_base_text
from hub_cards.publish import adapter_quantization
from tests.trainers.test_family_training import LLADA2_DIR, LLADA2_IDS, MOE_DIR, MOE_IDS, chat_tokenizer
from tests.utils import assert_close_fp32

# What training writes into the stage (`hub_cards.cards.training_record`'s "quantization", from the trained model).
NF4_NESTED = {"bits": 4, "method": "bitsandbytes", "quant_type": "nf4", "nested": True, "compute_dtype": "float32"}
# Greedy, one token per step, one block: deterministic on every member.
GREEDY = dict(max_new_tokens=8, steps=8, block_length=8, temperature=0.0)


def save_base(member: str, folder: Path) -> tuple[torch.Tensor, dict]:
    """A tiny full-precision (float32) checkpoint of `member` with its tokenizer; (prompts, special ids)."""
    from transformers import AutoModel

    if member == "llada":
        from tests.hub_cards.test_publishing import PROMPTS, saved_model

        saved_model(folder)
        return PROMPTS, dict(mask=60, eos=61, bos=62)
    source, ids = {"llada_moe": (MOE_DIR, MOE_IDS), "llada2": (LLADA2_DIR, LLADA2_IDS)}[member]
    AutoModel.from_pretrained(source, mask_token_id=ids["mask"], dtype=torch.float32).save_pretrained(folder)
    chat_tokenizer(ids).save_pretrained(folder)
    return torch.tensor([[140, 3, 9, 142, 141], [140, 12, 4, 142, 141]]), ids


def qlora_adapter(base: Path, output: Path, record_quantization: dict | None = NF4_NESTED, seed: int = 0,
                  nested: bool = True):
    """A LoRA adapter trained (here: lora_B set to random values) on `base` loaded 4-bit nf4, saved to `output`;
    with a training record whose stage carries `record_quantization` (None: no record)."""
    bnb = pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_use_double_quant=nested, bnb_4bit_compute_dtype=torch.float32)
    model = AutoModel.from_pretrained(base, quantization_config=quantization)
    assert any(isinstance(module, bnb.nn.Linear4bit) for module in model.modules())  # the base really is 4-bit
    adapter = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in adapter.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    adapter.save_pretrained(output)
    if record_quantization is not None:
        stage = {"kind": "LoRA SFT", "objective": "sft", "steps": 2, "lora": {"r": 4}, "quantization":
                 record_quantization}
        (output / "llada_training.json").write_text(json.dumps({"format": 2, "stages": [stage]}))
    return model


def unmerged(base: Path, adapter: Path):
    """The full-precision base + the adapter through PEFT, not merged: the reference."""
    from peft import PeftModel
    from transformers import AutoModel

    return PeftModel.from_pretrained(AutoModel.from_pretrained(base, dtype=torch.float32), adapter).eval()


_WITHOUT_BITSANDBYTES = textwrap.dedent("""
    import json, sys
    sys.modules["bitsandbytes"] = None  # `import bitsandbytes` fails from here on
    import torch
    from transformers import AutoModel
    import modeling_llada
    try:
        import bitsandbytes
        raise SystemExit("bitsandbytes imported")
    except ImportError:
        pass
    model = AutoModel.from_pretrained(sys.argv[1]).eval()
    prompts = torch.tensor(json.loads(sys.argv[2]))
    kinds = sorted({type(module).__module__.split(".")[0] for module in model.modules()})
    answer = model.generate(prompts, **json.loads(sys.argv[3]))
    print(json.dumps({"answer": answer.tolist(), "dtype": str(next(model.parameters()).dtype), "modules": kinds}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("member", ["llada", "llada_moe", "llada2"])
def test_qlora_adapter_merges_into_the_full_precision_base_and_loads_without_bitsandbytes(member, tmp_path):
    prompts, _ = save_base(member, tmp_path / "base")
    quantized = qlora_adapter(tmp_path / "base", tmp_path / "adapter")
    result = publish(tmp_path / "adapter", "org/merged", merge=True, dry_run=True, staging_dir=tmp_path / "staged")
    staged = tmp_path / "staged"
    config = json.loads((staged / "config.json").read_text())
    assert result.kind == "model" and "quantization_config" not in config
    assert not any((staged / name).exists() for name in ("adapter_config.json", "adapter_model.safetensors"))
    # the weights are full precision: float32, as the base was saved; no packed 4-bit tensors, no quant state
    from safetensors import safe_open

    with safe_open(str(staged / "model.safetensors"), "pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}
        assert not any("absmax" in name or "quant" in name for name in weights.keys())
    assert dtypes == {"F32"}, dtypes
    merge = json.loads((staged / "llada_training.json").read_text())["merge"]
    assert merge["merged_into"] == "merged into the full-precision base" and merge["base_dtype"] == "float32"
    assert merge["adapter_quantization"] == NF4_NESTED
    assert result.merge == merge
    assert "trained on a 4-bit (nf4, nested) quantized base" in result.card
    assert "merged into the full-precision base (float32), never into quantized weights" in result.card

    from transformers import AutoModel

    reference = unmerged(tmp_path / "base", tmp_path / "adapter")
    merged = AutoModel.from_pretrained(staged).eval()
    with torch.no_grad():
        expected_logits = reference(input_ids=prompts).logits
        assert_close_fp32(merged(input_ids=prompts).logits, expected_logits)
        # the adapter changes the model: the comparison above is not base against base
        with reference.disable_adapter():
            base_logits = reference(input_ids=prompts).logits
        assert (base_logits - expected_logits).abs().max() > 100 * 1e-5 * expected_logits.abs().max()
        expected = reference.generate(input_ids=prompts, **GREEDY)
    assert torch.equal(merged.generate(prompts, **GREEDY), expected)
    del quantized

    loaded = subprocess.run([sys.executable, "-c", _WITHOUT_BITSANDBYTES, str(staged), json.dumps(prompts.tolist()),
                             json.dumps(GREEDY)], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    answer = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert answer["dtype"] == "torch.float32" and "bitsandbytes" not in answer["modules"]
    assert answer["answer"] == expected.tolist()


def test_a_base_saved_quantized_is_refused_and_its_quantization_is_read_from_its_config(tmp_path, capsys):
    save_base("llada", tmp_path / "base")
    from transformers import AutoModel, BitsAndBytesConfig

    qlora_adapter(tmp_path / "base", tmp_path / "adapter", record_quantization=None, nested=False)
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.float32)
    # a base saved quantized: packed 4-bit weights
    AutoModel.from_pretrained(tmp_path / "base", quantization_config=quantization).save_pretrained(
        tmp_path / "base-4bit")
    assert "quantization_config" in json.loads((tmp_path / "base-4bit" / "config.json").read_text())
    adapter_config = tmp_path / "adapter" / "adapter_config.json"
    settings = json.loads(adapter_config.read_text())
    settings["base_model_name_or_path"] = str(tmp_path / "base-4bit")
    adapter_config.write_text(json.dumps(settings))
    # no training record: the quantization comes from the named base's config.json
    assert adapter_quantization(tmp_path / "adapter") == {"bits": 4, "quant_type": "nf4", "nested": False}
    with pytest.raises(BaseModelError, match=r"is saved quantized \(bitsandbytes.*pass base_model= with the "
                                             r"unquantized base"):
        publish(tmp_path / "adapter", "org/merged", merge=True, dry_run=True)
    from llada_cli.publish import main

    capsys.readouterr()
    assert main([str(tmp_path / "adapter"), "org/merged", "--merge", "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is saved quantized" in error and "pass --base-model with" in error
    # merged into the full-precision base given explicitly; what trained it is still stated
    assert main([str(tmp_path / "adapter"), "org/merged", "--merge", "--dry-run", "--base-model",
                 str(tmp_path / "base")]) == 0
    out = capsys.readouterr().out
    assert "merged into the full-precision base (float32); the adapter was trained on a 4-bit (nf4) quantized base" \
        in out
    assert "trained on a 4-bit (nf4) quantized base (QLoRA)" in out  # the card


def test_an_adapter_published_as_it_is_says_how_to_reproduce_its_training(tmp_path):
    save_base("llada", tmp_path / "base")
    qlora_adapter(tmp_path / "base", tmp_path / "adapter")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tmp_path / "base").save_pretrained(tmp_path / "adapter")
    result = publish(tmp_path / "adapter", "org/qlora", base_model="org/base", dry_run=True,
                     staging_dir=tmp_path / "staged")
    assert result.kind == "adapter" and result.merge is None
    assert "trained on a 4-bit (nf4, nested) quantized base (QLoRA, bitsandbytes)" in result.card
    assert "--load_in_4bit --bnb_4bit_quant_type nf4 --use_bnb_nested_quant" in result.card
    assert "loads on the base at any precision" in result.card
    assert result.card.index("quantized base (QLoRA") < result.card.index("### Sampler settings")
    # a LoRA trained on an unquantized base says nothing of quantization
    record = json.loads((tmp_path / "adapter" / "llada_training.json").read_text())
    record["stages"][-1]["quantization"] = None
    (tmp_path / "adapter" / "llada_training.json").write_text(json.dumps(record))
    plain = publish(tmp_path / "adapter", "org/lora", base_model="org/base", dry_run=True)
    assert "quantized" not in plain.card


def test_quantization_summary_reads_every_spelling():
    from transformers import BitsAndBytesConfig

    assert quantization_summary(BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")) == \
        {"bits": 4, "quant_type": "nf4", "nested": False}
    assert quantization_summary({"load_in_4bit": True, "use_bnb_nested_quant": True}) == \
        {"bits": 4, "quant_type": "fp4", "nested": True}  # TRL's ModelConfig fields; fp4 is bitsandbytes' default
    assert quantization_summary(BitsAndBytesConfig(load_in_8bit=True)) == {"bits": 8}
    assert quantization_summary({"load_in_4bit": False, "load_in_8bit": False}) is None
    assert quantization_summary(None) is None and quantization_summary("nf4") is None
    assert quantization_summary(NF4_NESTED) == NF4_NESTED  # a training record's form, as it is
    assert quantization_summary({"method": "gptq"}) == {"method": "gptq"}
    assert quantization_text({"method": "gptq"}) == "gptq-quantized"
    assert quantization_text({"bits": 8}) == "8-bit (LLM.int8)"
    assert quantized_base_text({"bits": 8}) == "an 8-bit (LLM.int8) quantized base"
    assert quantized_base_text({"method": "gptq"}) == "a gptq-quantized base"
    assert quantization_text({"bits": 4, "quant_type": "fp4", "nested": True}) == "4-bit (fp4, nested)"

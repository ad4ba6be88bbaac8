"""The flag walk of TRL's ModelConfig (issue #29, item 4): every field `llada-hf sft` accepts either reaches what it
governs (the loaded model, the BitsAndBytesConfig, the LoRA layers PEFT builds on the model the CLI wraps) or is
refused in one line naming it. The walk enumerates `dataclasses.fields(trl.ModelConfig)`: a field a new TRL adds
fails here until it is classified in CHECKS. Cheap in-process checks: parse, load a tiny saved model, wrap it."""

import dataclasses
import math

import pytest
import torch
from trl import ModelConfig

from llada_cli import loading, train
from llada_cli.main import main
from tests.test_qlora import checkpoints  # noqa: F401  (the module fixture: a saved tiny checkpoint per member)


@pytest.fixture(scope="module")
def parser():
    return train.build_sft_parser()


class Walk:
    def __init__(self, parser, folders, tmp_path, capsys):
        self.parser, self.folders, self.tmp_path, self.capsys = parser, folders, tmp_path, capsys

    def parse(self, *flags, member="llada"):
        argv = ["--model_name_or_path", str(self.folders[member]), "--output_dir", str(self.tmp_path / "o"), *flags]
        return train.parse_training_args("sft", self.parser, argv)

    def model(self, *flags, member="llada"):
        """The model as `llada-hf sft` hands it to the trainer, wrapped the way the trainer wraps it."""
        from trainers.peft_utils import maybe_wrap_with_peft

        script_args, training_args, model_args = self.parse(*flags, member=member)
        train.check_lora_flags(model_args, script_args)
        model, _ = train.load_model(model_args, script_args, training_args.trust_remote_code, training_args.seed)
        return maybe_wrap_with_peft(model, train.peft_config(model_args, script_args, model), training_args)

    def refused(self, *flags, says, member="llada"):
        self.capsys.readouterr()
        try:
            code = main(["sft", "--model_name_or_path", str(self.folders[member]), "--output_dir",
                         str(self.tmp_path / "r"), *flags])
        except SystemExit as exit:  # a usage error of the parser (argparse's choices)
            code = exit.code
        # (a refusal that needs the model comes after its loading progress bar)
        err = [line for line in self.capsys.readouterr().err.strip().splitlines()
               if not line.startswith("Loading weights")]
        assert code == 2 and len(err) == 1 and says in err[0], err


def lora_layers(model, suffix=None):
    return {name: module for name, module in model.named_modules() if hasattr(module, "lora_A")
            and "default" in module.lora_A and (suffix is None or name.endswith(suffix))}


def bnb():
    return pytest.importorskip("bitsandbytes")


# -- one check per ModelConfig field ----------------------------------------------------------------------------------

def check_model_name_or_path(walk):
    from transformers import AutoModel

    model = walk.model(member="llada_moe")
    saved = dict(AutoModel.from_pretrained(walk.folders["llada_moe"]).named_parameters())
    loaded = dict(model.named_parameters())
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[name], saved[name]) for name in saved)


def check_model_revision(walk, monkeypatch=None):
    walk.refused("--model_revision", "v1.0", says="--model_revision 'v1.0' selects a Hub branch, tag or commit, but "
                 "--model_name_or_path")
    # a Hub id (offline): the revision reaches the config download, the tokenizer and the weights
    folder, calls = walk.folders["llada"], {}
    real_model, real_tokenizer = loading.AutoModel, loading.AutoTokenizer

    def recorder(kind, real):
        class Recorded:
            @staticmethod
            def from_pretrained(name, **kwargs):
                calls[kind] = (name, dict(kwargs))
                kwargs.pop("revision", None)
                return real.from_pretrained(folder, **kwargs)
        return Recorded

    def download(name, filename, revision=None, **kwargs):
        calls["config.json"] = (name, {"revision": revision})
        return str(folder / filename)

    import huggingface_hub

    monkeypatch.setattr(loading, "check_model_source", lambda *args, **kwargs: None)
    monkeypatch.setattr(loading, "check_tokenizer_source", lambda *args, **kwargs: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(loading, "AutoModel", recorder("model", real_model))
    monkeypatch.setattr(loading, "AutoTokenizer", recorder("tokenizer", real_tokenizer))
    walk.folders = {"llada": "GSAI-ML/LLaDA-8B-Instruct"}
    walk.model("--model_revision", "v1.0", "--trust_remote_code", "true")
    assert {kind: (name, kwargs.get("revision")) for kind, (name, kwargs) in calls.items()} == {
        kind: ("GSAI-ML/LLaDA-8B-Instruct", "v1.0") for kind in ("config.json", "model", "tokenizer")}
    # (not a ModelConfig field in TRL 1.14-1.16: SFTConfig's trust_remote_code reaches both loaders)
    assert calls["model"][1]["trust_remote_code"] is True and calls["tokenizer"][1]["trust_remote_code"] is True


def check_dtype(walk):
    assert {p.dtype for p in walk.model("--dtype", "bfloat16").parameters()} == {torch.bfloat16}
    assert {p.dtype for p in walk.model().parameters()} == {torch.float32}  # TRL's default, float32
    bnb()
    quantized = walk.model("--dtype", "bfloat16", "--load_in_4bit", "--use_peft")
    layers = [m for m in quantized.modules() if isinstance(m, bnb().nn.Linear4bit)]
    assert layers and {layer.compute_dtype for layer in layers} == {torch.bfloat16}  # the 4-bit compute dtype


def check_attn_implementation(walk):
    for implementation in ("eager", "sdpa"):
        assert walk.model("--attn_implementation", implementation).config._attn_implementation == implementation


def check_use_peft(walk):
    from peft import PeftModel

    assert not isinstance(walk.model(), PeftModel)
    model = walk.model("--use_peft")
    assert isinstance(model, PeftModel) and lora_layers(model)
    assert all("lora_" in name for name, p in model.named_parameters() if p.requires_grad)
    walk.refused("--lora_r", "4", "--use_dora", says="--lora_r, --use_dora set(s) the LoRA adapters, but --use_peft "
                 "is off")


def check_lora_r(walk):
    layers = lora_layers(walk.model("--use_peft", "--lora_r", "3"))
    assert layers and {layer.lora_A["default"].weight.shape[0] for layer in layers.values()} == {3}


def check_lora_alpha(walk):  # PEFT's scale: alpha / r
    layers = lora_layers(walk.model("--use_peft", "--lora_r", "4", "--lora_alpha", "10"))
    assert {layer.scaling["default"] for layer in layers.values()} == {10 / 4}


def check_use_rslora(walk):  # rank-stabilised scale: alpha / sqrt(r)
    layers = lora_layers(walk.model("--use_peft", "--lora_r", "4", "--lora_alpha", "10", "--use_rslora", "true"))
    assert {layer.scaling["default"] for layer in layers.values()} == {10 / math.sqrt(4)}


def check_lora_dropout(walk):
    layers = lora_layers(walk.model("--use_peft", "--lora_dropout", "0.25"))
    assert {layer.lora_dropout["default"].p for layer in layers.values()} == {0.25}


def check_lora_target_modules(walk):
    layers = lora_layers(walk.model("--use_peft", "--lora_target_modules", "q_proj", "v_proj"))
    assert {name.rsplit(".", 1)[-1] for name in layers} == {"q_proj", "v_proj"}
    assert len(layers) == 2 * walk.model().config.n_layers


def check_lora_target_parameters(walk):
    if "lora_target_parameters" not in {field.name for field in dataclasses.fields(ModelConfig)}:
        pytest.skip("this TRL has no lora_target_parameters")
    model = walk.model("--use_peft", "--lora_dropout", "0", "--lora_target_parameters", "mlp.experts.down_proj",
                       member="llada_moe")
    assert model.peft_config["default"].target_parameters == ["mlp.experts.down_proj"]
    adapted = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if type(module).__name__ ==
               "ParamWrapper"}
    assert adapted == {"experts"} and all(module.parameter_name == "down_proj" for module in model.modules()
                                          if type(module).__name__ == "ParamWrapper")
    # with --lora_target_experts: both kept (not overwritten)
    both = walk.model("--use_peft", "--lora_dropout", "0", "--lora_target_parameters", "mlp.experts.down_proj",
                      "--lora_target_experts", member="llada_moe")
    assert sorted(both.peft_config["default"].target_parameters) == ["mlp.experts.down_proj",
                                                                     "mlp.experts.gate_up_proj"]
    walk.refused("--use_peft", "--lora_dropout", "0", "--lora_target_parameters", "mlp.experts.down_proj",
                 says="--lora_target_parameters ['mlp.experts.down_proj']: nothing in LLaDAModelLM has that name")
    walk.refused("--use_peft", "--lora_target_parameters", "mlp.experts.down_proj", member="llada_moe",
                 says="PEFT's LoRA on parameters has no dropout, and --lora_dropout is 0.05")
    walk.refused("--use_peft", "--lora_dropout", "0", "--use_dora", "--lora_target_parameters",
                 "mlp.experts.down_proj", member="llada_moe", says="--use_dora with --lora_target_parameters")
    walk.refused("--use_peft", "--lora_dropout", "0", "--use_dora", "--lora_target_experts", member="llada_moe",
                 says="--use_dora with --lora_target_experts")


def check_lora_modules_to_save(walk):
    model = walk.model("--use_peft", "--lora_modules_to_save", "wte")
    trainable = [name for name, p in model.named_parameters() if p.requires_grad and "lora_" not in name]
    assert trainable and all(".wte.modules_to_save.default." in name for name in trainable)
    walk.refused("--use_peft", "--lora_modules_to_save", "embed_tokens",
                 says="--lora_modules_to_save ['embed_tokens']: nothing in LLaDAModelLM has that name")


def check_lora_task_type(walk):
    from peft import PeftModelForCausalLM

    assert type(walk.model("--use_peft", "--lora_task_type", "CAUSAL_LM")) is PeftModelForCausalLM
    walk.refused("--use_peft", "--lora_task_type", "SEQ_CLS", says="--lora_task_type 'SEQ_CLS': LLaDA's adapters wrap")


def check_use_dora(walk):
    layers = lora_layers(walk.model("--use_peft", "--use_dora", "true"))
    assert layers and all("default" in layer.lora_magnitude_vector for layer in layers.values())
    bnb()  # DoRA over a 4-bit base: PEFT dequantizes for the magnitude; forward and backward work
    model = walk.model("--use_peft", "--use_dora", "true", "--load_in_4bit", "--lora_dropout", "0")
    layers = lora_layers(model)
    assert layers and all(isinstance(layer.base_layer, bnb().nn.Linear4bit) and "default" in
                          layer.lora_magnitude_vector for layer in layers.values())
    model(input_ids=torch.tensor([[5, 6, 7, 300]])).logits.sum().backward()
    assert all(layer.lora_magnitude_vector["default"].weight.grad is not None for layer in layers.values())


def _bnb_config(model):
    return model.base_model.model.config.quantization_config


def check_load_in_8bit(walk):
    bnb()
    model = walk.model("--use_peft", "--load_in_8bit")
    assert _bnb_config(model).load_in_8bit and any(isinstance(m, bnb().nn.Linear8bitLt) for m in model.modules())
    walk.refused("--load_in_8bit", says="--load_in_8bit freezes the base in 8 bits")


def check_load_in_4bit(walk):
    bnb()
    model = walk.model("--use_peft", "--load_in_4bit")
    layers = [m for m in model.modules() if isinstance(m, bnb().nn.Linear4bit)]
    assert _bnb_config(model).load_in_4bit and layers
    assert all(layer.weight.quant_state.quant_type == "nf4" for layer in layers)  # TRL's default type


def check_bnb_4bit_quant_type(walk):
    bnb()
    model = walk.model("--use_peft", "--load_in_4bit", "--bnb_4bit_quant_type", "fp4")
    assert {m.weight.quant_state.quant_type for m in model.modules() if isinstance(m, bnb().nn.Linear4bit)} == {"fp4"}
    walk.refused("--use_peft", "--load_in_4bit", "--bnb_4bit_quant_type", "int4", says="--bnb_4bit_quant_type")


def check_use_bnb_nested_quant(walk):
    bnb()
    for nested in (False, True):
        model = walk.model("--use_peft", "--load_in_4bit", "--use_bnb_nested_quant", str(nested).lower())
        assert {m.weight.quant_state.nested for m in model.modules() if isinstance(m, bnb().nn.Linear4bit)} == {nested}


def check_bnb_4bit_quant_storage(walk):
    bnb()
    model = walk.model("--use_peft", "--load_in_4bit", "--bnb_4bit_quant_storage", "float32")
    layers = [m for m in model.modules() if isinstance(m, bnb().nn.Linear4bit)]
    assert _bnb_config(model).bnb_4bit_quant_storage == torch.float32
    assert layers and {layer.weight.dtype for layer in layers} == {torch.float32}  # packed 4-bit values, stored so
    walk.refused("--bnb_4bit_quant_storage", "float32", says="--bnb_4bit_quant_storage set(s) how a 4-bit model")


CHECKS = {name: function for name, function in globals().items() if name.startswith("check_")}
CHECKS = {name[len("check_"):]: function for name, function in CHECKS.items()}


@pytest.mark.parametrize("field", [field.name for field in dataclasses.fields(ModelConfig)])
def test_model_config_field_takes_effect_or_is_refused(field, parser, checkpoints, tmp_path, capsys,  # noqa: F811
                                                       monkeypatch):
    assert field in CHECKS, (f"TRL's ModelConfig has a new field {field!r}: check that `llada-hf sft` honours or "
                             "refuses it, and add check_{field} here")
    walk = Walk(parser, checkpoints, tmp_path, capsys)
    if field == "model_revision":
        CHECKS[field](walk, monkeypatch)
    else:
        CHECKS[field](walk)

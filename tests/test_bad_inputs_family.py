"""Loading the family's checkpoints (issue #30): a folder whose files are broken is refused naming the file and the
field, never loaded with defaults in their place; as tests/test_bad_inputs.py, one table of bad folders, each row
(id, how to break the fixture, the exception type, a regex the message must match), then what must keep working.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

import modeling_llada  # noqa: F401  (registers the family with the Auto classes)

FIXTURES = Path(__file__).parent / "fixtures"
MEMBERS = {"dense": "llada-tiny-official", "moe": "lladamoe-tiny-official", "llada2": "llada2-tiny-official"}


def broken(tmp_path: Path, member: str, config: dict | None = None, files: dict | None = None) -> Path:
    """A copy of the member's fixture with `config` keys changed and `files` written (text)."""
    folder = tmp_path / member
    shutil.copytree(FIXTURES / MEMBERS[member], folder)
    if config:
        values = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**values, **config}))
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    return folder


TABLE = [
    # A generation_config.json that is there but unreadable is refused, not replaced by the defaults in silence.
    *[(f"generation config not JSON: {member}", member, {}, {"generation_config.json": "{oops"}, ValueError,
       r"The generation_config.json of .* cannot be read: .*not a valid JSON file")
      for member in MEMBERS],
    ("generation config empty file: dense", "dense", {}, {"generation_config.json": ""}, ValueError,
     r"generation_config.json of .* cannot be read"),
    # A generation_config.json with a bad value is refused naming the field (every member).
    *[(f"generation config steps 0: {member}", member, {}, {"generation_config.json": '{"steps": 0}'}, ValueError,
       r"generation_config.json of .* cannot drive LLaDA's generation: `steps` must be a positive integer, got 0")
      for member in MEMBERS],
    ("generation config typo: moe", "moe", {}, {"generation_config.json": '{"stepz": 4}'}, ValueError, r"stepz"),
    # Router settings out of range: the field and its value are named.
    ("moe experts per token > experts", "moe", {"num_experts_per_tok": 5}, {}, ValueError,
     r"`num_experts_per_tok` \(5\) cannot exceed `num_experts` \(4\)"),
    ("llada2 topk_group > n_group", "llada2", {"topk_group": 5}, {}, ValueError,
     r"`topk_group` \(5\) cannot exceed `n_group` \(4\)"),
    ("llada2 routed_scaling_factor nan", "llada2", {"routed_scaling_factor": float("nan")}, {}, ValueError,
     r"`routed_scaling_factor` must be a finite number > 0.*got nan"),
    # Special ids: outside the vocabulary, or the mask id shared with padding.
    ("dense mask id outside vocab", "dense", {"mask_token_id": 320}, {}, ValueError,
     r"`mask_token_id` must be an integer id in \[0, vocab_size=320\), got 320"),
    ("dense pad == mask", "dense", {"pad_token_id": 300}, {}, ValueError,
     r"`mask_token_id` \(300\) must differ from `pad_token_id` \(300\)"),
]


@pytest.mark.parametrize("name, member, config, files, error, message", TABLE, ids=[row[0] for row in TABLE])
def test_a_broken_checkpoint_folder_gets_a_clear_error(tmp_path, name, member, config, files, error, message):
    folder = broken(tmp_path, member, config, files)
    with pytest.raises(error, match=message):
        AutoModel.from_pretrained(folder)


# A member's class on another member's checkpoint: refused naming what the checkpoint is (before this, the wrong class
# filled the fields it did not know with its own defaults and failed later on an attribute).
WRONG_CLASS = [
    ("LLaDAModelLM", "moe", r"LLaDAModelLM builds dense LLaDA from a LLaDAConfig, got a LLaDAMoEConfig"),
    ("LLaDAModelLM", "llada2", r"config.json is model_type 'llada2_moe', which LLaDAConfig does not read"),
    ("LLaDAMoEModelLM", "dense", r"config.json is a dense LLaDA config, which LLaDAMoEConfig does not read"),
    ("LLaDAMoEModelLM", "llada2", r"model_type 'llada2_moe', which LLaDAMoEConfig does not read"),
    ("LLaDA2MoeModelLM", "dense", r"model_type 'llada', which LLaDA2MoeConfig does not read"),
    ("LLaDA2MoeModelLM", "moe", r"model_type 'llada', which LLaDA2MoeConfig does not read"),
]


@pytest.mark.parametrize("cls_name, member, message", WRONG_CLASS, ids=[f"{c}-{m}" for c, m, _ in WRONG_CLASS])
def test_a_members_class_refuses_another_members_checkpoint(cls_name, member, message):
    with pytest.raises(ValueError, match=message + r".*AutoModel.from_pretrained"):
        getattr(modeling_llada, cls_name).from_pretrained(FIXTURES / MEMBERS[member])


@pytest.mark.parametrize("cls_name, member", [("LLaDAModelLM", "dense"), ("LLaDAMoEModelLM", "moe"),
                                              ("LLaDA2MoeModelLM", "llada2")])
def test_each_class_loads_its_own_checkpoint_as_automodel_does(cls_name, member):
    model = getattr(modeling_llada, cls_name).from_pretrained(FIXTURES / MEMBERS[member]).eval()
    auto = AutoModel.from_pretrained(FIXTURES / MEMBERS[member]).eval()
    assert type(model) is type(auto)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, auto(ids).logits)


@pytest.mark.parametrize("member", MEMBERS)
def test_a_folder_without_generation_config_loads_with_the_defaults(tmp_path, member):
    folder = broken(tmp_path, member)
    (folder / "generation_config.json").unlink()
    model = AutoModel.from_pretrained(folder).eval()
    reference = AutoModel.from_pretrained(FIXTURES / MEMBERS[member]).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
    defaults = type(model.generation_config)()  # the member's own defaults
    assert model.generation_config.sampler_settings() == defaults.sampler_settings()

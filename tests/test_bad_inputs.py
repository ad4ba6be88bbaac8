"""One table of bad inputs across the package: each gets a clear error of the right type whose message names the
setting (or value) at fault, never a bare IndexError / KeyError / StopIteration or a silently wrong result.

Each row: (id, what to call, the exception type, a regex the message must match). The calls build what they need
from tiny models (tests/utils.py); the CLI rows run `llada-hf` in-process and check its one-line message.
"""

import math
import re

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from modeling_llada import LLaDAConfig, LLaDAGenerationConfig
from tests.utils import tiny_model

IDS = torch.tensor([[1, 2, 3, 4]])
_MODEL = None


def model():
    """One tiny model for the whole table (vocab 64: mask 60, eos/pad 61, bos 62; max_sequence_length 128)."""
    global _MODEL
    if _MODEL is None:
        _MODEL = tiny_model()
    return _MODEL


def generate(**kwargs):
    ids = kwargs.pop("input_ids", IDS)
    return model().generate(ids, **{"max_new_tokens": 8, **kwargs})


def forward(*args, **kwargs):
    return model()(*args, **kwargs)


def likelihood(prompt, answer, **kwargs):
    return model().log_likelihood(prompt, answer, **kwargs)


class BanEverything(LogitsProcessor):
    def __call__(self, input_ids, scores):
        return torch.full_like(scores, -math.inf)


def saved_folder(tmp_path, **extra_files):
    folder = tmp_path / "model"
    model().save_pretrained(folder)
    for name, content in extra_files.items():
        (folder / name).write_bytes(content) if isinstance(content, bytes) else (folder / name).write_text(content)
    return folder


def publish_dry_run(tmp_path, repo_id="org/name", **extra_files):
    from hub_cards import publish

    return publish(saved_folder(tmp_path, **extra_files), repo_id, dry_run=True)


# --- the table ---------------------------------------------------------------------------------------------------

CONFIG_CASES = [
    ("config: heads do not divide width", lambda: LLaDAConfig(d_model=100, n_heads=3), ValueError, "n_heads"),
    ("config: kv heads do not divide heads", lambda: LLaDAConfig(n_heads=32, n_kv_heads=5), ValueError, "n_kv_heads"),
    ("config: mask id outside vocab", lambda: LLaDAConfig(vocab_size=99, mask_token_id=99), ValueError,
     r"mask_token_id.*99"),
    ("config: mask id == eos", lambda: LLaDAConfig(mask_token_id=126081), ValueError, "eos_token_id"),
    ("config: mask id == bos", lambda: LLaDAConfig(mask_token_id=126080), ValueError, "bos_token_id"),
    ("config: mask id == pad", lambda: LLaDAConfig(mask_token_id=5, pad_token_id=5), ValueError, "pad_token_id"),
    ("config: rope_theta 0", lambda: LLaDAConfig(rope_theta=0.0), ValueError, "rope_theta"),
    ("config: rope_theta NaN", lambda: LLaDAConfig(rope_theta=float("nan")), ValueError, "rope_theta"),
    ("config: rms_norm_eps negative", lambda: LLaDAConfig(rms_norm_eps=-1e-5), ValueError, "rms_norm_eps"),
    ("config: dropout >= 1", lambda: LLaDAConfig(residual_dropout=1.0), ValueError, "residual_dropout"),
    ("config: unsupported activation", lambda: LLaDAConfig(activation_type="gelu"), ValueError, "activation_type"),
    ("config: embedding smaller than vocab", lambda: LLaDAConfig(embedding_size=1000), ValueError, "embedding_size"),
]

MODEL_CASES = [
    ("forward: float ids", lambda: forward(IDS.float()), ValueError, "integer token ids.*float32"),
    ("forward: ids outside vocab", lambda: forward(torch.tensor([[1, 64]])), ValueError, r"outside the vocabulary.*64"),
    ("forward: 1-D ids", lambda: forward(torch.tensor([1, 2, 3])), ValueError, r"\(batch, length\)"),
    ("forward: mask shape", lambda: forward(IDS, attention_mask=torch.ones(1, 5)), ValueError, "attention_mask"),
    ("forward: empty row", lambda: forward(IDS, attention_mask=torch.zeros(1, 4)), ValueError, "no attended token"),
    ("forward: unknown kwarg", lambda: forward(IDS, shift_labels=IDS), TypeError, "shift_labels"),
    ("forward: causal", lambda: forward(IDS, is_causal=True), ValueError, "is_causal"),
    ("forward: ids and embeds", lambda: forward(IDS, inputs_embeds=torch.zeros(1, 4, 32)), ValueError,
     "exactly one of `input_ids` or `inputs_embeds`"),
]

GENERATE_CASES = [
    ("generate: NaN temperature", lambda: generate(temperature=float("nan")), ValueError, "temperature.*nan"),
    ("generate: negative temperature", lambda: generate(temperature=-1.0), ValueError, "temperature"),
    ("generate: infinite cfg", lambda: generate(cfg_scale=float("inf")), ValueError, "cfg_scale.*inf"),
    ("generate: NaN cfg", lambda: generate(cfg_scale=float("nan")), ValueError, "cfg_scale.*nan"),
    ("generate: block does not divide", lambda: generate(max_new_tokens=8, block_length=3), ValueError,
     "block_length"),
    ("generate: steps vs blocks", lambda: generate(block_length=4, steps=3), ValueError, "steps"),
    ("generate: unknown remasking", lambda: generate(remasking="lowest"), ValueError, "remasking.*lowest"),
    ("generate: threshold > 1", lambda: generate(threshold=1.5), ValueError, "threshold"),
    ("generate: threshold with random", lambda: generate(threshold=0.9, remasking="random"), ValueError,
     "remasking"),
    ("generate: kv cache mode", lambda: generate(kv_cache="full"), ValueError, "kv_cache"),
    ("generate: beam search", lambda: generate(num_beams=4), ValueError, "num_beams=4"),
    ("generate: repetition penalty", lambda: generate(repetition_penalty=1.3), ValueError, "repetition_penalty"),
    ("generate: plain config asks for beams", lambda: generate(generation_config=GenerationConfig(num_beams=2)),
     ValueError, "num_beams=2"),
    ("generate: typo'd kwarg", lambda: generate(stepz=4), ValueError, "stepz"),
    ("generate: too long", lambda: generate(max_new_tokens=128), ValueError, "max_sequence_length"),
    ("generate: max_length below prompt", lambda: model().generate(IDS, max_length=3), ValueError, "max_length"),
    ("generate: right padding", lambda: generate(input_ids=torch.tensor([[1, 2, 61]]),
                                                 attention_mask=torch.tensor([[1, 1, 0]])), ValueError, "left"),
    ("generate: pad is the mask id", lambda: generate(input_ids=torch.tensor([[60, 2, 3]]),
                                                      attention_mask=torch.tensor([[0, 1, 1]])), ValueError,
     "mask token"),
    ("generate: ids outside vocab", lambda: generate(input_ids=torch.tensor([[1, 99]])), ValueError, "vocabulary"),
    ("generate: float ids", lambda: generate(input_ids=IDS.float()), ValueError, "integer ids"),
    ("generate: seeds per prompt", lambda: generate(temperature=1.0, seed=[1, 2]), ValueError, "seed"),
    ("generate: nothing left to propose", lambda: generate(logits_processor=LogitsProcessorList([BanEverything()])),
     ValueError, "masked.*logits processor"),
    ("generate: stopping criteria", lambda: generate(stopping_criteria=[lambda *a, **k: True]), ValueError,
     "stopping_criteria"),
    ("generation config: unknown field", lambda: LLaDAGenerationConfig(stepz=1), ValueError, "stepz"),
]

LIKELIHOOD_CASES = [
    ("likelihood: float ids", lambda: likelihood(torch.tensor([1.5, 2.0]), [3]), ValueError,
     "prompt_ids must hold integer token ids"),
    ("likelihood: float in a list", lambda: likelihood([1, 2], [3.7]), ValueError, "answer_ids.*3.7"),
    ("likelihood: id outside vocab", lambda: likelihood([1, 2], [64]), ValueError, r"\[64\].*vocabulary"),
    ("likelihood: too long", lambda: likelihood(list(range(50)) * 2, list(range(40))), ValueError,
     "max_sequence_length"),
    ("likelihood: empty answer", lambda: likelihood([1], []), ValueError, "at least one token"),
    ("likelihood: mask in prompt", lambda: likelihood([60, 1], [2]), ValueError, "mask token"),
    ("likelihood: mc_num 0", lambda: likelihood([1], [2, 3], mc_num=0), ValueError, "mc_num"),
]


def training_cases():
    from datasets import Dataset

    from tests.trainers.test_data_errors import pretraining_trainer, sft_trainer

    pairs = {"prompt": ["t1 t2 t3 t4 t5 t6", "t7 t8 t9 t10 t11"], "completion": [" t12", " t13"]}
    return [
        ("sft: empty dataset", lambda tmp: sft_trainer(tmp, Dataset.from_dict({"prompt": [], "completion": []})),
         ValueError, r"train dataset is empty \(0 rows\)"),
        ("sft: no usable column", lambda tmp: sft_trainer(tmp, Dataset.from_dict({"question": ["t1"]})), ValueError,
         r"columns \['question'\]"),
        ("sft: every prompt too long", lambda tmp: sft_trainer(tmp, Dataset.from_dict(pairs), max_length=4),
         ValueError, "max_length"),
        ("pretrain: empty dataset", lambda tmp: pretraining_trainer(tmp, Dataset.from_dict({"text": []})), ValueError,
         "empty"),
        ("pretrain: no text column", lambda tmp: pretraining_trainer(tmp, Dataset.from_dict({"body": ["t1 t2"]})),
         ValueError, "dataset_text_field"),
    ]


def publish_cases():
    from hub_cards import UnpublishableFolderError, publish

    return [
        ("publish: invalid repo id", lambda tmp: publish_dry_run(tmp, repo_id="no-namespace"), ValueError,
         "namespace/name"),
        ("publish: corrupt weights", lambda tmp: publish_dry_run(tmp, **{"extra.safetensors": b"not tensors"}),
         UnpublishableFolderError, "extra.safetensors"),
        ("publish: missing folder", lambda tmp: publish(tmp / "nope", "org/name", dry_run=True), ValueError, "nope"),
    ]


TABLE = CONFIG_CASES + MODEL_CASES + GENERATE_CASES + LIKELIHOOD_CASES


def test_the_table_covers_every_area_with_forty_cases_or_more():
    assert len(TABLE) + len(training_cases()) + len(publish_cases()) + len(CLI_CASES) >= 40


@pytest.mark.parametrize("name, call, error, message", TABLE, ids=[row[0] for row in TABLE])
def test_bad_input_gets_a_clear_error(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("index", range(5))
def test_bad_training_data_gets_a_clear_error_when_the_trainer_is_built(tmp_path, index):
    name, call, error, message = training_cases()[index]
    with pytest.raises(error, match=message):
        call(tmp_path)


@pytest.mark.parametrize("index", range(3))
def test_bad_publish_input_gets_a_clear_error(tmp_path, index):
    name, call, error, message = publish_cases()[index]
    with pytest.raises(error, match=message):
        call(tmp_path)


# CLI rows: argv, a regex of the one-line message. Run in-process through the dispatcher (`llada-hf ...`).
CLI_CASES = [
    (["generate", "/no/such/folder", "--prompt", "hi"], r"/no/such/folder.*no such folder"),
    (["sft", "--dataset_name", "/no/such/data.jsonl"], r"--dataset_name '/no/such/data.jsonl': no such file"),
    (["sft", "--config", "/no/such/config.yaml"], r"--config '/no/such/config.yaml': no such file"),
    (["publish", "/no/such/folder", "org/name", "--dry-run"], r"/no/such/folder"),
    (["publish", ".", "not a repo id", "--dry-run"], r"namespace/name"),
]


@pytest.mark.parametrize("argv, message", CLI_CASES, ids=[" ".join(a[:2]) for a, _ in CLI_CASES])
def test_bad_cli_input_prints_one_line_and_exits_non_zero(capsys, argv, message):
    from llada_cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        code = main(argv)
        raise SystemExit(code)
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert re.search(message, err), err

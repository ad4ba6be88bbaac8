"""Library `generate` across the family members: settings, ids, lengths, masks, processors, streamers."""

import math
from pathlib import Path

import torch

from bad_inputs.harness import Case

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
_MODELS = {}


def dense():
    if "dense" not in _MODELS:
        from tests.utils import tiny_model

        _MODELS["dense"] = tiny_model()
    return _MODELS["dense"]


def moe():
    """Official-format LLaDA-MoE (vocab 160, mask 150 not in its config, eos/pad 147, max_position_embeddings 512)."""
    if "moe" not in _MODELS:
        from transformers import AutoModel

        _MODELS["moe"] = AutoModel.from_pretrained(FIXTURES / "lladamoe-tiny-official").eval()
    return _MODELS["moe"]


def llada2():
    """Official-format LLaDA 2 (vocab 160, mask 155 not in its config, eos/pad 128, max_position_embeddings 512)."""
    if "llada2" not in _MODELS:
        from transformers import AutoModel

        _MODELS["llada2"] = AutoModel.from_pretrained(FIXTURES / "llada2-tiny-official").eval()
    return _MODELS["llada2"]


def tokenizer():
    if "tokenizer" not in _MODELS:
        from tests.utils import tiny_chat_tokenizer

        _MODELS["tokenizer"] = tiny_chat_tokenizer()
    return _MODELS["tokenizer"]


IDS = torch.tensor([[1, 2, 3, 4]])
S = dict(max_new_tokens=8, steps=8, logits_eos_inf=True)  # the tiny model would answer all EOS otherwise


def gen(**kwargs):
    ids = kwargs.pop("input_ids", IDS)
    return dense().generate(ids, **{**S, **kwargs})


def gen_moe(**kwargs):
    ids = kwargs.pop("input_ids", IDS)
    return moe().generate(ids, **{**S, "mask_token_id": 150, **kwargs})


def gen2(**kwargs):
    ids = kwargs.pop("input_ids", IDS)
    return llada2().generate(ids, **{"max_new_tokens": 8, "mask_token_id": 155, **kwargs})


def greedy():
    if "greedy" not in _MODELS:
        _MODELS["greedy"] = gen()
    return _MODELS["greedy"]


def same_as_greedy(out):
    return torch.equal(out, greedy())


def sampled(seeds=range(6), **kwargs):
    return {tuple(gen(temperature=1.5, seed=seed, **kwargs)[0].tolist()) for seed in seeds}


def long_prompt(length):
    return torch.arange(length)[None] % 100 + 1


def only_token(token):
    """A processor that leaves only `token` possible: the answer must then be all `token`."""

    def processor(input_ids, scores):
        out = torch.full_like(scores, -math.inf)
        out[..., token] = scores[..., token]
        return out

    return processor


class Collect:
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.clone())

    def end(self):
        self.ended = True


def streamed(batch):
    from transformers import TextStreamer

    return gen(input_ids=IDS.repeat(batch, 1), streamer=TextStreamer(tokenizer()))


def collect_stream():
    streamer = Collect()
    out = gen(streamer=streamer)
    return out, streamer


def padded_batch():
    ids = torch.tensor([[61, 61, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    return gen(input_ids=ids, attention_mask=mask)


def padded_batch_check(out):
    row0 = gen(input_ids=torch.tensor([[1, 2, 3, 4]]))
    row1 = gen(input_ids=torch.tensor([[5, 6, 7, 8, 9, 10]]))
    return torch.equal(out[0, 2:], row0[0]) and torch.equal(out[1], row1[0])


def one_token_loglik():
    """For a one-token answer the bound is exact: log softmax of the model at the masked position."""
    prompt, answer = [1, 2, 3], [7]
    est = dense().log_likelihood(prompt, answer, mc_num=1)
    with torch.no_grad():
        logits = dense()(torch.tensor([prompt + [60]])).logits[0, -1]
    truth = torch.log_softmax(logits.double(), -1)[7].item()
    return est.log_likelihood, truth


def pipeline_text(**kwargs):
    from transformers import pipeline

    pipe = pipeline("text-generation", model=dense(), tokenizer=tokenizer())
    return pipe("t1 t2 t3 t4", return_full_text=False, **kwargs)


def pipeline_check(result):
    expected = tokenizer().decode(gen(input_ids=tokenizer()("t1 t2 t3 t4", return_tensors="pt").input_ids)[0, 4:],
                                  skip_special_tokens=True)
    return bool(expected.strip()) and result[0]["generated_text"].strip() == expected.strip()


def cases() -> list[Case]:
    G = "generate"
    c = []
    add = c.append
    # --- the samples kept from before
    add(Case(G, "steps=0", lambda: dense().generate(IDS, max_new_tokens=8, steps=0), says=r"steps.*0"))
    add(Case(G, "temperature under do_sample=False", lambda: dense().generate(
        IDS, max_new_tokens=8, steps=8, temperature=1.5, do_sample=False), expect="warn", says=r"temperature"))
    add(Case(G, "int32 ids work", lambda: dense().generate(IDS.int(), max_new_tokens=8, steps=8),
             expect="ok", check=lambda out: torch.equal(out, dense().generate(IDS, max_new_tokens=8, steps=8))))
    # --- GenerationConfig fields: bad values and types
    for name, value, says in [
        ("steps", -1, r"steps.*-1"), ("steps", "8", r"steps.*'8'"), ("steps", 3.5, r"steps.*3\.5"),
        ("max_new_tokens", 0, r"max_new_tokens.*0"), ("max_new_tokens", -4, r"max_new_tokens.*-4"),
        ("max_new_tokens", "8", r"max_new_tokens.*'8'"),
        ("block_length", 3, r"block_length.*3"), ("block_length", 0, r"block_length.*0"),
        ("temperature", -1.0, r"temperature.*-1"), ("temperature", float("nan"), r"temperature.*nan"),
        ("temperature", float("inf"), r"temperature.*inf"), ("temperature", "hot", r"temperature.*hot"),
        ("top_k", 0, r"top_k.*0"), ("top_p", 1.5, r"top_p.*1\.5"), ("top_p", 0.0, r"top_p.*0"),
        ("cfg_scale", -1.0, r"cfg_scale.*-1"), ("cfg_scale", float("nan"), r"cfg_scale.*nan"),
        ("remasking", "low-confidence", r"remasking.*low-confidence"), ("remasking", None, r"remasking.*None"),
        ("threshold", 1.5, r"threshold.*1\.5"), ("threshold", -0.1, r"threshold.*-0\.1"),
        ("factor", 0.0, r"factor.*0"), ("kv_cache", "full", r"kv_cache.*full"), ("kv_cache", True, r"kv_cache.*True"),
        ("num_return_sequences", 0, r"num_return_sequences.*0"), ("seed", "abc", r"seed.*abc"),
        ("seed", 1.5, r"seed.*1\.5"), ("early_exit", "yes", r"early_exit.*yes"),
    ]:
        extra = {"temperature": 1.0} if name in ("top_k", "top_p") else {}
        add(Case(G, f"{name}={value!r}", lambda n=name, v=value, e=extra: gen(**{n: v, **e}), says=says,
                 error=(ValueError, TypeError)))
    add(Case(G, "steps not a multiple of blocks", lambda: gen(block_length=4, steps=5), says=r"steps.*5"))
    add(Case(G, "threshold with random remasking", lambda: gen(threshold=0.9, remasking="random"),
             says=r"threshold.*random|random.*threshold"))
    add(Case(G, "threshold and factor both", lambda: gen(threshold=0.9, factor=1.0), says=r"threshold.*factor"))
    add(Case(G, "seed list of wrong length", lambda: gen(temperature=1.0, seed=[1, 2]), says=r"seed.*2.*1|seed"))
    # transformers' left-to-right settings: refused, naming them
    for name, value in [("num_beams", 4), ("repetition_penalty", 1.2), ("output_scores", True),
                        ("min_new_tokens", 4), ("no_repeat_ngram_size", 2)]:
        add(Case(G, f"{name}={value}", lambda n=name, v=value: gen(**{n: v}), says=rf"{name}={value}"))
    add(Case(G, "typo kwarg stepz", lambda: gen(stepz=4), says=r"stepz"))
    add(Case(G, "config typo stepz", lambda: dense().generate(
        IDS, generation_config=__import__("transformers").GenerationConfig(stepz=4)), says=r"stepz"))
    add(Case(G, "llada2-only setting on dense", lambda: gen(editing_threshold=0.5), says=r"editing_threshold"))
    add(Case(G, "generation_config is a dict", lambda: gen(generation_config={"steps": 4}),
             error=(TypeError, ValueError), says=r"generation_config.*dict"))
    add(Case(G, "use_cache=False is neutral", lambda: gen(use_cache=False), expect="ok", check=same_as_greedy))
    add(Case(G, "kwargs override generation_config", lambda: dense().generate(
        IDS, generation_config=__import__("transformers").GenerationConfig(max_new_tokens=16, steps=16), **S),
        expect="ok", check=same_as_greedy))
    # --- sampling, seeds
    add(Case(G, "temperature + seeds sample", lambda: sampled(), expect="ok", check=lambda s: len(s) > 1))
    add(Case(G, "same seed, same sample", lambda: (gen(temperature=1.5, seed=7), gen(temperature=1.5, seed=7)),
             expect="ok", check=lambda pair: torch.equal(*pair)))
    add(Case(G, "do_sample=True at temperature 0 samples", lambda: sampled(do_sample=True, temperature=0.0)
             if False else {tuple(gen(do_sample=True, seed=s)[0].tolist()) for s in range(6)},
             expect="ok", check=lambda s: len(s) > 1))
    add(Case(G, "top_k=1 is greedy", lambda: gen(temperature=1.5, top_k=1, seed=3), expect="ok",
             check=same_as_greedy))
    add(Case(G, "top_p at temperature 0 warns", lambda: gen(top_p=0.5), expect="warn", says=r"top_p=0.5"))
    add(Case(G, "num_return_sequences=2 greedy copies", lambda: gen(num_return_sequences=2), expect="ok",
             check=lambda out: out.shape == (2, 12) and torch.equal(out[0], greedy()[0])
             and torch.equal(out[1], greedy()[0])))
    # --- ids and attention masks
    for dtype in (torch.int8, torch.int16, torch.bool, torch.float32):
        add(Case(G, f"ids dtype {dtype}", lambda d=dtype: gen(input_ids=IDS.to(d)), says=rf"input_ids.*{dtype}"))
    add(Case(G, "ids as a list", lambda: gen(input_ids=[[1, 2, 3, 4]]), error=(TypeError, ValueError),
             says=r"input_ids.*list"))
    add(Case(G, "ids 1-D is one prompt", lambda: gen(input_ids=torch.tensor([1, 2, 3, 4])), expect="ok",
             check=same_as_greedy))
    add(Case(G, "ids 3-D", lambda: gen(input_ids=IDS[None]), says=r"input_ids.*(3-D|shape|dim)"))
    add(Case(G, "id beyond vocab", lambda: gen(input_ids=torch.tensor([[1, 2, 64]])), says=r"input_ids.*64"))
    add(Case(G, "negative id", lambda: gen(input_ids=torch.tensor([[1, -2, 3]])), says=r"input_ids.*-2"))
    add(Case(G, "batch of 0 rows", lambda: gen(input_ids=torch.zeros(0, 4, dtype=torch.long)),
             says=r"input_ids.*(0|empty)"))
    add(Case(G, "empty prompt generates unconditionally", lambda: gen(input_ids=torch.zeros(1, 0, dtype=torch.long)),
             expect="ok", check=lambda out: out.shape == (1, 8) and not (out == 60).any()))
    add(Case(G, "attention_mask shape mismatch", lambda: gen(attention_mask=torch.ones(1, 3, dtype=torch.long)),
             says=r"attention_mask.*shape|attention_mask.*3"))
    add(Case(G, "all-padding row", lambda: gen(input_ids=torch.tensor([[1, 2], [61, 61]]),
                                                   attention_mask=torch.tensor([[1, 1], [0, 0]])),
             says=r"attention_mask.*row 1|row 1.*attention_mask"))
    add(Case(G, "attention_mask values 2", lambda: gen(attention_mask=torch.tensor([[1, 2, 1, 1]])),
             says=r"attention_mask.*2"))
    add(Case(G, "right padding", lambda: gen(input_ids=torch.tensor([[1, 2, 61, 61], [1, 2, 3, 4]]),
                                                 attention_mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])),
             says=r"right padding.*padding_side = 'left'"))
    add(Case(G, "left padding = each row alone", padded_batch, expect="ok", check=padded_batch_check))
    add(Case(G, "bool attention_mask = long mask", lambda: gen(attention_mask=torch.ones(1, 4, dtype=torch.bool)),
             expect="ok", check=same_as_greedy))
    # --- lengths
    add(Case(G, "too long: dense", lambda: gen(input_ids=long_prompt(124)), says=r"124.*8.*132.*128"))
    add(Case(G, "too long: moe", lambda: gen_moe(input_ids=long_prompt(508)), says=r"508.*8.*516.*512"))
    add(Case(G, "too long: llada2", lambda: gen2(input_ids=long_prompt(508)), says=r"508.*8.*516.*512"))
    add(Case(G, "max_length shorter than prompt", lambda: gen(max_new_tokens=None, steps=None, max_length=3),
             says=r"max_length.*3"))
    add(Case(G, "max_length alone sets the length", lambda: gen(max_new_tokens=None, steps=None, max_length=12),
             expect="ok", check=lambda out: out.shape == (1, 12) and torch.equal(out, greedy())))
    add(Case(G, "max_length and max_new_tokens disagree", lambda: gen(max_length=20), expect="warn",
             says=r"max_new_tokens.*max_length|max_length.*max_new_tokens"))
    # --- masks in prompts: every member fills them
    add(Case(G, "mask in prompt: dense", lambda: gen(input_ids=torch.tensor([[1, 60, 3, 4]])), expect="ok",
             check=lambda out: not (out == 60).any() and out[0, [0, 2, 3]].tolist() == [1, 3, 4]))
    add(Case(G, "mask in prompt: moe", lambda: gen_moe(input_ids=torch.tensor([[1, 150, 3, 4]])), expect="ok",
             check=lambda out: not (out == 150).any() and out[0, [0, 2, 3]].tolist() == [1, 3, 4]))
    add(Case(G, "mask in prompt: llada2", lambda: gen2(input_ids=torch.tensor([[1, 155, 3, 4]])), expect="ok",
             check=lambda out: not (out == 155).any() and out[0, [0, 2, 3]].tolist() == [1, 3, 4]))
    add(Case(G, "all-mask prompt: dense", lambda: gen(input_ids=torch.full((1, 4), 60)), expect="ok",
             check=lambda out: out.shape == (1, 12) and not (out == 60).any()))
    add(Case(G, "mask id outside vocab: llada2", lambda: gen2(mask_token_id=160), says=r"mask_token_id.*160"))
    add(Case(G, "mask id missing: moe", lambda: moe().generate(IDS, **S), says=r"mask_token_id"))
    add(Case(G, "mask id string: llada2", lambda: gen2(mask_token_id="155"), says=r"mask_token_id.*'155'"))
    # --- processors, stopping, stop strings, streamers
    add(Case(G, "logits processor forces a token", lambda: gen(logits_processor=[only_token(7)]), expect="ok",
             check=lambda out: out[0, 4:].tolist() == [7] * 8))
    add(Case(G, "logits processor not callable", lambda: gen(logits_processor=[5]), error=(TypeError, ValueError),
             says=r"logits_processor.*5|logits_processor.*int"))
    add(Case(G, "stopping_criteria", lambda: gen(stopping_criteria=[lambda ids, scores: True]),
             says=r"stopping_criteria"))
    add(Case(G, "stop_strings without tokenizer", lambda: gen(stop_strings=["t5"]), says=r"stop_strings.*tokenizer"))
    add(Case(G, "stop_strings empty string", lambda: gen(stop_strings=[""], tokenizer=tokenizer()),
             says=r"stop_strings.*''"))
    add(Case(G, "stop_strings not strings", lambda: gen(stop_strings=[5], tokenizer=tokenizer()),
             error=(TypeError, ValueError), says=r"stop_strings.*5"))
    add(Case(G, "TextStreamer with a batch", lambda: streamed(2), says=r"Stream.*single sequence.*batch of 2"))
    add(Case(G, "streamer with num_return_sequences", lambda: gen(num_return_sequences=2, streamer=Collect()),
             says=r"Stream.*batch of 2 \(num_return_sequences included\)"))
    add(Case(G, "streamer gets the answer and ends", collect_stream, expect="ok",
             check=lambda r: r[1].ended and torch.equal(r[0], greedy())
             and torch.equal(torch.cat([chunk.reshape(-1) for chunk in r[1].chunks]), greedy()[0])))
    # --- official aliases
    add(Case(G, "gen_length vs max_new_tokens", lambda: gen(gen_length=16), says=r"gen_length=16.*max_new_tokens=8"))
    add(Case(G, "mask_id vs mask_token_id", lambda: gen(mask_id=59, mask_token_id=60), says=r"mask_id=59"))
    add(Case(G, "eos_id vs eos_token_id", lambda: gen(eos_id=61, eos_token_id=62), says=r"eos_id=61"))
    add(Case(G, "eos_early_stop vs early_exit", lambda: gen(eos_early_stop=True, early_exit=False),
             says=r"eos_early_stop=True"))
    add(Case(G, "gen_length alone = max_new_tokens", lambda: dense().generate(IDS, gen_length=8, steps=8, logits_eos_inf=True),
             expect="ok", check=same_as_greedy))
    add(Case(G, "llada2 gen_length vs max_new_tokens", lambda: gen2(gen_length=16), says=r"gen_length=16"))
    # --- pipeline
    add(Case(G, "pipeline text-generation", lambda: pipeline_text(max_new_tokens=8, steps=8, logits_eos_inf=True), expect="ok",
             check=pipeline_check))
    add(Case(G, "pipeline num_beams", lambda: pipeline_text(max_new_tokens=8, steps=8, num_beams=2),
             says=r"num_beams=2"))
    add(Case(G, "pipeline steps typo", lambda: pipeline_text(max_new_tokens=8, stepz=8), says=r"stepz"))
    # --- likelihood
    add(Case(G, "log_likelihood one token is exact", one_token_loglik, expect="ok",
             check=lambda r: abs(r[0] - r[1]) < 1e-4))
    add(Case(G, "log_likelihood mc_num=0", lambda: dense().log_likelihood([1, 2], [3, 4], mc_num=0),
             says=r"mc_num.*0"))
    add(Case(G, "log_likelihood mc_num string", lambda: dense().log_likelihood([1, 2], [3, 4], mc_num="8"),
             error=(TypeError, ValueError), says=r"mc_num.*'8'"))
    add(Case(G, "log_likelihood cfg_scale nan", lambda: dense().log_likelihood([1, 2], [3], cfg_scale=float("nan")),
             says=r"cfg_scale.*nan"))
    add(Case(G, "log_likelihood empty answer", lambda: dense().log_likelihood([1, 2], []), says=r"answer_ids.*empty"))
    add(Case(G, "log_likelihood id beyond vocab", lambda: dense().log_likelihood([1, 2], [64]),
             says=r"answer_ids.*64|64.*vocab"))
    add(Case(G, "log_likelihood exact too long", lambda: dense().log_likelihood([1], list(range(1, 14)), exact=True),
             says=r"exact.*13|13.*12"))
    add(Case(G, "log_likelihood block_length=0", lambda: dense().log_likelihood([1, 2], [3], block_length=0),
             says=r"block_length.*0"))
    add(Case(G, "log_likelihood strings", lambda: dense().log_likelihood("hello", "world"),
             error=(TypeError, ValueError), says=r"prompt_ids.*str"))
    add(Case(G, "log_likelihood mask in answer", lambda: dense().log_likelihood([1, 2], [3, 60]),
             says=r"answer_ids.*60|mask"))
    # --- the other members: the same settings refused or honoured the same way
    # (the official 2.1 code runs with 1.01, edits nothing: accepted as the official call is, with a warning)
    add(Case(G, "llada2 editing_threshold 1.5", lambda: gen2(editing_threshold=1.5), expect="warn",
             says=r"editing_threshold=1\.5.*no token is ever edited"))
    add(Case(G, "llada2 editing_threshold -0.5", lambda: gen2(editing_threshold=-0.5),
             says=r"editing_threshold.*-0\.5"))
    add(Case(G, "llada2 max_post_steps -1", lambda: gen2(max_post_steps=-1), says=r"max_post_steps.*-1"))
    add(Case(G, "llada2 threshold string", lambda: gen2(threshold="high"), says=r"threshold.*'high'"))
    add(Case(G, "llada2 steps string", lambda: gen2(steps="4"), says=r"steps.*'4'"))
    add(Case(G, "llada2 stop_strings without tokenizer", lambda: gen2(stop_strings="t5"),
             says=r"stop_strings.*tokenizer"))
    add(Case(G, "llada2 all-padding row", lambda: gen2(input_ids=torch.tensor([[1, 2], [128, 128]]),
                                                       attention_mask=torch.tensor([[1, 1], [0, 0]])),
             says=r"attention_mask row 1"))
    add(Case(G, "llada2 temperature under do_sample=False", lambda: gen2(temperature=0.9, do_sample=False),
             expect="warn", says=r"do_sample.*temperature=0.9"))
    add(Case(G, "llada2 seeds sample", lambda: {tuple(gen2(temperature=1.5, seed=s)[0].tolist()) for s in range(6)},
             expect="ok", check=lambda s: len(s) > 1))
    add(Case(G, "llada2 num_return_sequences=2 greedy copies", lambda: (gen2(num_return_sequences=2), gen2()),
             expect="ok", check=lambda r: r[0].shape[0] == 2 and torch.equal(r[0][0], r[1][0])
             and torch.equal(r[0][1], r[1][0])))
    add(Case(G, "llada2 1-D ids = one prompt", lambda: (gen2(input_ids=IDS[0]), gen2()), expect="ok",
             check=lambda r: torch.equal(*r)))
    add(Case(G, "moe cfg_scale -1", lambda: gen_moe(cfg_scale=-1.0), says=r"cfg_scale.*-1"))
    add(Case(G, "moe id beyond vocab", lambda: gen_moe(input_ids=torch.tensor([[1, 160]])),
             says=r"input_ids hold id 160"))
    add(Case(G, "moe left padding = each row alone", lambda: (
        gen_moe(input_ids=torch.tensor([[147, 147, 1, 2], [5, 6, 7, 8]]),
                attention_mask=torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])),
        gen_moe(input_ids=torch.tensor([[1, 2]])), gen_moe(input_ids=torch.tensor([[5, 6, 7, 8]]))),
        expect="ok", check=lambda r: torch.equal(r[0][0, 2:], r[1][0]) and torch.equal(r[0][1], r[2][0])))
    add(Case(G, "moe likelihood without a mask id", lambda: moe().log_likelihood([1, 2], [3]),
             says=r"mask_token_id"))
    add(Case(G, "llada2 likelihood block_length 0", lambda: llada2().log_likelihood([1, 2], [3], block_length=0),
             says=r"block_length.*0"))
    return c

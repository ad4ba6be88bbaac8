"""An lm-evaluation-harness model for LLaDA, registered as `llada` (needs the `eval` extra: `pip install lm-eval`).

    import trainers.lm_eval_llada  # registers the model
    lm_eval.simple_evaluate(model="llada", model_args="pretrained=GSAI-ML/LLaDA-8B-Base,mc_num=128", tasks=[...])

- `loglikelihood`: the model's likelihood bound (`model.log_likelihood`, Monte-Carlo with `mc_num` samples, exact
  for one-token continuations; LLaDA 2: the block-diffusion bound, block by block), CFG through `cfg_scale`;
  `is_greedy` says whether every continuation token is the argmax when the whole continuation is masked (LLaDA 2: each
  block's continuation tokens masked, given the clean prompt and earlier blocks).
- `loglikelihood_rolling`: the unconditional bound of each document, in chunks of the model's max length.
- `generate_until`: diffusion `generate` with the model args as generation kwargs. Each answer ends at the first end
  token (every id of the model's `generation_config.eos_token_id`, the tokenizer's EOS, the chat template's
  end-of-turn token such as `<|eot_id|>`), is decoded without special tokens, and is cut at the earliest of its
  request's `until` strings. Requests are batched only with requests of the same generation kwargs.
- `peft=<adapter path or Hub id>` evaluates a LoRA adapter on its base, which the official evaluation cannot.
- Every family member (LLaDA, LLaDA-MoE, LLaDA 2: `pretrained=inclusionAI/LLaDA2.0-mini`) loads natively; when the
  checkpoint's config has no mask id (the official LLaDA-MoE / LLaDA 2 configs), the tokenizer's is used.
"""

import json
import math
import time

import torch

import modeling_llada  # noqa: F401  (registers LLaDA with the Auto classes)
from modeling_llada.answers_llada import decode_answers, end_token_ids, special_token_ids
from modeling_llada.mask_id import resolve_mask_token_id

from .compat import lm_eval_model_api, quiet_upstream_deprecations

LM, register_model = lm_eval_model_api()

# The generation config fields that `generate_until` sets for each request itself (the canvas from `max_gen_toks`, one
# answer per request, the output it reads, the `until` strings): every other field of the model's generation config
# class is a model arg.
PER_REQUEST_FIELDS = ("max_new_tokens", "max_length", "num_return_sequences", "return_dict_in_generate",
                      "output_history", "stop_strings")


def _parse(value):
    """lm-eval passes model args as strings; turn them into Python values."""
    if not isinstance(value, str):
        return value
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _stop_strings(until) -> list[str]:
    """lm-eval's `until`: None, one string or a list of strings."""
    if until is None:
        return []
    return [until] if isinstance(until, str) else [stop for stop in until if stop]


def _settings_key(settings) -> str:
    """Requests with equal generation kwargs share a key (and may share a batch)."""
    return json.dumps(settings or {}, sort_keys=True, default=str)


def check_eval_settings(batch_size=16, mc_num=128, names: dict | None = None) -> None:
    """`batch_size` (a positive count or "auto") and `mc_num` (a positive count) of [`LLaDAEvalModel`]; a
    `ValueError` naming the setting as the caller calls it (`names`, e.g. {"mc_num": "--mc_num"}) otherwise."""
    names = names or {}
    for name, value, auto in (("batch_size", batch_size, True), ("mc_num", mc_num, False)):
        parsed = _parse(value) if isinstance(value, str) else value
        if auto and parsed == "auto":
            continue
        if isinstance(parsed, bool) or not isinstance(parsed, int) or parsed < 1:
            accepted = 'a positive integer or "auto"' if auto else "a positive integer"
            raise ValueError(f"{names.get(name, name)} must be {accepted}, got {value!r}.")


@register_model("llada")
class LLaDAEvalModel(LM):
    """LLaDA for lm-evaluation-harness.

    Model args: `pretrained` (Hub id or folder), `peft` (adapter), `tokenizer`, `dtype` (default float32 on CPU,
    bfloat16 on CUDA), `device`, `batch_size` (rows per forward), `mc_num` (likelihood samples, 128), `cfg_scale`,
    `seed`, `max_new_tokens` (generation canvas; `max_gen_toks` of a task, rounded up to whole blocks, overrides it),
    and the fields of the model's generation config class (`steps`, `block_length`, `temperature`, `remasking`,
    `threshold`, `kv_cache`, `logits_eos_inf`, `early_exit`, `top_k`, `top_p`, ...; LLaDA 2 adds `editing_threshold`,
    ...) other than `PER_REQUEST_FIELDS`, which each request sets.
    """

    def __init__(self, pretrained: str, peft: str | None = None, tokenizer: str | None = None, dtype: str | None = None,
                 device: str | None = None, batch_size: int | str = 16, mc_num: int = 128, cfg_scale: float = 0.0,
                 seed: int = 0, max_new_tokens: int | None = None, trust_remote_code: bool = False, **generation):
        super().__init__()
        check_eval_settings(batch_size, mc_num)
        from transformers import AutoModel

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
        trust_remote_code = _parse(trust_remote_code)
        model = AutoModel.from_pretrained(pretrained, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
        if peft:
            from peft import PeftModel

            with quiet_upstream_deprecations():
                model = PeftModel.from_pretrained(model, peft)
        self.model = model.to(device).eval()
        self.llada = self.model.get_base_model() if peft else self.model
        from transformers import AutoTokenizer

        # adapters share the base's tokenizer; LLaDA pads with EOS
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or pretrained, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        resolve_mask_token_id(self.llada, self.tokenizer)  # the official LLaDA-MoE / LLaDA 2 configs store none
        self._device = torch.device(device)
        self.batch_size = int(_parse(batch_size)) if batch_size != "auto" else 16
        self.mc_num, self.cfg_scale, self.seed = int(_parse(mc_num)), float(_parse(cfg_scale)), int(_parse(seed))
        self.max_new_tokens = _parse(max_new_tokens)
        config_class = type(self.llada.generation_config)
        fields = sorted(set(getattr(config_class, "_diffusion_fields", ())) - set(PER_REQUEST_FIELDS))
        unknown = set(generation) - set(fields)
        if unknown:
            raise ValueError(f"Unknown model args {sorted(unknown)}; generation args are the fields of "
                             f"{config_class.__name__}: {fields}.")
        self.generation = {key: _parse(value) for key, value in generation.items()}
        self.forward_passes = 0  # counted over generate_until, for tokens/s and forward passes per token
        self.generated_tokens = 0
        self.generation_seconds = 0.0
        # an answer ends at the first of these: the model's EOS ids, the tokenizer's EOS, the chat end-of-turn token
        eos = getattr(getattr(self.llada, "generation_config", None), "eos_token_id", None)
        self.end_ids = end_token_ids(self.llada.config.eos_token_id if eos is None else eos, self.tokenizer)
        self._special_ids = special_token_ids(self.tokenizer)

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The tokenizer's chat template (lm-eval keys its request cache on it)."""
        template = self.tokenizer.chat_template
        return template if isinstance(template, str) else (json.dumps(template, sort_keys=True) if template else "")

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        if not self.tokenizer.chat_template:
            raise ValueError(f"tokenizer {self.tokenizer.name_or_path!r} has no chat template, which "
                             "apply_chat_template needs; evaluate without it or pass a tokenizer that has one.")
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    # -- likelihoods ---------------------------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        # the tokenizer's own special tokens (BOS or not), as TRL adds them to training data; a chat-templated
        # context already starts with the BOS text, and TRL then tokenizes without adding a second BOS
        ids = self.tokenizer(text)["input_ids"]
        bos, bos_text = self.tokenizer.bos_token_id, self.tokenizer.bos_token
        if bos is not None and bos_text and ids[:2] == [bos, bos] and text.startswith(bos_text):
            return ids[1:]
        return ids

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        whole = self._encode(context + continuation)
        context_ids = self._encode(context)
        split = len(context_ids)
        if whole[:split] != context_ids:  # the boundary merged: score the continuation's own tokens
            return context_ids, self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return context_ids, whole[split:]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = []
        for request in requests:
            context, continuation = request.args
            prompt, answer = self._encode_pair(context, continuation)
            pairs.append((prompt, answer))
        results = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            # with an adapter, `self.llada` is the base model with the LoRA layers injected: they are active
            estimates = self.llada.log_likelihood(chunk, mc_num=self.mc_num, batch_size=self.batch_size * 8,
                                                  cfg_scale=self.cfg_scale, seed=self.seed)
            results.extend((e.log_likelihood, g) for e, g in zip(estimates, self._is_greedy(chunk)))
        return results

    @torch.no_grad()
    def _is_greedy(self, pairs) -> list[bool]:
        """Whether each continuation is the argmax at every position when the whole continuation is masked."""
        if getattr(self.llada, "_likelihood_block_length", lambda: None)() is not None:  # LLaDA 2: block by block
            return self.llada._block_greedy(pairs)
        mask_id, pad = self.llada.config.mask_token_id, self.llada.config.pad_token_id or 0
        longest = max(len(p) + len(a) for p, a in pairs)
        ids = torch.full((len(pairs), longest), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        answer = torch.zeros_like(ids, dtype=torch.bool)
        for row, (prompt, continuation) in enumerate(pairs):  # per request, once, to build the padded batch
            ids[row, : len(prompt) + len(continuation)] = torch.tensor(prompt + continuation)
            attention[row, : len(prompt) + len(continuation)] = 1
            answer[row, len(prompt) : len(prompt) + len(continuation)] = True
        ids, attention, answer = ids.to(self.device), attention.to(self.device), answer.to(self.device)
        logits = self.llada(ids.masked_fill(answer, mask_id), attention_mask=attention, logits_to_keep=answer,
                            return_dict=True).logits
        hits = (logits.argmax(-1) == ids[answer]).long()
        rows = answer.nonzero()[:, 0]
        misses = torch.zeros(len(pairs), dtype=torch.long, device=self.device).index_add_(0, rows, 1 - hits)
        return (misses == 0).tolist()

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        prefix = self._encode("")  # what the tokenizer puts before any text (BOS or nothing)
        window = self.llada.config.max_sequence_length - len(prefix)
        documents = []
        for request in requests:
            ids = self.tokenizer(request.args[0], add_special_tokens=False)["input_ids"]
            documents.append([ids[i : i + window] for i in range(0, len(ids), window)] or [[]])
        flat = [(prefix, chunk) for chunks in documents for chunk in chunks if chunk]
        estimates = iter(self.llada.log_likelihood(flat, mc_num=self.mc_num, batch_size=self.batch_size * 8,
                                                   seed=self.seed)) if flat else iter(())
        return [sum(next(estimates).log_likelihood for chunk in chunks if chunk) for chunks in documents]

    # -- generation -------------------------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Generate for each request, then cut its answer at the first end token and at its own `until` strings.

        Requests are batched only with requests of the same generation kwargs (`until`, `max_gen_toks`, ...), longest
        prompt first; the answers come back in the order of `requests`. Generation kwargs other than `until` and
        `max_gen_toks` (`do_sample`, `temperature`, ...) are ignored: the model args set the sampler.
        """
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(_settings_key(request.args[1]), []).append(index)
        prompts = [self._encode(request.args[0]) for request in requests]
        outputs: list[str | None] = [None] * len(requests)
        for indices in groups.values():
            settings = requests[indices[0]].args[1] or {}
            until = _stop_strings(settings.get("until"))
            end_ids = self._end_ids(until)
            length = self._canvas_length(settings.get("max_gen_toks"))
            indices = sorted(indices, key=lambda i: -len(prompts[i]))  # stable: ties keep the request order
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                rows = self._generate([prompts[i] for i in chunk], length)
                for i, text in zip(chunk, decode_answers(self.tokenizer, rows, end_ids, until)):
                    outputs[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return outputs

    def _generate(self, prompts: list[list[int]], length: int) -> torch.Tensor:
        """The generated canvases (rows of `length` ids) of left-padded prompts."""
        longest = max(len(p) for p in prompts)
        pad = self.llada.config.pad_token_id or 0
        ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        kwargs = {**self.generation, "max_new_tokens": length, "return_dict_in_generate": True}
        if self.cfg_scale:
            kwargs["cfg_scale"] = self.cfg_scale
        torch.manual_seed(self.seed)
        started = time.perf_counter()
        out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        if ids.is_cuda:
            torch.cuda.synchronize()
        self.generation_seconds += time.perf_counter() - started
        self.forward_passes += int((length / out.tokens_per_forward).sum())
        self.generated_tokens += length * len(prompts)
        return out.sequences[:, longest:]

    def _end_ids(self, until: list[str]) -> list[int]:
        """The answer's end ids, plus the ids of stop strings that are special tokens (decoding skips those, so
        they are cut as ids)."""
        extra = [self._special_ids[stop] for stop in until if stop in self._special_ids]
        return list(dict.fromkeys([*self.end_ids, *extra]))

    def _canvas_length(self, max_gen_toks) -> int:
        length = int(max_gen_toks) if max_gen_toks else int(self.max_new_tokens or 128)
        block = self.generation.get("block_length") or length
        return int(math.ceil(length / block) * block)

"""The sampler settings the commands offer, without importing torch (`--help` answers at once): a copy of what the
model's generation config classes say, `LLaDAGenerationConfig` (modeling_llada/generation_llada.py) and
`LLaDA2GenerationConfig` (generation_llada2.py), which tests/test_cli_flags.py keeps equal to them. The values are
checked by those classes (`validate`), never here.

- `REMASKING_STRATEGIES`, `KV_CACHE_MODES`: the choices of `remasking` and `kv_cache` (LLaDA 2's sampler takes only
  `LLADA2_KV_CACHE_MODES`);
- `DEFAULTS`: the fields of `LLaDAGenerationConfig` that `generate`, `chat`, `eval` and `serve` offer as flags, with
  the class's defaults (None: resolved when generating; `max_new_tokens` then is `DEFAULT_MAX_NEW_TOKENS`);
- `LLADA2_DEFAULTS`: where `LLaDA2GenerationConfig` differs for those flags: its own defaults and its token-editing
  fields;
- `FIELDS`: every setting a command may pass to `generate`;
- `DTYPES`: the dtypes the commands load a model in (torch's names).
"""

REMASKING_STRATEGIES = ("low_confidence", "random", "margin", "entropy")
KV_CACHE_MODES = ("prefix", "dual")
LLADA2_KV_CACHE_MODES = ("prefix",)
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULTS = {
    "max_new_tokens": None,
    "steps": None,
    "block_length": None,
    "temperature": 0.0,
    "top_k": None,
    "top_p": None,
    "cfg_scale": 0.0,
    "remasking": "low_confidence",
    "threshold": None,
    "factor": None,
    "kv_cache": None,
    "logits_eos_inf": False,
    "confidence_eos_eot_inf": False,
    "early_exit": False,
    "do_sample": None,
    "seed": None,
}
# (LLaDA 2's other fields, `num_to_transfer` and `minimal_topk`, are no flags)
LLADA2_DEFAULTS = {"steps": 32, "block_length": 32, "threshold": 0.95, "kv_cache": "prefix", "editing_threshold": None,
                   "max_post_steps": 16}
FIELDS = (*DEFAULTS, *(name for name in LLADA2_DEFAULTS if name not in DEFAULTS))
DTYPES = ("float32", "bfloat16", "float16")

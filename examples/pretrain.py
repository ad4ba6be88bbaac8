"""Masked-diffusion pre-training of a LLaDA model.

    # fresh tiny model on the Python docs (no download), a minute or two on a CPU:
    python examples/pretrain.py --output_dir runs/pretrain
    # any LLaDA checkpoint and dataset, on several GPUs:
    accelerate launch examples/pretrain.py --model_name_or_path GSAI-ML/LLaDA-8B-Base \\
        --dataset_name allenai/c4 --dataset_config en --block_size 4096 --output_dir runs/c4 --bf16
    # or with a YAML file of the same flags: python examples/pretrain.py --config pretrain.yaml
"""

from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from trainers import MaskedDiffusionConfig, MaskedDiffusionTrainer
from trainers.local_data import python_docs_corpus
from trainers.loading import load_dataset_arg, load_model_and_tokenizer


@dataclass
class PretrainScriptArguments(ScriptArguments):
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id or local data files (json/csv/parquet/txt); default: the Python docs corpus."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer; default: the model's, or a new BPE for a fresh preset model."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code files shipped with the model."})


def main(script_args: PretrainScriptArguments, training_args: MaskedDiffusionConfig, model_args: ModelConfig):
    model_name = model_args.model_name_or_path or "llada-tiny"
    if script_args.dataset_name is None:
        dataset = python_docs_corpus()
    else:
        dataset = load_dataset_arg(script_args.dataset_name, script_args.dataset_config,
                                   script_args.dataset_train_split)
    model, tokenizer = load_model_and_tokenizer(
        model_name, script_args.tokenizer_name_or_path, lambda: dataset[training_args.dataset_text_field],
        model_args.dtype, model_args.attn_implementation, script_args.trust_remote_code, training_args.seed,
    )
    trainer = MaskedDiffusionTrainer(model, training_args, train_dataset=dataset, processing_class=tokenizer,
                                     peft_config=get_peft_config(model_args))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    parser = TrlParser((PretrainScriptArguments, MaskedDiffusionConfig, ModelConfig))
    # small CPU-friendly defaults; every one can be overridden on the command line or in --config
    parser.set_defaults(block_size=128, per_device_train_batch_size=16, max_steps=200, learning_rate=1e-3,
                        warmup_steps=20, logging_steps=20, save_steps=100, report_to="none")
    main(*parser.parse_args_and_config())

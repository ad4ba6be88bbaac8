"""Response-only masked-diffusion SFT of a LLaDA model, full or LoRA.

    # a fresh tiny model on a checkable addition task (no download):
    python examples/sft.py --output_dir runs/sft
    # LoRA on a pre-trained checkpoint (LLaDA's block projections by default):
    python examples/sft.py --model_name_or_path runs/pretrain --use_peft --lora_r 16 --output_dir runs/sft-lora
    # a chat dataset from the Hub (`messages` column; the response is the last assistant turn), on several GPUs:
    accelerate launch examples/sft.py --model_name_or_path GSAI-ML/LLaDA-8B-Instruct \\
        --dataset_name trl-lib/Capybara --bf16 --use_peft --output_dir runs/capybara
"""

from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from trainers import MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer
from trainers.local_data import addition_task, python_docs_corpus
from trainers.loading import load_dataset_arg, load_model_and_tokenizer


@dataclass
class SFTScriptArguments(ScriptArguments):
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id or local data files (json/jsonl/csv/parquet); default: a local addition task."},
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer; default: the model's."})


def main(script_args: SFTScriptArguments, training_args: MaskedDiffusionSFTConfig, model_args: ModelConfig):
    model_name = model_args.model_name_or_path or "llada-tiny"
    if script_args.dataset_name is None:
        dataset = addition_task(2000, seed=training_args.seed).remove_columns("answer")
    else:
        dataset = load_dataset_arg(script_args.dataset_name, script_args.dataset_config,
                                   script_args.dataset_train_split)
    model, tokenizer = load_model_and_tokenizer(
        model_name, script_args.tokenizer_name_or_path, lambda: python_docs_corpus()["text"],
        model_args.dtype, model_args.attn_implementation, training_args.trust_remote_code, training_args.seed,
    )
    trainer = MaskedDiffusionSFTTrainer(model, training_args, train_dataset=dataset, processing_class=tokenizer,
                                        peft_config=get_peft_config(model_args))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    parser = TrlParser((SFTScriptArguments, MaskedDiffusionSFTConfig, ModelConfig))
    parser.set_defaults(per_device_train_batch_size=16, max_steps=200, learning_rate=1e-3, warmup_steps=20,
                        logging_steps=20, save_steps=100, max_length=256, report_to="none")
    main(*parser.parse_args_and_config())

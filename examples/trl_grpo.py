"""OraPO with TRL on a Hugging Face dataset, in the style of open-r1's ``grpo.py``.

    accelerate launch examples/trl_grpo.py \\
        --model_name_or_path Qwen/Qwen2.5-VL-3B-Instruct \\
        --dataset_name DATASET --dataset_train_split train \\
        --output_dir runs/orapo-trl --per_device_train_batch_size 8 --num_generations 8 \\
        --max_completion_length 256 --learning_rate 1e-6 --bf16 true --use_vllm true

The dataset needs an ``image`` column (a chest X-ray) and a report column (``--report_column``,
default ``report``): the report is the DPO term's chosen sequence and FactS's reference. An
optional ``labels`` column (JSON text: observation -> 1 / 0 / -1 / null, the 14 CheXpert
observations) gives FactS gold facts instead of the labeler's reading of the report.
Every ``OraPOConfig`` field (TRL's ``GRPOConfig`` plus ``w_min``, ``w_max``, ``gamma``,
``zrr_alpha``, ``constant_w``, ``dpo_beta``, ``dpo_negatives``, ...) is a command-line flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import load_dataset
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from orapo.integrations.trl import OraPOConfig, OraPOTrainer
from orapo.integrations.trl_run import dataset_reward
from orapo.model.prompt import load_prompt
from orapo.rewards import make_reward


@dataclass
class OraPOScriptArguments(ScriptArguments):
    report_column: str = field(default="report", metadata={"help": "Ground-truth report column."})
    reward: str = field(default="facts", metadata={"help": "orapo reward: facts, bleu, rouge_l."})


def main(script_args: OraPOScriptArguments, training_args: OraPOConfig, model_args: ModelConfig):
    # Model and processor
    model = AutoModelForImageTextToText.from_pretrained(
        model_args.model_name_or_path, dtype=model_args.dtype or "auto"
    )
    processor = AutoProcessor.from_pretrained(model_args.model_name_or_path)

    # Dataset: orapo's report prompt as a conversation (TRL inserts the image before the text)
    prompt = load_prompt()
    dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config)

    def to_conversation(row):
        return {
            "prompt": [{"role": "user", "content": prompt.instruction}],
            "reference": row[script_args.report_column],
        }

    dataset = dataset.map(to_conversation)
    training_args.chosen_column = "reference"  # DPO's chosen = the ground-truth report
    training_args.remove_unused_columns = False

    # Train: TRL's GRPO, plus the DPO term mixed in by the Zero-Reward Rate
    trainer = OraPOTrainer(
        model=model,
        reward_funcs=[dataset_reward(make_reward(script_args.reward))],
        args=training_args,
        train_dataset=dataset[script_args.dataset_train_split],
        processing_class=processor,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    parser = TrlParser((OraPOScriptArguments, OraPOConfig, ModelConfig))
    main(*parser.parse_args_and_config())

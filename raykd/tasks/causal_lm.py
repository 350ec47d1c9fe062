"""Causal LM: prompt -> completion, completion-only loss, greedy generation; exact match and BLEU."""

from __future__ import annotations

import torch

from raykd.lazy import lazy_module
from raykd.tasks.base import eval_mode, model_device
from raykd.tasks.data import column
from raykd.tasks.registry import TASKS
from raykd.tasks.text_pairs import TextPairTask

datasets = lazy_module("datasets")


@TASKS.register("causal_lm")
class CausalLM(TextPairTask):
    """Decoder-only models. input_ids = prompt + completion + eos; labels are -100 on the prompt,
    so CE and token-level KD count completion tokens only. Evaluation generates greedily from the
    (left-padded) prompt and compares the stripped completion.
    """

    name = "causal_lm"
    metrics = ("exact_match", "sacrebleu")
    default_metric = "exact_match"
    auto_model = "AutoModelForCausalLM"

    def tokenize(self, splits: datasets.DatasetDict, tokenizer) -> datasets.DatasetDict:
        config = self.config
        if tokenizer.eos_token_id is None:
            raise ValueError("causal_lm needs a tokenizer with an eos token")

        def encode(batch):
            prompts = tokenizer(
                batch["source"], add_special_tokens=False, truncation=True, max_length=config.max_source_length
            )["input_ids"]
            completions = tokenizer(
                [" " + t for t in batch["target"]],
                add_special_tokens=False,
                truncation=True,
                max_length=config.max_target_length - 1,
            )["input_ids"]
            out = {"input_ids": [], "attention_mask": [], "labels": [], "prompt_ids": [], "reference": batch["target"]}
            for prompt, completion in zip(prompts, completions):
                completion = completion + [tokenizer.eos_token_id]
                out["input_ids"].append(prompt + completion)
                out["attention_mask"].append([1] * (len(prompt) + len(completion)))
                out["labels"].append([-100] * len(prompt) + completion)
                out["prompt_ids"].append(prompt)
            return out

        return splits.map(encode, batched=True, remove_columns=splits["train"].column_names)

    @torch.no_grad()
    def generate(self, model, tokenizer, dataset: datasets.Dataset, *, device=None) -> list[str]:
        device = model_device(model, device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        outputs: list[str] = []
        prompts = column(dataset, "prompt_ids")
        size = self.config.eval_batch_size
        with eval_mode(model):
            for start in range(0, len(prompts), size):
                chunk = prompts[start : start + size]
                width = max(len(p) for p in chunk)
                ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
                generated = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=self.config.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=pad,
                    eos_token_id=tokenizer.eos_token_id,
                )
                new_tokens = generated[:, width:]  # left padding: every prompt ends at `width`
                outputs.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return outputs

    def input_length_limit(self) -> int:
        return self.config.max_source_length + self.config.max_target_length

    def sources(self, dataset: datasets.Dataset, tokenizer) -> list[str]:
        return [t.strip() for t in tokenizer.batch_decode(column(dataset, "prompt_ids"), skip_special_tokens=True)]

    def evaluate(self, model, tokenizer, dataset: datasets.Dataset, *, device=None) -> dict[str, float]:
        return self.scores(self.generate(model, tokenizer, dataset, device=device), column(dataset, "reference"))

    def scores(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        references = [r.strip() for r in references]
        return {
            "exact_match": self.compute("exact_match", predictions=predictions, references=references)["exact_match"],
            "sacrebleu": self.compute("sacrebleu", predictions=predictions, references=[[r] for r in references])[
                "score"
            ],
        }

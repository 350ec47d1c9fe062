"""Sequence to sequence: translation, data-to-text, summarisation; beam search; sacreBLEU, chrF and ROUGE."""

from __future__ import annotations

import math

import torch

from raykd.lazy import lazy_module
from raykd.tasks.base import eval_mode, model_device
from raykd.tasks.data import column
from raykd.tasks.registry import TASKS
from raykd.tasks.text_pairs import TextPairTask

datasets = lazy_module("datasets")

# ROUGE F-measures the task reports, as fractions (0..1, like the hub's "rouge"; analysis scales them by
# 100 to points). rougeLsum is left out: it needs one sentence per line, and generated outputs are one line.
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@TASKS.register("seq2seq")
class Seq2Seq(TextPairTask):
    """Encoder-decoder models; labels are the target token ids (pads -100 after collation).

    task.prefix is prepended to every source (T5's ``"translate English to Romanian: "``).
    """

    name = "seq2seq"
    metrics = ("sacrebleu", "chrf", *ROUGE_TYPES)
    default_metric = "sacrebleu"
    auto_model = "AutoModelForSeq2SeqLM"

    def tokenize(self, splits: datasets.DatasetDict, tokenizer) -> datasets.DatasetDict:
        config = self.config

        def encode(batch):
            encoded = tokenizer(
                [config.prefix + s for s in batch["source"]], truncation=True, max_length=config.max_source_length
            )
            encoded["labels"] = tokenizer(
                text_target=batch["target"], truncation=True, max_length=config.max_target_length
            )["input_ids"]
            encoded["reference"] = batch["target"]
            return encoded

        return splits.map(encode, batched=True, remove_columns=splits["train"].column_names)

    @torch.no_grad()
    def generate(self, model, tokenizer, dataset: datasets.Dataset, *, device=None) -> list[str]:
        device = model_device(model, device)
        outputs: list[str] = []
        with eval_mode(model):
            for batch in self.dataloader(dataset, tokenizer, batch_size=self.config.eval_batch_size):
                generated = model.generate(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    num_beams=self.config.num_beams,
                    max_new_tokens=self.config.max_new_tokens,
                    do_sample=False,
                )
                outputs.extend(t.strip() for t in tokenizer.batch_decode(generated, skip_special_tokens=True))
        return outputs

    def evaluate(self, model, tokenizer, dataset: datasets.Dataset, *, device=None) -> dict[str, float]:
        return self.scores(self.generate(model, tokenizer, dataset, device=device), column(dataset, "reference"))

    def scores(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        references = [[r] for r in references]
        # Per-example F-measures averaged here: the same exact mean whether `evaluate` loaded the hub
        # module or raykd's (the hub's own aggregate is a bootstrap median drawn from numpy's global RNG).
        rouge = self.compute(
            "rouge", predictions=predictions, references=references, rouge_types=list(ROUGE_TYPES), use_aggregator=False
        )
        return {
            "sacrebleu": self.compute("sacrebleu", predictions=predictions, references=references)["score"],
            "chrf": self.compute("chrf", predictions=predictions, references=references)["score"],
            **{t: math.fsum(rouge[t]) / len(rouge[t]) if rouge[t] else 0.0 for t in ROUGE_TYPES},
        }

"""Sequence to sequence: translation, data-to-text, summarisation; beam search; sacreBLEU and chrF."""

from __future__ import annotations

import torch

from raykd.lazy import lazy_module

from raykd.tasks import TASKS
from raykd.tasks.base import eval_mode, model_device
from raykd.tasks.text_pairs import TextPairTask

datasets = lazy_module("datasets")


@TASKS.register("seq2seq")
class Seq2Seq(TextPairTask):
    """Encoder-decoder models; labels are the target token ids (pads -100 after collation).

    task.prefix is prepended to every source (T5's ``"translate English to Romanian: "``).
    """

    name = "seq2seq"
    metrics = ("sacrebleu", "chrf")
    default_metric = "sacrebleu"
    auto_model = "AutoModelForSeq2SeqLM"

    def tokenize(self, splits: datasets.DatasetDict, tokenizer) -> datasets.DatasetDict:
        config = self.config

        def encode(batch):
            encoded = tokenizer([config.prefix + s for s in batch["source"]], truncation=True,
                                max_length=config.max_source_length)
            encoded["labels"] = tokenizer(text_target=batch["target"], truncation=True,
                                          max_length=config.max_target_length)["input_ids"]
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
        return self.scores(self.generate(model, tokenizer, dataset, device=device), dataset["reference"])

    def scores(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        references = [[r] for r in references]
        return {
            "sacrebleu": self.compute("sacrebleu", predictions=predictions, references=references)["score"],
            "chrf": self.compute("chrf", predictions=predictions, references=references)["score"],
        }

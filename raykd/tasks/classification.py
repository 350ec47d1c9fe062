"""Sequence classification, single sentences or pairs (GLUE style), metrics accuracy and F1."""

from __future__ import annotations

import torch

from raykd.corpora import BUILTIN_DATASETS
from raykd.lazy import lazy_module
from raykd.tasks.base import Task, eval_mode, model_device
from raykd.tasks.data import DataError, column, describe
from raykd.tasks.registry import TASKS

datasets = lazy_module("datasets")

# Column pairs tried in order when task.data.columns does not name them (GLUE conventions).
TEXT_COLUMNS = [
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("question", "sentence"),
    ("sentence1", "sentence2"),
    ("sentence", None),
    ("text", None),
]


@TASKS.register("classification")
class Classification(Task):
    """Columns after `load`: ``text``, ``text_pair`` (pairs only), ``label`` (int id).

    Label names: ``task.label_names``, else the built-in dataset's, else the dataset's ClassLabel
    names, else the sorted string labels of train (recorded in ``task.info``).
    """

    name = "classification"
    metrics = ("accuracy", "f1_macro", "f1")
    default_metric = "accuracy"
    auto_model = "AutoModelForSequenceClassification"
    sequence_level_logits = True

    def stratify_column(self) -> str | None:
        return self.config.data.columns.get("label", "label")

    def load(self) -> datasets.DatasetDict:
        splits = super().load()
        if self.metric == "f1" and len(self.label_names) != 2:
            raise DataError(
                f"task.metric 'f1' is the positive-class F1 of a 2-label task; {describe(self.config.data)} "
                f"has {len(self.label_names)} labels {self.label_names}: use 'f1_macro' or 'accuracy'"
            )
        self.info.update(label_names=self.label_names, columns=self.columns)
        return splits

    def restore(self, info: dict) -> None:
        super().restore(info)
        self.label_names, self.columns = list(info["label_names"]), dict(info["columns"])

    def standardise(self, splits: datasets.DatasetDict, split: str) -> datasets.Dataset:
        if split == "train":
            self.columns = self._resolve_columns(splits["train"])
            self.label_names = self._resolve_label_names(splits["train"])
        dataset = splits[split]
        self.require_columns(dataset, split, self.columns)
        index = {name: i for i, name in enumerate(self.label_names)}
        label_column = self.columns["label"]
        values = column(dataset, label_column)
        if values and isinstance(values[0], str):
            unknown = sorted({v for v in values if v not in index})
            ids = [index.get(v, -1) for v in values]
        else:
            unknown = sorted({v for v in values if v is None or not 0 <= v < len(index)}, key=str)
            ids = values
        if unknown:
            raise DataError(
                f"{describe(self.config.data)} split {split!r} column {label_column!r} has labels {unknown[:10]} "
                f"outside the label set {self.label_names}"
                + (
                    " (GLUE test splits hide their labels: evaluate on a validation split instead)"
                    if -1 in unknown
                    else ""
                )
            )
        texts = {"text": column(dataset, self.columns["text"])}
        if "text_pair" in self.columns:
            texts["text_pair"] = column(dataset, self.columns["text_pair"])
        for role, values_of_role in texts.items():
            empty = sum(1 for t in values_of_role if not isinstance(t, str) or not t.strip())
            if empty:
                raise DataError(
                    f"{describe(self.config.data)} split {split!r} column {self.columns[role]!r} "
                    f"has {empty} empty or missing texts"
                )
        return datasets.Dataset.from_dict({**texts, "label": ids})

    def _resolve_columns(self, train: datasets.Dataset) -> dict[str, str]:
        mapping = dict(self.config.data.columns)
        if "text" not in mapping:
            for first, second in TEXT_COLUMNS:
                if first in train.column_names and (second is None or second in train.column_names):
                    mapping["text"] = first
                    if second is not None:
                        mapping.setdefault("text_pair", second)
                    break
            else:
                raise DataError(
                    f"{describe(self.config.data)} split 'train': no text column found among "
                    f"{train.column_names}; name it with task.data.columns.text"
                )
        mapping.setdefault("label", "label")
        unknown = set(mapping) - {"text", "text_pair", "label"}
        if unknown:
            raise DataError(
                f"task.data.columns: unknown roles {sorted(unknown)} for classification; "
                "roles are text, text_pair, label"
            )
        self.require_columns(train, "train", mapping)
        return mapping

    def _resolve_label_names(self, train: datasets.Dataset) -> list[str]:
        if self.config.label_names:
            return list(self.config.label_names)
        if self.config.data.builtin:
            names = BUILTIN_DATASETS.meta(self.config.data.builtin).get("label_names")
            if names:
                return list(names)
        feature = train.features[self.columns["label"]]
        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names)
        values = column(train, self.columns["label"])
        if values and isinstance(values[0], str):
            return sorted(set(values))
        return [str(i) for i in range(max(values) + 1)]

    def model_kwargs(self) -> dict:
        names = self.label_names
        return {
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)},
        }

    def tokenize(self, splits: datasets.DatasetDict, tokenizer) -> datasets.DatasetDict:
        max_length = self.config.max_length

        def encode(batch):
            pair = batch.get("text_pair")
            encoded = tokenizer(batch["text"], pair, truncation=True, max_length=max_length)
            encoded["labels"] = batch["label"]
            return encoded

        return splits.map(encode, batched=True, remove_columns=splits["train"].column_names)

    def padder(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, return_tensors="pt")  # class labels are scalars

    @torch.no_grad()
    def predict(self, model, tokenizer, dataset: datasets.Dataset, *, device=None) -> list[int]:
        device = model_device(model, device)
        # batches of similar lengths pad less; predictions go back to the dataset's order
        lengths = [len(ids) for ids in column(dataset, "input_ids")]
        order = sorted(range(len(dataset)), key=lengths.__getitem__)
        predictions = [0] * len(dataset)
        with eval_mode(model):
            loader = self.dataloader(dataset.select(order), tokenizer, batch_size=self.config.eval_batch_size)
            position = 0
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
                for label in model(**batch).logits.argmax(-1).tolist():
                    predictions[order[position]] = label
                    position += 1
        return predictions

    def input_length_limit(self) -> int:
        return self.config.max_length

    def trivial_baseline(self, data: datasets.DatasetDict, tokenizer, split: str = "test") -> dict:
        """Always the training split's most frequent class."""
        train = column(data["train"], "labels")
        majority = max(set(train), key=train.count)
        predictions = [majority] * len(data[split])
        return {
            "name": f"majority class ({self.label_names[majority]})",
            **self.scores(predictions, column(data[split], "labels")),
        }

    def evaluate(self, model, tokenizer, dataset: datasets.Dataset, *, device=None) -> dict[str, float]:
        return self.scores(self.predict(model, tokenizer, dataset, device=device), column(dataset, "labels"))

    def scores(self, predictions: list[int], references: list[int]) -> dict[str, float]:
        out = {
            "accuracy": self.compute("accuracy", predictions=predictions, references=references)["accuracy"],
            "f1_macro": self.compute("f1", predictions=predictions, references=references, average="macro")["f1"],
        }
        if len(self.label_names) == 2:  # QQP/MRPC-style F1 of the positive class
            out["f1"] = self.compute("f1", predictions=predictions, references=references, average="binary")["f1"]
        return out

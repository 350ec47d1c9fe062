"""Source -> target text pairs, shared by seq2seq and causal-LM tasks.

Where the pairs come from, in order:
- a WMT16-style ``translation`` column (``{"en": ..., "ro": ...}``) with task.source_lang /
  task.target_lang;
- ``source`` / ``target`` columns (renamed with task.data.columns.source / .target);
- data-to-text: a source that is a list of triples (DART's ``tripleset``) is linearised as
  ``s | p | o ; s | p | o``.
task.prompt_template and task.completion_template (Python format strings over the row's columns
plus ``source`` and ``target``) shape the text, e.g. ``"translate: {source} =>"``.
"""

from __future__ import annotations

from typing import Any

from raykd.lazy import lazy_module
from raykd.tasks.base import Task
from raykd.tasks.data import DataError, column, describe

datasets = lazy_module("datasets")


class TextPairTask(Task):
    """Columns after `load`: ``source`` and ``target`` (strings, templates applied)."""

    def sources(self, dataset: datasets.Dataset, tokenizer) -> list[str]:
        """The source (prompt) texts of a tokenized split, decoded."""
        return [t.strip() for t in tokenizer.batch_decode(column(dataset, "input_ids"), skip_special_tokens=True)]

    def scores(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        raise NotImplementedError

    def trivial_baseline(self, data: datasets.DatasetDict, tokenizer, split: str = "test") -> dict:
        """The best of: an empty output, a copy of the source, the training split's most frequent target."""
        references = [r.strip() for r in column(data[split], "reference")]
        train_targets = [r.strip() for r in column(data["train"], "reference")]
        frequent = max(set(train_targets), key=train_targets.count)
        candidates = {
            "empty output": [""] * len(references),
            "copy of the source": self.sources(data[split], tokenizer),
            f"most frequent training target ({frequent[:40]!r})": [frequent] * len(references),
        }
        scored = {name: self.scores(predictions, references) for name, predictions in candidates.items()}
        best = max(scored, key=lambda name: scored[name][self.metric])
        return {"name": best, **scored[best]}

    def standardise(self, splits: datasets.DatasetDict, split: str) -> datasets.Dataset:
        dataset = splits[split]
        config = self.config
        where = f"{describe(config.data)} split {split!r}"
        columns = dict(config.data.columns)
        unknown = set(columns) - {"source", "target", "translation"}
        if unknown:
            raise DataError(
                f"task.data.columns: unknown roles {sorted(unknown)} for {self.name}; "
                "roles are source, target, translation"
            )
        translation = columns.get("translation", "translation")
        rows = dataset.to_list()
        if translation in dataset.column_names and "source" not in columns:
            languages = sorted(rows[0][translation]) if rows else []
            for role, lang in (("source_lang", config.source_lang), ("target_lang", config.target_lang)):
                if lang not in languages:
                    raise DataError(
                        f"{where} column {translation!r} has languages {languages}; task.{role} is {lang!r}"
                    )
            pairs = [
                {"source": r[translation][config.source_lang], "target": r[translation][config.target_lang]}
                for r in rows
            ]
        else:
            # source/target columns are needed only where a template uses them (HellaSwag-style
            # templates draw on other columns).
            names = {role: columns.get(role, role) for role in ("source", "target")}
            used = {
                role: name
                for role, name in names.items()
                if role in columns or "{" + role in config.prompt_template + config.completion_template
            }
            self.require_columns(dataset, split, used)
            pairs = [{role: _linearise(r[name]) for role, name in used.items()} for r in rows]
        sources, targets = [], []
        for i, (row, pair) in enumerate(zip(rows, pairs)):
            for role, text in pair.items():
                if not isinstance(text, str) or not text.strip():
                    raise DataError(f"{where} row {i}: empty or missing {role} text")
            values = {**row, **pair}
            prompt = _format(config.prompt_template, values, where, "prompt_template")
            completion = _format(config.completion_template, values, where, "completion_template")
            for role, text in (("source (prompt)", prompt), ("target (completion)", completion)):
                if not text.strip():
                    raise DataError(f"{where} row {i}: empty {role} text")
            sources.append(prompt)
            targets.append(completion)
        return datasets.Dataset.from_dict({"source": sources, "target": targets})


def _linearise(value: Any) -> Any:
    if isinstance(value, list) and value and all(isinstance(t, (list, tuple)) for t in value):
        return " ; ".join(" | ".join(str(x) for x in triple) for triple in value)
    return value


def _format(template: str, values: dict, where: str, field: str) -> str:
    try:
        return template.format_map(values)
    except (KeyError, IndexError, AttributeError) as error:
        raise DataError(
            f"task.{field} {template!r} refers to {error} which {where} rows lack; available: {sorted(values)}"
        ) from None

"""Exact match rate (0..1), as an `evaluate` module that loads offline.

Strings are compared after stripping surrounding whitespace; optionally case- and
punctuation-insensitive, as the hub's "exact_match".
"""

import string

import datasets
import evaluate


class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of predictions identical to their reference.",
            citation="",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, ignore_case=False, ignore_punctuation=False):
        def norm(text):
            text = text.strip()
            if ignore_case:
                text = text.lower()
            if ignore_punctuation:
                text = text.translate(str.maketrans("", "", string.punctuation))
            return text

        matches = [norm(p) == norm(r) for p, r in zip(predictions, references)]
        return {"exact_match": sum(matches) / len(matches) if matches else 0.0}

"""F1, as an `evaluate` module that loads offline (raykd's stand-in for the hub's "f1").

average="macro" for GLUE-style multi-class, average="binary" with pos_label=1 for QQP/MRPC.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="F1 score (sklearn.metrics.f1_score).",
            citation="",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None):
        score = f1_score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=0,
        )
        return {"f1": float(score) if getattr(score, "size", 1) == 1 else score.tolist()}

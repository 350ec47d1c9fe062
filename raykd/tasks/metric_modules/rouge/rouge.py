"""ROUGE, as an `evaluate` module that loads offline (same inputs, arguments and keys as the hub's "rouge").

Scores come from Google's reference implementation (`rouge_score.rouge_scorer.RougeScorer`): one
`Score(precision, recall, fmeasure)` per example and ROUGE type; the module reports F-measures in 0..1.
A prediction with several references is scored against each and keeps the best F-measure
(`RougeScorer.score_multi`), as the hub module does.

Aggregation (use_aggregator=True, the default) is the plain mean of the per-example F-measures. The
hub module reports `BootstrapAggregator().aggregate()[type].mid.fmeasure` instead: the median of
1000 bootstrap-resample means drawn from numpy's global, unseeded RNG, i.e. the same mean plus a
little resampling noise (and a draw on `np.random`). Here the value is the exact mean, so it is
reproducible and leaves numpy's RNG alone. use_aggregator=False returns the per-example F-measures
(lists), exactly like the hub.

rougeLsum is summary-level LCS over lines: rouge-score splits both texts on "\\n" (put one sentence
per line before scoring); rougeL treats each text as one sequence. The default tokenizer lowercases
and keeps only [a-z0-9] runs (Porter-stemmed when use_stemmer=True), as ROUGE-1.5.5 does; pass
`tokenizer` (a callable text -> list of tokens) for other scripts.
"""

import math
import re

import datasets
import evaluate
from rouge_score import rouge_scorer

DEFAULT_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
VALID_ROUGE_TYPE = re.compile(r"rouge[1-9]$|rougeL$|rougeLsum$")  # what RougeScorer.score accepts


class _CallableTokenizer:
    """A callable text -> tokens, with the `tokenize` method RougeScorer calls."""

    def __init__(self, function):
        self.function = function

    def tokenize(self, text):
        return self.function(text)


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-N / ROUGE-L / ROUGE-Lsum F-measures computed by rouge_score.rouge_scorer.RougeScorer.",
            citation="Lin, 2004. ROUGE: A Package for Automatic Evaluation of Summaries.",
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(
        self, predictions, references, rouge_types=None, use_aggregator=True, use_stemmer=False, tokenizer=None
    ):
        if rouge_types is None:
            rouge_types = list(DEFAULT_ROUGE_TYPES)
        elif isinstance(rouge_types, str):
            rouge_types = [rouge_types]
        else:
            rouge_types = list(rouge_types)
        invalid = [t for t in rouge_types if not isinstance(t, str) or not VALID_ROUGE_TYPE.match(t)]
        if invalid or not rouge_types:
            raise ValueError(
                f"rouge_types {invalid or rouge_types!r}: valid types are rouge1 ... rouge9, rougeL and rougeLsum"
            )
        scorer = rouge_scorer.RougeScorer(
            rouge_types=rouge_types,
            use_stemmer=use_stemmer,
            tokenizer=None if tokenizer is None else _CallableTokenizer(tokenizer),
        )
        fmeasures = {t: [] for t in rouge_types}
        for i, (prediction, reference) in enumerate(zip(predictions, references)):
            if isinstance(reference, str):
                scores = scorer.score(reference, prediction)
            elif reference:
                scores = scorer.score_multi(list(reference), prediction)
            else:
                raise ValueError(f"rouge: prediction {i} has no reference")
            for t in rouge_types:
                fmeasures[t].append(float(scores[t].fmeasure))
        if not use_aggregator:
            return fmeasures
        # evaluate rejects empty inputs before _compute; the guard only spares a direct caller a ZeroDivisionError.
        return {t: math.fsum(values) / len(values) if values else 0.0 for t, values in fmeasures.items()}

"""chrF (and chrF++ with word_order=2), as an `evaluate` module that loads offline."""

import datasets
import evaluate
import sacrebleu as scb


class Chrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus chrF computed by sacrebleu.corpus_chrf.",
            citation="Popovic, 2015. chrF: character n-gram F-score for automatic MT evaluation.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(
        self,
        predictions,
        references,
        char_order=6,
        word_order=0,
        beta=2,
        lowercase=False,
        whitespace=False,
        eps_smoothing=False,
    ):
        counts = {len(r) for r in references}
        if len(counts) != 1:
            raise ValueError("chrf needs the same number of references for every prediction")
        transposed = [[refs[i] for refs in references] for i in range(counts.pop())]
        metric = scb.CHRF(
            char_order=char_order,
            word_order=word_order,
            beta=beta,
            lowercase=lowercase,
            whitespace=whitespace,
            eps_smoothing=eps_smoothing,
        )
        return {
            "score": metric.corpus_score(predictions, transposed).score,
            "char_order": char_order,
            "word_order": word_order,
            "beta": beta,
        }

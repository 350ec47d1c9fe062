"""chrF (and chrF++ with word_order=2), as an `evaluate` module that loads offline."""

import evaluate
import sacrebleu as scb

from raykd.tasks.metrics import corpus_text_metric_info, references_by_position


class Chrf(evaluate.Metric):
    def _info(self):
        return corpus_text_metric_info(
            description="Corpus chrF computed by sacrebleu.corpus_chrf.",
            citation="Popovic, 2015. chrF: character n-gram F-score for automatic MT evaluation.",
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
        transposed = references_by_position(references, "chrf")
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

"""sacreBLEU, as an `evaluate` module that loads offline (same inputs and outputs as the hub's "sacrebleu")."""

import evaluate
import sacrebleu as scb

from raykd.tasks.metrics import corpus_text_metric_info, references_by_position


class Sacrebleu(evaluate.Metric):
    def _info(self):
        return corpus_text_metric_info(
            description="Corpus BLEU computed by sacrebleu.corpus_bleu.",
            citation="Post, 2018. A Call for Clarity in Reporting BLEU Scores.",
        )

    def _compute(
        self,
        predictions,
        references,
        smooth_method="exp",
        smooth_value=None,
        force=False,
        lowercase=False,
        tokenize=None,
        use_effective_order=False,
    ):
        transposed = references_by_position(references, "sacrebleu")
        bleu = scb.corpus_bleu(
            predictions,
            transposed,
            smooth_method=smooth_method,
            smooth_value=smooth_value,
            force=force,
            lowercase=lowercase,
            tokenize=tokenize,
            use_effective_order=use_effective_order,
        )
        return {
            "score": bleu.score,
            "counts": bleu.counts,
            "totals": bleu.totals,
            "precisions": bleu.precisions,
            "bp": bleu.bp,
            "sys_len": bleu.sys_len,
            "ref_len": bleu.ref_len,
        }

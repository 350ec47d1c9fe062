"""sacreBLEU, as an `evaluate` module that loads offline (same inputs and outputs as the hub's "sacrebleu")."""

import datasets
import evaluate
import sacrebleu as scb


class Sacrebleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus BLEU computed by sacrebleu.corpus_bleu.",
            citation="Post, 2018. A Call for Clarity in Reporting BLEU Scores.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
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
        counts = {len(r) for r in references}
        if len(counts) != 1:
            raise ValueError("sacrebleu needs the same number of references for every prediction")
        transposed = [[refs[i] for refs in references] for i in range(counts.pop())]
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

import json
import random
import re
from pathlib import Path

import pytest
import sacrebleu
import yaml
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score

from raykd.config import ConfigError
from raykd.tasks import build_task
from raykd.tasks.metrics import LOCAL_MODULES, load_metric, local_metric_names
from raykd.validate import parse_study_config

ROOT = Path(__file__).parent.parent
BIBLE = {s: str(ROOT / "tests/fixtures/bible_en_es" / f"{s}.jsonl") for s in ("train", "validation", "test")}
ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def test_local_modules_shipped():
    assert local_metric_names() == ["accuracy", "chrf", "exact_match", "f1", "rouge", "sacrebleu"]
    assert LOCAL_MODULES.is_absolute()


def test_offline_loads_the_local_module():
    # Tests run with HF_HUB_OFFLINE=1: the module must be raykd's (its description), not the hub's.
    assert load_metric("accuracy").description.startswith("Fraction of predictions equal to their reference")
    assert load_metric("sacrebleu").description == "Corpus BLEU computed by sacrebleu.corpus_bleu."


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed):
    rng = random.Random(seed)
    refs = [rng.randrange(3) for _ in range(200)]
    preds = [r if rng.random() < 0.6 else rng.randrange(3) for r in refs]
    assert load_metric("accuracy").compute(predictions=preds, references=refs)["accuracy"] == pytest.approx(
        accuracy_score(refs, preds)
    )
    assert load_metric("f1").compute(predictions=preds, references=refs, average="macro")["f1"] == pytest.approx(
        f1_score(refs, preds, average="macro")
    )
    binary_refs = [r % 2 for r in refs]
    binary_preds = [p % 2 for p in preds]
    assert load_metric("f1").compute(predictions=binary_preds, references=binary_refs)["f1"] == pytest.approx(
        f1_score(binary_refs, binary_preds)
    )


def test_generation_metrics_match_sacrebleu(tmp_path):
    from pathlib import Path

    rows = Path(__file__).parent.joinpath("fixtures/bible_en_es/test.jsonl").read_text(encoding="utf-8").splitlines()
    import json

    refs = [json.loads(r)["translation"]["es"] for r in rows[:40]]
    rng = random.Random(0)
    preds = [" ".join(w for w in r.split() if rng.random() < 0.8) for r in refs]  # degraded hypotheses
    bleu = load_metric("sacrebleu").compute(predictions=preds, references=[[r] for r in refs])
    direct = sacrebleu.corpus_bleu(preds, [refs])
    assert bleu["score"] == pytest.approx(direct.score) and 5 < bleu["score"] < 95
    assert bleu["bp"] == pytest.approx(direct.bp)
    chrf = load_metric("chrf").compute(predictions=preds, references=[[r] for r in refs])
    assert chrf["score"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    two_refs = load_metric("sacrebleu").compute(predictions=preds, references=[[r, p] for r, p in zip(refs, preds)])
    assert two_refs["score"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs, preds]).score)


def test_exact_match_options():
    em = load_metric("exact_match")
    assert em.compute(predictions=[" Dios ", "luz", "x"], references=["Dios", "Luz", "y"])[
        "exact_match"
    ] == pytest.approx(1 / 3)
    assert (
        em.compute(predictions=["luz!", "x"], references=["Luz", "y"], ignore_case=True, ignore_punctuation=True)[
            "exact_match"
        ]
        == 0.5
    )


def test_unknown_metric():
    with pytest.raises(
        ValueError,
        match="raykd ships no local module for it; local modules: accuracy, chrf, exact_match, f1, rouge, sacrebleu",
    ):
        load_metric("bertscore")


# --- ROUGE -----------------------------------------------------------------------------------------
def bible_pairs(n=40, lang="en"):
    """(degraded predictions, references): real verses with ~20% of the words dropped (seeded)."""
    rows = Path(BIBLE["test"]).read_text(encoding="utf-8").splitlines()[:n]
    refs = [json.loads(r)["translation"][lang] for r in rows]
    rng = random.Random(0)
    preds = [" ".join(w for w in r.split() if rng.random() < 0.8) for r in refs]
    return preds, refs


def direct_rouge_means(preds, refs, use_stemmer=False):
    """rouge-score called directly: per-example F-measures, averaged."""
    scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=use_stemmer)
    per_example = [scorer.score(r, p) for p, r in zip(preds, refs)]
    return {t: sum(s[t].fmeasure for s in per_example) / len(per_example) for t in ROUGE_TYPES}


def test_offline_loads_the_local_rouge_module():
    assert load_metric("rouge").description.startswith(
        "ROUGE-N / ROUGE-L / ROUGE-Lsum F-measures computed by rouge_score"
    )


@pytest.mark.parametrize("use_stemmer", [False, True])
@pytest.mark.parametrize("lang", ["en", "es"])
def test_rouge_matches_rouge_score(use_stemmer, lang):
    preds, refs = bible_pairs(lang=lang)
    rouge = load_metric("rouge")
    result = rouge.compute(predictions=preds, references=refs, use_stemmer=use_stemmer)
    assert list(result) == ROUGE_TYPES
    direct = direct_rouge_means(preds, refs, use_stemmer)
    for t in ROUGE_TYPES:
        assert result[t] == pytest.approx(direct[t], abs=1e-9) and 0.3 < result[t] < 1
    # a list of one reference per prediction (what Seq2Seq passes) scores the same
    listed = rouge.compute(predictions=preds, references=[[r] for r in refs], use_stemmer=use_stemmer)
    assert all(listed[t] == pytest.approx(direct[t], abs=1e-9) for t in ROUGE_TYPES)
    # use_aggregator=False: the per-example F-measures
    per_example = rouge.compute(predictions=preds, references=refs, use_stemmer=use_stemmer, use_aggregator=False)
    scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=use_stemmer)
    for p, r, i in zip(preds, refs, range(len(preds))):
        scores = scorer.score(r, p)
        assert all(per_example[t][i] == pytest.approx(scores[t].fmeasure, abs=1e-9) for t in ROUGE_TYPES)


def test_rouge_multi_reference_rouge_types_and_lsum_lines():
    preds, refs = bible_pairs()
    rouge = load_metric("rouge")
    # several references: the best F-measure per example (RougeScorer.score_multi)
    others = refs[1:] + refs[:1]
    scorer = rouge_scorer.RougeScorer(["rouge2"])
    best = [scorer.score_multi([r, o], p)["rouge2"].fmeasure for p, r, o in zip(preds, refs, others)]
    multi = rouge.compute(predictions=preds, references=[[r, o] for r, o in zip(refs, others)], rouge_types=["rouge2"])
    assert multi == {"rouge2": pytest.approx(sum(best) / len(best), abs=1e-9)}
    # rougeLsum splits on newlines: two verses per summary, one per line, in the other order in the
    # prediction (one LCS over the whole text can match only one of them in order; line-level LCS both)
    pairs = [(f"{preds[i + 1]}\n{preds[i]}", f"{refs[i]}\n{refs[i + 1]}") for i in range(0, len(preds) - 1, 2)]
    lsum_preds, lsum_refs = [p for p, _ in pairs], [r for _, r in pairs]
    result = rouge.compute(predictions=lsum_preds, references=lsum_refs, rouge_types=["rougeL", "rougeLsum"])
    direct = direct_rouge_means(lsum_preds, lsum_refs)
    assert result == {t: pytest.approx(direct[t], abs=1e-9) for t in ("rougeL", "rougeLsum")}
    assert result["rougeLsum"] > result["rougeL"] + 0.2
    with pytest.raises(
        ValueError, match="rouge_types \\['bleu'\\]: valid types are rouge1 ... rouge9, rougeL and rougeLsum"
    ):
        rouge.compute(predictions=preds, references=refs, rouge_types=["bleu"])


def test_rouge_golden_values():
    rouge = load_metric("rouge")
    three_of_four = 2 * 1 * 0.75 / 1.75  # precision 3/3, recall 3/4
    assert rouge.compute(predictions=["the cat sat"], references=["the cat sat down"]) == pytest.approx(
        {
            "rouge1": three_of_four,
            "rouge2": 2 * 1 * (2 / 3) / (1 + 2 / 3),
            "rougeL": three_of_four,
            "rougeLsum": three_of_four,
        },
        abs=1e-12,
    )
    # case and punctuation do not count; "cats" matches "cat" only when stemmed
    assert rouge.compute(predictions=["The cats, sat!"], references=["the cat sat down"], rouge_types=["rouge1"]) == {
        "rouge1": pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    }
    assert rouge.compute(
        predictions=["The cats, sat!"], references=["the cat sat down"], rouge_types=["rouge1"], use_stemmer=True
    ) == {"rouge1": pytest.approx(three_of_four)}
    # summary-level LCS: union LCS per reference line, each token counted once -> 3 hits of 6 / 3
    lines = rouge.compute(
        predictions=["the dog sat"], references=["the cat sat\nthe dog ran"], rouge_types=["rougeL", "rougeLsum"]
    )
    assert lines == {
        "rougeL": pytest.approx(2 * (2 / 3) * (2 / 6) / (2 / 3 + 2 / 6)),
        "rougeLsum": pytest.approx(2 * 1 * 0.5 / 1.5),
    }
    # the mean over examples, not a pooled count
    assert rouge.compute(
        predictions=["the cat sat", "a b"], references=["the cat sat down", "a b"], rouge_types=["rouge1"]
    ) == {"rouge1": pytest.approx((three_of_four + 1) / 2)}


def test_rouge_empty_predictions_score_zero():
    preds, refs = bible_pairs(n=5)
    result = load_metric("rouge").compute(predictions=[""] * len(refs), references=refs)
    assert result == dict.fromkeys(ROUGE_TYPES, 0.0)
    assert (
        load_metric("rouge").compute(predictions=["", preds[0]], references=["x", refs[0]], use_aggregator=False)[
            "rouge1"
        ][0]
        == 0.0
    )


def seq2seq_study(**task):
    data = yaml.safe_load((ROOT / "studies/configs/bible_t5_to_3l_en_es.yaml").read_text())
    data["task"].update({"data": {"files": BIBLE}, **task})
    return data


def test_seq2seq_scores_report_rouge():
    task = build_task(parse_study_config(seq2seq_study()).task)
    assert task.metrics == ("sacrebleu", "chrf", "rouge1", "rouge2", "rougeL") and task.metric == "sacrebleu"
    preds, refs = bible_pairs()
    scores = task.scores(preds, refs)
    assert list(scores) == list(task.metrics)
    assert scores["sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    direct = direct_rouge_means(preds, refs)
    assert all(scores[t] == pytest.approx(direct[t], abs=1e-9) for t in ("rouge1", "rouge2", "rougeL"))
    empty = task.scores([""] * len(refs), refs)
    assert empty["rouge1"] == empty["rouge2"] == empty["rougeL"] == 0.0


def test_rouge_is_a_seq2seq_study_metric():
    config = parse_study_config(seq2seq_study(metric="rouge1"))
    assert config.task.metric == "rouge1" and build_task(config.task).metric == "rouge1"
    assert parse_study_config(seq2seq_study(metric="rougeL")).task.metric == "rougeL"
    for unknown in ("rougeLsum", "bleu"):
        with pytest.raises(
            ConfigError,
            match=re.escape(
                f"task.metric: {unknown!r} is not one of seq2seq's metrics "
                "['sacrebleu', 'chrf', 'rouge1', 'rouge2', 'rougeL']"
            ),
        ):
            parse_study_config(seq2seq_study(metric=unknown))

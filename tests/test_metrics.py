import random

import pytest
import sacrebleu
from sklearn.metrics import accuracy_score, f1_score

from raykd.tasks.metrics import LOCAL_MODULES, load_metric, local_metric_names


def test_local_modules_shipped():
    assert local_metric_names() == ["accuracy", "chrf", "exact_match", "f1", "sacrebleu"]
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
        accuracy_score(refs, preds))
    assert load_metric("f1").compute(predictions=preds, references=refs, average="macro")["f1"] == pytest.approx(
        f1_score(refs, preds, average="macro"))
    binary_refs = [r % 2 for r in refs]
    binary_preds = [p % 2 for p in preds]
    assert load_metric("f1").compute(predictions=binary_preds, references=binary_refs)["f1"] == pytest.approx(
        f1_score(binary_refs, binary_preds))


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
    assert em.compute(predictions=[" Dios ", "luz", "x"], references=["Dios", "Luz", "y"])["exact_match"] == pytest.approx(1 / 3)
    assert em.compute(predictions=["luz!", "x"], references=["Luz", "y"], ignore_case=True,
                      ignore_punctuation=True)["exact_match"] == 0.5


def test_unknown_metric():
    with pytest.raises(ValueError, match="raykd ships no local module for it; local modules: accuracy, chrf"):
        load_metric("rouge")

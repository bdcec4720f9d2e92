"""A deterministic lower-cased BERT-style WordPiece tokenizer built from a text corpus.

Shared by fine-tuning (`clip_td.lib.tokenizer`, the from-scratch student's vocabulary) and the
student pretraining stage (`pretrain.student`), which may import only `clip_td.base`. The result
is a `transformers` fast tokenizer: `save_pretrained` gives a folder `AutoTokenizer` loads.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}


def wordpiece_vocab(words: Counter, vocab_size: int, min_frequency: int = 1, alphabet: str = "") -> Dict[str, int]:
    """Special tokens, every character of the words and of `alphabet` (word-initial and `##`
    continuation), then whole words by frequency (ties alphabetical) up to `vocab_size`.

    Chosen here rather than by `tokenizers.trainers.WordPieceTrainer`, whose merge ties follow a
    per-process hash order: the same corpus must give the same vocabulary in every process and
    run (multi-process training, resume, sweeps).
    """
    chars = sorted({c for w in words for c in w} | set(alphabet))
    tokens = list(SPECIAL_TOKENS.values()) + chars + [f"##{c}" for c in chars]
    ranked = sorted((w for w, n in words.items() if n >= min_frequency and len(w) > 1), key=lambda w: (-words[w], w))
    tokens += ranked[: max(vocab_size - len(tokens), 0)]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def build_wordpiece(texts: Iterable[str], vocab_size: int = 4000, min_frequency: int = 1,
                    alphabet: str = "") -> PreTrainedTokenizerFast:
    """A lower-cased BERT-style WordPiece tokenizer whose vocabulary comes from `texts`
    (deterministic). Characters of `alphabet` are in it too, so a word made of them is never
    [UNK] even when `texts` never showed them (digits in "triangle1", a "?")."""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = Counter(w for t in texts for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(t)))
    tok = Tokenizer(models.WordPiece(vocab=wordpiece_vocab(words, vocab_size, min_frequency, alphabet),
                                     unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    cls, sep = SPECIAL_TOKENS["cls_token"], SPECIAL_TOKENS["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)

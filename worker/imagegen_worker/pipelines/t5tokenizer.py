"""An offline T5 tokenizer for the built-in flow-matching models (builtin://tiny-sd3, tiny-flux).

SD3 and Flux read the prompt with a T5 encoder too (SD3: third text encoder, 256 tokens; Flux:
second, 512 tokens), whose sentencepiece vocabulary lives on the hub. This builds a genuine
`transformers.T5Tokenizer` (Unigram, metaspace, `</s>` at the end, pad id 0) from pieces made in
code: a whole-word piece for each common prompt word of the CLIP tiny tokenizer's list
(tokenizer.WORDS) and single letters, digits and punctuation for everything else, so token
counts stay near a real T5's (about one token per common word) and `maxPromptTokens` behaves
on the tiny models as on the real ones. No file or network access; deterministic.
"""

from __future__ import annotations

from functools import cache
from string import ascii_lowercase, ascii_uppercase, digits, punctuation

from transformers import T5Tokenizer

from .tokenizer import WORDS

SPACE = "▁"  # sentencepiece's word-start marker
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
# Unigram log-probabilities: a known word beats spelling it out letter by letter.
_WORD_SCORE, _CHAR_SCORE = -5.0, -10.0


@cache
def _pieces() -> tuple[tuple[str, float], ...]:
    pieces: dict[str, float] = {PAD: 0.0, EOS: 0.0, UNK: 0.0, SPACE: -2.0}
    for word in sorted(set(WORDS)):
        pieces.setdefault(SPACE + word, _WORD_SCORE)
    for char in ascii_lowercase + ascii_uppercase + digits + punctuation:
        pieces.setdefault(char, _CHAR_SCORE)
        pieces.setdefault(SPACE + char, _CHAR_SCORE)
    return tuple(pieces.items())


def vocab_size() -> int:
    """Token ids the tokenizer produces (the T5 encoder's embedding needs at least this many)."""
    return len(_pieces())


def build_tokenizer(max_length: int) -> T5Tokenizer:
    """A fresh T5Tokenizer whose `model_max_length` is the pipeline's T5 window."""
    return T5Tokenizer(vocab=list(_pieces()), extra_ids=0, model_max_length=max_length)

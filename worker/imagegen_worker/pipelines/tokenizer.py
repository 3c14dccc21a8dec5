"""An offline CLIP tokenizer for the built-in tiny model (and the benchmark's random SDXL).

Real CLIP vocabularies live on the hub; we may not download them. This builds a genuine
`transformers.CLIPTokenizer` (byte-level BPE, lowercase, 77 tokens) from a vocabulary and merges
generated in code, so it saves and loads with the pipeline like any other tokenizer.

The merges are learned (plain BPE training, in code, deterministic) on a list of common prompt
words, so those become whole-word tokens, and other words split into learned sub-words or letter
pairs, so token counts stay near a real CLIP tokenizer's (about one token per
common word) and the `maxPromptTokens` limit behaves the same on the demo model as on SDXL.
The list also covers every word of the shapes dataset (shapes_data.VOCABULARY; a unit test checks
it), the captions builtin://shapes-sdxl is trained on. Special tokens sit at the end of the
vocabulary, as in CLIP (start of text, then end of text).
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from itertools import pairwise
from string import ascii_lowercase
from typing import Any

from transformers import CLIPTokenizer

MAX_LENGTH = 77
END_OF_WORD = "</w>"
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"

# Words that get a token of their own (everything else falls back to letter pairs or bytes).
WORDS: tuple[str, ...] = tuple(
    """
    a an the of and or with without in on at by for from to into over under near behind above
    is are as it its this that these those very highly ultra extremely more most no not
    photo photograph picture image painting drawing sketch illustration render rendering art
    artwork portrait landscape cityscape closeup close up shot view scene style concept poster
    cinematic realistic photorealistic hyperrealistic detailed intricate sharp focus soft blurry
    bokeh lighting light dark bright shadow shadows sunlight moonlight sunset sunrise dawn dusk
    night day morning evening golden hour studio volumetric dramatic moody vibrant colorful
    color colors black white red green blue yellow orange purple pink brown gray grey silver gold
    quality best high low resolution masterpiece trending digital oil watercolor acrylic pencil
    ink anime cartoon comic pixel vector minimalist abstract surreal fantasy sci fi futuristic
    cyberpunk steampunk retro vintage modern ancient medieval gothic baroque neon glowing
    cat dog bird horse fox wolf lion tiger bear fish dragon robot astronaut knight wizard witch
    man woman girl boy child people person face eyes hair smile king queen warrior princess
    city street house castle tower bridge road village forest tree trees flower flowers garden
    mountain mountains river lake ocean sea beach island desert snow rain fog cloud clouds sky
    stars space planet moon sun fire water ice stone wood glass metal
    car train ship boat plane bicycle lighthouse cafe room kitchen window door table chair
    small big large tiny giant old young new beautiful cute happy sad epic
    wearing holding sitting standing walking running flying riding floating looking made
    one two three four five lens mm camera wide angle macro depth field
    hd uhd k unreal engine octane blender artstation
    ugly deformed bad worst lowres jpeg artifacts watermark text signature cropped extra
    circle square triangle background foreground shape shapes
    """.split()
)


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE uses (GPT-2 / CLIP table)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def _train_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Byte-pair-encoding training on the word list, until every word is a single token.

    Deterministic (ties go to the smallest pair), unlike the `tokenizers` trainer whose tie
    order changes between processes. Applying the merges in this order reproduces each training
    word as one token; other words reuse the frequent sub-words learned on the way.
    """
    pending = [[*w[:-1], w[-1] + END_OF_WORD] for w in sorted(set(words)) if len(w) > 1]
    merges: list[tuple[str, str]] = []
    while pending:
        counts: Counter[tuple[str, str]] = Counter()
        for symbols in pending:
            counts.update(pairwise(symbols))
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        pending = [s for s in (_apply(symbols, best) for symbols in pending) if len(s) > 1]
    return merges


def _apply(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _merges() -> list[tuple[str, str]]:
    """Trained whole-word merges first, then every letter pair as a fallback for other words."""
    merges = dict.fromkeys(_train_merges(WORDS))
    for x in ascii_lowercase:
        for y in ascii_lowercase:
            merges.setdefault((x, y))
            merges.setdefault((x, y + END_OF_WORD))
    return list(merges)


@cache
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + END_OF_WORD for c in alphabet]
    merges = _merges()
    seen = set(tokens)
    for left, right in merges:
        if left + right not in seen:
            seen.add(left + right)
            tokens.append(left + right)
    tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def vocab_size() -> int:
    """Number of token ids the tiny tokenizer produces (text encoders need at least this many)."""
    return len(_vocab_and_merges()[0])


def build_tokenizer() -> CLIPTokenizer:
    """A fresh CLIPTokenizer (max length 77) built without any file or network access."""
    vocab, merges = _vocab_and_merges()
    pairs: Any = list(merges)  # the backend takes (left, right) tuples; the stub says str
    return CLIPTokenizer(vocab=dict(vocab), merges=pairs, model_max_length=MAX_LENGTH)

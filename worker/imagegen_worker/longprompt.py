"""Prompts longer than the text encoder's window: served truncated, with a warning.

Pure; called by `validate`. The pipelines cut a prompt to the encoder's window (77 tokens for
CLIP) themselves; the validator rejects only what exceeds the model's `maxPromptTokens` (a
configurable bound on work and message size) and reports a cut as a warning in the result.
"""

from __future__ import annotations


def truncation_warning(field: str, tokens: int, window: int) -> str | None:
    """The warning a result carries when the text encoder reads only part of `field`."""
    if tokens <= window:
        return None
    return (f"{field} is {tokens} tokens long; the text encoder reads the first {window}, "
            f"the last {tokens - window} were ignored")

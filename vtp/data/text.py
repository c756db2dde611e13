"""Caption tokens for the CLIP objective: open_clip's bundled OpenAI BPE (works offline), any context length."""
from __future__ import annotations

import torch


class TextTokenizer:
    """`tokenizer(["a red star", ...])` -> int64 (B, context_length): [SOT] tokens [EOT] 0-padded; a longer
    caption is cut and still ends with [EOT] (the text tower pools at the EOT position, the argmax token id)."""

    def __init__(self, context_length: int):
        import open_clip

        if context_length < 3:
            raise ValueError(f"context_length {context_length}: expected >= 3 (start, one token, end)")
        self.context_length = context_length
        self._tok = open_clip.get_tokenizer("ViT-B-32", context_length=context_length)
        self.vocab_size: int = self._tok.vocab_size
        self.sot_id: int = self._tok.sot_token_id
        self.eot_id: int = self._tok.eot_token_id

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"texts: expected a list of str, got {type(texts).__name__}"
                            + ("" if isinstance(texts, str) else f" of {sorted({type(t).__name__ for t in texts})}"))
        return self._tok(list(texts), context_length=self.context_length).long()

    def lengths(self, texts: list[str]) -> list[int]:
        """Tokens each text needs including [SOT] and [EOT] (to check what a context length cuts off)."""
        return [len(self._tok.encode(t)) + 2 for t in texts]

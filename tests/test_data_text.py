"""Caption tokens: identical to open_clip's tokenizer, any context length, captions of the generator fit."""
from __future__ import annotations

import open_clip
import pytest
import torch

from vtp.data import synthetic
from vtp.data.text import TextTokenizer
from vtp.models.registry import SIZES

TEXTS = ["a small red star in the top left on a striped blue background", "", "Émoji 🙂 and UPPER case!"]


def test_matches_open_clip_tokenize():
    tokens = TextTokenizer(77)(TEXTS)
    assert tokens.dtype == torch.long and tokens.shape == (3, 77)
    assert torch.equal(tokens, open_clip.tokenize(TEXTS))


def test_short_context_cuts_and_still_ends_with_eot():
    tok = TextTokenizer(8)
    tokens = tok(["word " * 40, "a star"])
    assert tokens.shape == (2, 8)
    assert tokens[0, 0] == tok.sot_id and tokens[0, -1] == tok.eot_id
    assert tokens[1, :4].tolist() == open_clip.tokenize(["a star"])[0, :4].tolist() and tokens[1, 4:].eq(0).all()
    assert tokens.argmax(-1).tolist() == [7, 3]  # the EOT id is the largest: text towers pool at argmax


def test_every_synthetic_caption_fits_the_smallest_text_context():
    ctx = min(spec.text.context_length for spec in SIZES.values() if spec.text is not None)
    tok = TextTokenizer(ctx)
    captions = [synthetic.draw_scene(0, "train", i).caption for i in range(500)]
    assert max(tok.lengths(captions)) <= ctx


def test_wrong_input_is_named():
    with pytest.raises(TypeError, match="expected a list of str, got str"):
        TextTokenizer(77)("a caption")
    with pytest.raises(ValueError, match="context_length 2"):
        TextTokenizer(2)

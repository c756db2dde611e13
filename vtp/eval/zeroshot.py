"""Zero-shot classification with the tokenizer's CLIP towers (the OpenAI CLIP / open_clip protocol).

Each class is embedded under every prompt template; the normalised text embeddings are averaged and the mean
re-normalised. An image is assigned the class whose embedding has the highest cosine similarity with its
(normalised) image embedding. The logit scale does not change the ranking, so none is applied.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

Template = Callable[[str], str]

# Prompts for small object/shape data such as the synthetic captioned shapes (our own set).
SHAPE_TEMPLATES: tuple[Template, ...] = tuple(t.format for t in (
    "a photo of a {}.", "a {}.", "a {} shape.", "an image of a {}.", "a picture of a {}.", "a drawing of a {}.",
    "a rendering of a {}.", "a simple {} on a background.",
))

# Named sets (eval.zeroshot_templates). `openai_imagenet` is CLIP's 80 ImageNet prompts, as shipped by open_clip.
TEMPLATE_SETS: dict[str, tuple[Template, ...]] = {
    "shapes": SHAPE_TEMPLATES,
    "openai_imagenet": tuple(OPENAI_IMAGENET_TEMPLATES),
    "simple_imagenet": tuple(SIMPLE_IMAGENET_TEMPLATES),
}


def get_templates(name: str) -> tuple[Template, ...]:
    try:
        return TEMPLATE_SETS[name]
    except KeyError:
        raise ValueError(f"zero-shot template set {name!r}: allowed: {', '.join(TEMPLATE_SETS)}") from None


@torch.no_grad()
def class_embeddings(encode_text: Callable[[list[str]], torch.Tensor], classnames: Sequence[str],
                     templates: Sequence[Template]) -> torch.Tensor:
    """(C, E) unit-norm class embeddings: mean over templates of normalised text embeddings, re-normalised."""
    if not classnames or not templates:
        raise ValueError(f"zero-shot: need class names and templates, got {len(classnames)} and {len(templates)}")
    rows = []
    for name in classnames:
        emb = F.normalize(encode_text([t(name) for t in templates]).float(), dim=-1)
        rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, torch.Tensor]:
    """{k: (B,) bool} whether the label is among the k highest logits (k capped at the number of classes)."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"topk_correct: expected logits (B, C) and labels (B,), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    order = logits.argsort(dim=1, descending=True)
    hit = order == labels.view(-1, 1).to(order.device)
    return {k: hit[:, :min(k, logits.shape[1])].any(1) for k in ks}


def chance(num_classes: int, k: int) -> float:
    """Accuracy of a uniform random ranking under top-k."""
    return min(k, num_classes) / num_classes


@torch.no_grad()
def zeroshot_accuracy(image_embeddings: Iterable[tuple[torch.Tensor, torch.Tensor]], weights: torch.Tensor,
                      ks: Iterable[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy over batches of (unit-norm image embeddings (B, E), labels (B,)) against class weights."""
    ks = tuple(ks)
    hits = {k: 0 for k in ks}
    n = 0
    for emb, labels in image_embeddings:
        logits = F.normalize(emb.float(), dim=-1) @ weights.to(emb.device).T
        for k, h in topk_correct(logits, labels, ks).items():
            hits[k] += int(h.sum())
        n += len(labels)
    if n == 0:
        raise ValueError("zero-shot: no images")
    return {**{f"top{k}": hits[k] / n for k in ks}, "n": n}

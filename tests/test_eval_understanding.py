"""Zero-shot classification and linear probes: perfect when the signal is there, chance when it is destroyed."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vtp.config import EvalConfig
from vtp.eval.probe import ProbeSettings, linear_probe
from vtp.eval.zeroshot import TEMPLATE_SETS, chance, class_embeddings, get_templates, topk_correct, zeroshot_accuracy

CLASSES = ["circle", "square", "triangle", "star", "heart", "ring", "cross", "arrow", "diamond", "crescent"]


class FakeTextTower:
    """Embeds a prompt by the class name it contains: a known direction per class, plus template-specific noise."""

    def __init__(self, dim: int = 32, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.directions = F.normalize(torch.randn(len(CLASSES), dim, generator=g), dim=-1)
        self.g = g
        self.prompts: list[str] = []

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.prompts += texts
        rows = []
        for t in texts:
            (idx,) = [i for i, c in enumerate(CLASSES) if f" {c}" in f" {t}"]
            rows.append(self.directions[idx] + 0.3 * torch.randn(self.directions.shape[1], generator=self.g))
        return F.normalize(torch.stack(rows), dim=-1)


def image_batches(tower: FakeTextTower, n: int = 2000, seed: int = 1, noise: float = 0.5):
    """Image embeddings near their class direction, in batches of 100, with their labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(CLASSES), (n,), generator=g)
    emb = tower.directions[labels] + noise * torch.randn(n, tower.directions.shape[1], generator=g) / 32 ** 0.5
    return list(zip(F.normalize(emb, dim=-1).split(100), labels.split(100)))


def test_class_embeddings_average_templates_and_normalise():
    tower = FakeTextTower()
    templates = get_templates("shapes")
    w = class_embeddings(tower, CLASSES, templates)
    assert w.shape == (len(CLASSES), 32)
    assert torch.allclose(w.norm(dim=-1), torch.ones(len(CLASSES)))
    assert len(tower.prompts) == len(CLASSES) * len(templates)
    assert "a photo of a circle." in tower.prompts and "a circle shape." in tower.prompts
    # Averaging over templates cancels template noise: closer to the true direction than single prompts are.
    single = tower([f"a photo of a {c}." for c in CLASSES])
    assert ((w - single) * tower.directions).sum(-1).min() > 0.1


def test_zeroshot_is_perfect_with_aligned_embeddings_and_chance_when_shuffled():
    tower = FakeTextTower()
    w = class_embeddings(tower, CLASSES, get_templates("shapes"))
    batches = image_batches(tower)
    acc = zeroshot_accuracy(batches, w)
    assert acc["top1"] > 0.99 and acc["top5"] == 1.0 and acc["n"] == 2000

    # Captions shuffled across images: labels no longer belong to the images.
    g = torch.Generator().manual_seed(2)
    shuffled = [(e, y[torch.randperm(len(y), generator=g)]) for e, y in batches]
    assert abs(zeroshot_accuracy(shuffled, w)["top1"] - chance(10, 1)) < 0.03
    assert abs(zeroshot_accuracy(shuffled, w)["top5"] - chance(10, 5)) < 0.04

    # Class names shuffled: averaged over many permutations, accuracy is chance.
    accs = []
    for _ in range(30):
        perm = torch.randperm(len(CLASSES), generator=g)
        accs.append(zeroshot_accuracy(batches, w[perm])["top1"])
    assert abs(sum(accs) / len(accs) - chance(10, 1)) < 0.03


def test_topk_and_chance():
    logits = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.1, 0.3]])
    hits = topk_correct(logits, torch.tensor([2, 0]), ks=(1, 2, 5))
    assert hits[1].tolist() == [False, True] and hits[2].tolist() == [True, True] and hits[5].all()
    assert chance(10, 1) == 0.1 and chance(10, 5) == 0.5 and chance(3, 5) == 1.0
    with pytest.raises(ValueError, match="labels"):
        topk_correct(logits, torch.tensor([0]))


def test_template_sets_match_the_config_choices():
    allowed = set(EvalConfig.model_fields["zeroshot_templates"].annotation.__args__)
    assert allowed == set(TEMPLATE_SETS)
    assert len(get_templates("openai_imagenet")) == 80
    assert get_templates("openai_imagenet")[0]("goldfish") == "a bad photo of a goldfish."
    with pytest.raises(ValueError, match="allowed"):
        get_templates("nope")


def blobs(n: int, classes: int, dim: int, seed: int, spread: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(classes, dim, generator=torch.Generator().manual_seed(99))
    y = torch.randint(0, classes, (n,), generator=g)
    # Large, uninformative offsets and scales per dimension: standardisation must handle them.
    x = (centres[y] + torch.randn(n, dim, generator=g)) * torch.linspace(0.01, 100, dim) + 50
    return x, y


def test_probe_on_separable_features_is_perfect():
    tx, ty = blobs(600, 8, 24, seed=0)
    vx, vy = blobs(300, 8, 24, seed=1)
    r = linear_probe(tx, ty, vx, vy, 8, ProbeSettings(epochs=20))
    assert r["top1"] > 0.98 and r["top5"] == 1.0
    assert r["n_train"] == 600 and r["n_holdout"] == 120 and r["n_val"] == 300 and r["dim"] == 24
    assert r["best_lr"] in ProbeSettings().lrs and set(r["holdout_top1"]) == {"0.001", "0.01", "0.1"}


def test_probe_on_random_labels_is_chance():
    tx, _ = blobs(800, 8, 24, seed=0)
    vx, _ = blobs(2000, 8, 24, seed=1)
    g = torch.Generator().manual_seed(5)
    r = linear_probe(tx, torch.randint(0, 8, (800,), generator=g), vx, torch.randint(0, 8, (2000,), generator=g), 8,
                     ProbeSettings(epochs=10))
    assert abs(r["top1"] - 1 / 8) < 0.04 and r["chance_top1"] == 1 / 8 and r["chance_top5"] == 5 / 8


def test_probe_is_deterministic_and_checks_inputs():
    tx, ty = blobs(200, 4, 8, seed=0)
    vx, vy = blobs(100, 4, 8, seed=1)
    s = ProbeSettings(epochs=3, lrs=(0.01, 0.1))
    assert linear_probe(tx, ty, vx, vy, 4, s) == linear_probe(tx, ty, vx, vy, 4, s)
    with pytest.raises(ValueError, match="equal D"):
        linear_probe(tx, ty, vx[:, :4], vy, 4, s)
    with pytest.raises(ValueError, match="labels"):
        linear_probe(tx, ty[:10], vx, vy, 4, s)

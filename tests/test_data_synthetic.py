"""The embedded generator: determinism, captions that say (only) what the image shows, renders true to the geometry."""
from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest

from vtp.data import synthetic as syn


def test_same_seed_and_index_give_the_same_sample_and_others_differ():
    a_img, a_cap, a_lab = syn.sample(3, "train", 17, 64)
    b_img, b_cap, b_lab = syn.sample(3, "train", 17, 64)
    assert np.array_equal(a_img, b_img) and a_cap == b_cap and a_lab == b_lab
    others = [syn.sample(4, "train", 17, 64)[0], syn.sample(3, "train", 18, 64)[0], syn.sample(3, "val", 17, 64)[0]]
    assert all(not np.array_equal(a_img, o) for o in others)


def test_one_scene_at_every_resolution():
    scene = syn.draw_scene(0, "val", 5)
    small, large = syn.render(scene, 32), syn.render(scene, 128)
    assert small.shape == (32, 32, 3) and large.shape == (128, 128, 3) and small.dtype == np.uint8
    # Box-downsampled 128 px render ~= the 32 px render (same scene, same geometry).
    pooled = large.reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
    assert np.abs(pooled - small).mean() < 6.0


def _named_parts(scene: syn.Scene) -> dict[str, str]:
    """The words each attribute other than the shape contributes when a caption names it."""
    return {"size": scene.size, "color": syn.COLOR_NAMES[scene.color], "position": syn.POSITIONS[scene.position][2],
            "background": f"{syn.BACKGROUNDS[scene.background]} {syn.COLOR_NAMES[scene.background_color]} background"}


def test_caption_names_the_shape_and_only_true_attributes_and_agrees_with_the_labels():
    names = syn.label_names()
    for i in range(300):
        scene = syn.draw_scene(1, "train", i)
        cap, lab = scene.caption, scene.labels
        shape, color = names["shape"][lab["shape"]], names["color"][lab["color"]]
        assert names["shape_color"][lab["shape_color"]] == f"{color} {shape}"
        assert shape in cap.split() or f"{shape}," in cap.split()
        for (key, words), named in zip(_named_parts(scene).items(), scene.named):
            assert (words in cap) == named, (key, cap)
        assert 5 <= len(cap.split()) and "  " not in cap and not cap.endswith(",") and ",," not in cap
        assert " a orange" not in cap and not cap.startswith("a orange")  # the article agrees


def test_captions_name_attributes_as_often_as_configured():
    scenes = [syn.draw_scene(0, "train", i) for i in range(2000)]
    for k, key in enumerate(syn.NAMED):
        share = sum(s.named[k] for s in scenes) / len(scenes)
        assert share == pytest.approx(syn.CAPTION_NAMES[key], abs=0.04), key
    # Shape and colour always: a batch's captions differ in shape within each colour (issue 10).
    assert syn.CAPTION_NAMES["color"] == 1.0


def test_a_caption_that_names_everything_names_every_attribute():
    scene = dataclasses.replace(syn.draw_scene(1, "train", 3), named=(True,) * len(syn.NAMED))
    for template in range(len(syn.TEMPLATES)):
        cap = dataclasses.replace(scene, template=template).caption
        assert all(words in cap for words in _named_parts(scene).values()), cap
        assert syn.SHAPES[scene.shape] in cap
    bare = dataclasses.replace(scene, named=(False,) * len(syn.NAMED), shape=syn.SHAPES.index("star"))
    assert {dataclasses.replace(bare, template=t).caption for t in range(len(syn.TEMPLATES))} == {
        "a picture of a star", "an image of a star", "a picture with a star"}


def test_drawing_which_attributes_a_caption_names_leaves_the_image_alone():
    """The caption draws come last, so changing CAPTION_NAMES changes captions, never scenes or images."""
    scene = syn.draw_scene(0, "val", 11)
    other = dataclasses.replace(scene, named=tuple(not n for n in scene.named))
    assert np.array_equal(syn.render(scene, 32), syn.render(other, 32)) and scene.labels == other.labels


def test_every_class_occurs_and_shape_contrasts_with_background():
    scenes = [syn.draw_scene(0, "train", i) for i in range(3000)]
    for key, names in syn.label_names().items():
        seen = Counter(s.labels[key] for s in scenes)
        assert len(seen) == len(names), key
    rgb = dict(syn.COLORS)
    for s in scenes:
        fg, bg = np.array(rgb[syn.COLOR_NAMES[s.color]]), np.array(rgb[syn.COLOR_NAMES[s.background_color]])
        assert np.linalg.norm(fg - bg) >= syn.MIN_CONTRAST


def test_shapes_take_the_shape_palette_and_backgrounds_every_colour():
    scenes = [syn.draw_scene(0, "train", i) for i in range(2000)]
    assert {syn.COLOR_NAMES[s.color] for s in scenes} == set(syn.SHAPE_COLORS)
    assert len({s.background_color for s in scenes}) == len(syn.COLORS)
    assert syn.label_names()["color"] == list(syn.SHAPE_COLORS)
    assert len(syn.label_names()["shape_color"]) == len(syn.SHAPES) * len(syn.SHAPE_COLORS)


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _lens_area(r1: float, r2: float, d: float) -> float:
    """Area shared by two circles with radii r1, r2 whose centres are d apart."""
    a1 = r1**2 * math.acos((d**2 + r1**2 - r2**2) / (2 * d * r1))
    a2 = r2**2 * math.acos((d**2 + r2**2 - r1**2) / (2 * d * r2))
    return a1 + a2 - 0.5 * math.sqrt((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2))


@pytest.mark.parametrize("shape", syn.SHAPES)
def test_rendered_coverage_matches_the_polygon_area(shape):
    """Reference: the shoelace area of the outline (fills minus holes) at the scene's radius."""
    scene = syn.Scene(shape=syn.SHAPES.index(shape), color=0, size="large", position="center", background="solid",
                      background_color=4, cx=0.5, cy=0.5, radius=0.26, angle=0.3, fg_gain=1.0, bg_gain=1.0,
                      bg_param=(0.0,), noise_seed=0, template=0)
    fills, holes = syn.OUTLINES[shape]
    area = sum(_polygon_area(p) for p in fills) - sum(_polygon_area(p) for p in holes)
    if shape == "crescent":  # the hole pokes out of the disc: subtract only the lens where the circles overlap
        area = math.pi - _lens_area(1.0, 0.82, math.hypot(0.42, 0.22))
    for res in (32, 64, 256):
        covered = syn.shape_mask(scene, res).sum() / res**2
        assert covered == pytest.approx(area * scene.radius**2, rel=0.03), res


def test_sizes_are_ordered_and_small_shapes_stay_visible_at_32px():
    for i in range(300):
        scene = syn.draw_scene(2, "train", i)
        covered = syn.shape_mask(scene, 32).sum()
        r_px = scene.radius * 32
        assert covered > 0.2 * math.pi * r_px**2 * 0.25  # every shape covers a good part of its disc
    radii = {k: [s.radius for s in (syn.draw_scene(2, "train", i) for i in range(300)) if s.size == k]
             for k in syn.SIZES}
    assert max(radii["small"]) < min(radii["medium"]) and max(radii["medium"]) < min(radii["large"])


def test_wrong_arguments_are_named():
    with pytest.raises(ValueError, match="split 'test'"):
        syn.draw_scene(0, "test", 0)
    with pytest.raises(ValueError, match="index -1"):
        syn.draw_scene(0, "train", -1)
    with pytest.raises(ValueError, match="resolution 4"):
        syn.render(syn.draw_scene(0, "train", 0), 4)


@pytest.mark.parametrize("resolution,patch", [(32, 8), (64, 16), (256, 16)])
def test_positions_differ_by_whole_patches(resolution, patch):
    """Moving a shape between positions moves it by whole patches (issue 10: shape is then learnable in budget)."""
    centres = {v for x, y, _ in syn.POSITIONS.values() for v in (x * resolution, y * resolution)}
    steps = {round(b - a, 6) for a in centres for b in centres if b > a}
    assert steps and all(s % patch == 0 for s in steps), steps
    jitter = [abs(s.cx - syn.POSITIONS[s.position][0]) * resolution for s in
              (syn.draw_scene(0, "train", i) for i in range(200))]
    assert max(jitter) <= 0.025 * resolution  # within a patch's phase

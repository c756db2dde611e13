"""The embedded dataset: procedurally generated, captioned and labelled images of coloured shapes.

Every image shows one shape (10 kinds) in one of the `SHAPE_COLORS` (red or blue), at one of 3 sizes and 9
positions, slightly rotated, on one of 5 background kinds (plain, gradient, stripes, checker, noise texture) in
a second colour (any of 10).
The caption always names the shape and names each other attribute with the probability in `CAPTION_NAMES`
(by default shape and colour only: "a picture of a red star"; naming everything gives e.g. "a picture of a small
red star in the top left on a striped blue background"), in one of several phrasings. Labels: `shape`,
`shape_color` (the second label set) and the single attributes, whatever the caption names.

`sample(seed, split, index, resolution)` is a pure function of its arguments: the scene is drawn first
(resolution-free, in unit coordinates) and then rendered, so one index shows the same scene at 32 px and at
256 px. Images are uint8 (H, W, 3) at this file boundary; the library converts them to [-1, 1] floats.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# (name, RGB). Names are what captions and zero-shot prompts say.
COLORS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (215, 35, 35)), ("orange", (245, 135, 20)), ("yellow", (240, 215, 30)), ("green", (35, 160, 55)),
    ("blue", (35, 75, 215)), ("purple", (135, 55, 185)), ("pink", (245, 135, 195)), ("brown", (120, 70, 30)),
    ("white", (245, 245, 245)), ("black", (20, 20, 20)),
)
COLOR_NAMES = tuple(name for name, _ in COLORS)
# The colours a shape is drawn in; backgrounds use every colour above. With all 10, a CLIP image tower's features
# are dominated by the shape's colour and never learn shape in the demo's budget (issue 10, CLIP alone, 300 steps
# of 64 at 32 px, shape zero-shot top-1 on 1,024 val images: 10 colours 0.11, 4: 0.13, 3: 0.19, 2: 0.23, 1: 0.59;
# naming shape alone in captions of 10-colour images: 0.11). Colour then stays a factor, and an easy anchor: with
# one colour, the full VTP objective never left CLIP's chance loss ln 64 in 300 steps. The base VTP with red and
# blue: 0.19 (red and orange: 0.15); params.yaml's optimiser settings take it to 0.27.
SHAPE_COLORS = ("red", "blue")
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "heart", "ring", "crescent", "arrow")
SIZES = {"small": 0.13, "medium": 0.19, "large": 0.26}  # shape radius as a fraction of the image side
# Positions on the quarter lines, so a shape moves between positions by whole patches at every resolution whose
# patch divides a quarter of the side (8 px at 32 px; 16 px at 64 and 256 px). A RoPE ViT is then nearly
# equivariant to the move, and shape need not be relearned at each sub-patch phase. With positions at 0.29/0.71
# (a 6.7 px step at 32 px) the demo's trunk, trained on the shape labels directly for 300 steps of 64 images,
# reached 0.27 val accuracy; at the quarter lines 0.48 (one position only: 0.59-0.62) (issue 10).
_LO, _HI = 0.25, 0.75
POSITIONS = {  # name -> (centre x, centre y, the phrase captions use); y grows downwards
    "top left": (_LO, _LO, "in the top left"), "top": (0.5, _LO, "at the top"),
    "top right": (_HI, _LO, "in the top right"), "left": (_LO, 0.5, "on the left"),
    "center": (0.5, 0.5, "in the center"), "right": (_HI, 0.5, "on the right"),
    "bottom left": (_LO, _HI, "in the bottom left"), "bottom": (0.5, _HI, "at the bottom"),
    "bottom right": (_HI, _HI, "in the bottom right"),
}
BACKGROUNDS = {"solid": "plain", "gradient": "gradient", "stripes": "striped", "checker": "checkered",
               "noise": "mottled"}  # label name -> caption adjective
TEMPLATES = (  # every phrasing keeps >= 5 words when the caption names the shape alone
    "a picture of {a_size_color_shape} {where} {on_background}",
    "an image of {a_color_shape}, {size}, {where} {on_background}",
    "{where}, a picture of {a_size_color_shape} {on_background}",
    "a picture of {a_size_color_shape} {where}, {background}",
    "{a_background} with {a_size_color_shape} {where}",
)
# How likely a caption is to name each attribute besides the shape (which it always names). Captions that name
# every attribute let a CLIP batch of 64 tell its captions apart by colour x background x position alone (450
# combinations), so the contrastive task never needs shape and the tokenizer never learns it (issue 10). Naming
# shape and colour only makes shape the attribute that separates a caption from the ~6 others of its colour in
# a batch, while colour, the fastest feature to learn, anchors the rest. Images show every attribute regardless.
CAPTION_NAMES = {"size": 0.0, "color": 1.0, "position": 0.0, "background": 0.0}
NAMED = tuple(CAPTION_NAMES)
MIN_CONTRAST = 120.0  # RGB distance between shape and background colour; closer pairs are never drawn
LABEL_SETS = ("shape", "shape_color", "color", "size", "position", "background")


def label_names() -> dict[str, list[str]]:
    """Class names of every label set, in label-index order (used for zero-shot prompts)."""
    return {
        "shape": list(SHAPES),
        "shape_color": [f"{c} {s}" for s in SHAPES for c in SHAPE_COLORS],
        "color": list(SHAPE_COLORS), "size": list(SIZES), "position": list(POSITIONS),
        "background": list(BACKGROUNDS),
    }


def _contrasting() -> list[list[int]]:
    rgb = np.array([c for _, c in COLORS], dtype=np.float64)
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
    return [[j for j in range(len(COLORS)) if dist[i, j] >= MIN_CONTRAST] for i in range(len(COLORS))]


BACKGROUND_CHOICES = _contrasting()


@dataclass(frozen=True)
class Scene:
    """Everything about one image, in unit coordinates (independent of resolution)."""
    shape: int
    color: int
    size: str
    position: str
    background: str
    background_color: int
    cx: float
    cy: float
    radius: float
    angle: float  # radians
    fg_gain: float  # brightness jitter of the shape colour (keeps its name true)
    bg_gain: float
    bg_param: tuple[float, ...]  # kind-specific: gradient angle, stripe period/angle, checker cell, noise grid
    noise_seed: int
    template: int
    named: tuple[bool, ...] = (True, True, True, True)  # which of NAMED the caption names

    @property
    def labels(self) -> dict[str, int]:
        color = SHAPE_COLORS.index(COLOR_NAMES[self.color])
        return {"shape": self.shape, "shape_color": self.shape * len(SHAPE_COLORS) + color, "color": color,
                "size": list(SIZES).index(self.size), "position": list(POSITIONS).index(self.position),
                "background": list(BACKGROUNDS).index(self.background)}

    @property
    def caption(self) -> str:
        size, color, where, bg = (v if keep else "" for v, keep in zip(
            (self.size, COLOR_NAMES[self.color], POSITIONS[self.position][2],
             f"{BACKGROUNDS[self.background]} {COLOR_NAMES[self.background_color]} background"), self.named))
        shape = SHAPES[self.shape]
        text = TEMPLATES[self.template].format(
            a_size_color_shape=_a(f"{size} {color} {shape}"), a_color_shape=_a(f"{color} {shape}"), size=size,
            where=where, on_background=f"on {_a(bg)}" if bg else "", background=bg,
            a_background=_a(bg) if bg else "a picture")
        return _tidy(text)


def _a(words: str) -> str:
    """The words with their indefinite article ("a red star", "an orange star"); extra spaces dropped."""
    words = " ".join(words.split())
    return ("an " if words[:1] in "aeiou" else "a ") + words


def _tidy(text: str) -> str:
    """Drop the gaps and stray commas that left-out attributes leave in a template."""
    parts = [" ".join(p.split()) for p in text.split(",")]
    return ", ".join(p for p in parts if p)


SPLIT_STREAMS = {"train": 0, "val": 1}  # independent random streams: the val set never depends on train size


def draw_scene(seed: int, split: str, index: int) -> Scene:
    if split not in SPLIT_STREAMS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLIT_STREAMS)}")
    if index < 0:
        raise ValueError(f"index {index}: expected a non-negative integer")
    # Python's string seeding and random() are the two parts of `random` guaranteed never to change across
    # versions (numpy's Generator methods are not), so only random() is used; it is also ~6x cheaper to seed.
    rng = random.Random(f"vtp-synthetic/{seed}/{split}/{index}")

    def pick(n: int) -> int:
        return int(rng.random() * n)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * rng.random()

    shape, color = pick(len(SHAPES)), COLOR_NAMES.index(SHAPE_COLORS[pick(len(SHAPE_COLORS))])
    choices = BACKGROUND_CHOICES[color]
    size = list(SIZES)[pick(len(SIZES))]
    position = list(POSITIONS)[pick(len(POSITIONS))]
    background = list(BACKGROUNDS)[pick(len(BACKGROUNDS))]
    px, py, _ = POSITIONS[position]
    kind_param = {
        "solid": lambda: (0.0,), "gradient": lambda: (uniform(0, 2 * math.pi),),
        "stripes": lambda: (uniform(0.1, 0.18), pick(4) * math.pi / 4),
        "checker": lambda: (uniform(0.1, 0.18),), "noise": lambda: (float(4 + pick(5)),),
    }[background]()
    return Scene(shape=shape, color=color, size=size, position=position, background=background,
                 background_color=choices[pick(len(choices))], cx=px + uniform(-0.025, 0.025),
                 cy=py + uniform(-0.025, 0.025), radius=SIZES[size] * uniform(0.92, 1.08),
                 angle=uniform(-0.35, 0.35), fg_gain=uniform(0.85, 1.08), bg_gain=uniform(0.85, 1.08),
                 bg_param=kind_param, noise_seed=pick(2**31), template=pick(len(TEMPLATES)),
                 named=tuple(rng.random() < CAPTION_NAMES[k] for k in NAMED))


def _regular(n: int, r: float = 1.0, phase: float = math.pi / 2) -> np.ndarray:
    t = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    outer, inn = _regular(points), _regular(points, inner, math.pi / 2 + math.pi / points)
    return np.stack([outer, inn], axis=1).reshape(-1, 2)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 60, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, y + 2.5], axis=1) / 16.5


_W = 0.34  # arm half-width of the cross, shaft half-height of the arrow
# Each shape: filled polygons, then polygons cut out of them (y up, radius ~1).
OUTLINES: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
    "circle": ([_regular(48)], []),
    "square": ([np.array([[-0.82, -0.82], [0.82, -0.82], [0.82, 0.82], [-0.82, 0.82]])], []),
    "triangle": ([_regular(3) + [0, -0.2]], []),
    "diamond": ([np.array([[0, 1.05], [0.62, 0], [0, -1.05], [-0.62, 0]])], []),
    "star": ([_star()], []),
    "cross": ([np.array([[-_W, 1], [_W, 1], [_W, _W], [1, _W], [1, -_W], [_W, -_W], [_W, -1], [-_W, -1],
                         [-_W, -_W], [-1, -_W], [-1, _W], [-_W, _W]])], []),
    "heart": ([_heart()], []),
    "ring": ([_regular(48)], [_regular(48, 0.55)]),
    "crescent": ([_regular(48)], [_regular(48, 0.82) + [0.42, 0.22]]),
    "arrow": ([np.array([[-1, _W * 0.8], [0.1, _W * 0.8], [0.1, 0.75], [1, 0], [0.1, -0.75], [0.1, -_W * 0.8],
                         [-1, -_W * 0.8]])], []),
}
assert set(OUTLINES) == set(SHAPES)


def shape_mask(scene: Scene, resolution: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1], (R, R) float32: polygons drawn supersampled (>= 256 px, >= 2x), box-reduced."""
    factor = max(1, math.ceil(256 / resolution)) if resolution < 256 else 2
    side = resolution * factor
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    cos, sin = math.cos(scene.angle), math.sin(scene.angle)
    rot = np.array([[cos, sin], [-sin, cos]])
    fills, holes = OUTLINES[SHAPES[scene.shape]]
    for polys, value in ((fills, 255), (holes, 0)):
        for poly in polys:
            xy = (poly @ rot) * scene.radius
            pts = np.stack([scene.cx + xy[:, 0], scene.cy - xy[:, 1]], axis=1) * side
            draw.polygon([tuple(p) for p in pts.tolist()], fill=value)
    if factor > 1:
        canvas = canvas.reduce(factor)
    return np.asarray(canvas, dtype=np.float32) * (1 / 255)


def _tones(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    base = np.array(COLORS[scene.background_color][1], dtype=np.float32) * scene.bg_gain
    toward = 0.0 if base.mean() > 128 else 255.0  # the second tone is darker on light colours, lighter on dark
    return base, base + 0.4 * (toward - base)


def background(scene: Scene, resolution: int) -> np.ndarray:
    """(R, R, 3) float32 in [0, 255]: mixes the two tones by a kind-specific weight map in [0, 1]."""
    a, b = _tones(scene)
    r = resolution
    u = (np.arange(r, dtype=np.float32) + 0.5) / r
    x, y = u[None, :], u[:, None]
    kind = scene.background
    if kind == "solid":
        return np.broadcast_to(a, (r, r, 3)).astype(np.float32)
    if kind == "gradient":
        (theta,) = scene.bg_param
        t = (x - 0.5) * math.cos(theta) + (y - 0.5) * math.sin(theta)
        w = np.clip(t / 1.42 + 0.5, 0, 1)
    elif kind == "stripes":
        period, theta = scene.bg_param
        t = x * math.cos(theta) + y * math.sin(theta)
        w = (np.floor(t / period) % 2).astype(np.float32)
    elif kind == "checker":
        (cell,) = scene.bg_param
        w = ((np.floor(x / cell) + np.floor(y / cell)) % 2).astype(np.float32)
    else:  # noise: a coarse random grid, bicubic-upsampled, so the texture is the same at every resolution
        grid = int(scene.bg_param[0])
        rng = random.Random(scene.noise_seed)
        coarse = np.array([int(rng.random() * 256) for _ in range(grid * grid)], np.uint8).reshape(grid, grid)
        w = np.asarray(Image.fromarray(coarse).resize((r, r), Image.BICUBIC), dtype=np.float32) * (1 / 255)
    w = np.broadcast_to(w, (r, r))[..., None]
    return a + (b - a) * w


def render(scene: Scene, resolution: int) -> np.ndarray:
    """The scene as a uint8 (R, R, 3) RGB array."""
    if resolution < 8:
        raise ValueError(f"resolution {resolution}: expected at least 8 px")
    alpha = shape_mask(scene, resolution)[..., None]
    fg = np.array(COLORS[scene.color][1], dtype=np.float32) * scene.fg_gain
    img = background(scene, resolution)
    img += (fg - img) * alpha
    img += 0.5
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def sample(seed: int, split: str, index: int, resolution: int = 64) -> tuple[np.ndarray, str, dict[str, int]]:
    """(image uint8 (R, R, 3), caption, labels) of image `index` of `split`; a pure function of its arguments."""
    scene = draw_scene(seed, split, index)
    return render(scene, resolution), scene.caption, scene.labels

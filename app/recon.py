"""Reconstructions: original | reconstruction | error for chosen validation images, the same images for every
configuration. Two sources: the grids `vtp evaluate` saved (the first val images, triplets laid out by
vtp.eval.grids.save_grid) and on-demand reconstruction with the saved tokenizer. torch is imported only here,
and only when a reconstruction is asked for.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PAD = 2  # torchvision make_grid's padding in save_grid
PER_ROW = 4  # triplets per grid row (save_grid's default)


def saved_grid(run_dir: Path) -> Path | None:
    p = run_dir / "eval" / "grids" / "reconstruction.png"
    return p if p.is_file() else None


def grid_count(path: Path, resolution: int, per_row: int = PER_ROW) -> int:
    """How many triplets a saved grid holds (full rows; the last row may be partly blank)."""
    with Image.open(path) as im:
        rows = (im.height - PAD) // (resolution + PAD)
    return rows * per_row


def grid_triplet(path: Path, index: int, resolution: int, per_row: int = PER_ROW) -> list[np.ndarray]:
    """The (original, reconstruction, error) tiles of image `index` cut out of a saved grid."""
    step = resolution + PAD
    row, slot = divmod(index, per_row)
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    y = PAD + row * step
    tiles = []
    for j in range(3):
        x = PAD + (slot * 3 + j) * step
        tile = arr[y:y + resolution, x:x + resolution]
        if tile.shape[:2] != (resolution, resolution):
            raise ValueError(f"{path}: no image {index} at {resolution} px (grid is {arr.shape[1]}x{arr.shape[0]})")
        tiles.append(tile)
    return tiles


def val_images(config: dict, indices: list[int], project: Path) -> tuple[np.ndarray, str]:
    """uint8 (N, R, R, 3) validation images at `indices` from the run's data set (the library's eval loader: the
    same first-N order `vtp evaluate` scores), and where they came from. Without shards, a synthetic data set's
    images are drawn by its generator instead, and the source says so."""
    from vtp.config import Config

    data = dict(config.get("data") or {})
    root = Path(data.get("root", "data/shards"))
    data["root"] = str(root if root.is_absolute() else project / root)
    cfg = Config.model_validate({**config, "data": data})
    need = max(indices) + 1
    try:
        from vtp.data.loader import eval_loader

        batch = next(iter(eval_loader(cfg, "val", batch_size=need, num_samples=need)))
        images = ((batch["image"] + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        if len(images) < need:
            raise FileNotFoundError(f"only {len(images)} val images")
        return images[indices], f"val split of {cfg.shard_dir}"
    except (FileNotFoundError, StopIteration) as e:
        if cfg.data.dataset != "synthetic":
            raise FileNotFoundError(f"no validation shards for {cfg.data.dataset} in {cfg.shard_dir}: {e}") from None
        from vtp.data.synthetic import sample

        res = cfg.data.resolution
        images = np.stack([sample(cfg.seed, "val", i, res)[0] for i in indices])
        return images, f"synthetic generator (seed {cfg.seed}, val indices; no shards in {cfg.shard_dir})"


def load_tokenizer(directory: Path):
    from vtp.models.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(directory).eval()


def reconstruct(tokenizer, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reconstructions, error maps, per-image PSNR) for uint8 (N, R, R, 3) images, as `vtp evaluate` computes
    them (clamped, quantised to uint8, error |a - b| x vtp.eval.grids.ERROR_GAIN)."""
    import torch

    from vtp.eval.grids import error_map
    from vtp.eval.image_metrics import psnr, to_uint8

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    with torch.no_grad():
        rec = to_uint8(tokenizer.decode(tokenizer.encode(x)))
    orig = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    err = error_map(orig, rec)
    scores = psnr(orig, rec).numpy()
    nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()  # noqa: E731
    return nhwc(rec), nhwc(err), scores


def compose(rows: list[list[np.ndarray]], scale: int = 1) -> Image.Image:
    """One PNG of rows of equally sized tiles (what the page shows, for download)."""
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + PAD) + PAD, cols * (w + PAD) + PAD, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, tile in enumerate(r):
            y, x = PAD + i * (h + PAD), PAD + j * (w + PAD)
            canvas[y:y + h, x:x + w] = tile[:h, :w]
    img = Image.fromarray(canvas)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img

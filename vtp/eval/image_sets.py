"""Image sets read in batches, never whole: an `.npz` of uint8 NHWC images (`arr_0`, the ADM evaluator's layout,
as `vtp sample` writes it) or a folder of PNG/JPEG files (sorted by name).

np.load would read a whole .npz member into memory; an uncompressed (ZIP_STORED) member is a plain .npy at a
fixed offset in the archive, so it is memory-mapped instead. A compressed .npz is refused with the fix.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ImageSet:
    def __len__(self) -> int:
        raise NotImplementedError

    def batch(self, lo: int, hi: int) -> torch.Tensor:
        """Images lo..hi-1 as uint8 (B, 3, H, W)."""
        raise NotImplementedError

    def batches(self, rows: range, size: int):
        for lo in range(rows.start, rows.stop, size):
            yield self.batch(lo, min(rows.stop, lo + size))


def _npz_member(path: Path, member: str = "arr_0.npy") -> np.ndarray:
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise ValueError(f"{path}: no {member[:-4]} array (has {', '.join(zf.namelist())})") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{path}: {member} is compressed and cannot be read in batches; re-save it with "
                             f"np.savez (not savez_compressed)")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the local file header: name and extra-field lengths at bytes 26..29
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if fortran or dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{path}: expected uint8 (N, H, W, 3) images in {member}, got {dtype} {shape}")
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape)


class NpzImages(ImageSet):
    def __init__(self, path: Path):
        self.path, self.array = path, _npz_member(path)

    def __len__(self) -> int:
        return self.array.shape[0]

    def batch(self, lo: int, hi: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[lo:hi])).permute(0, 3, 1, 2).contiguous()


class FolderImages(ImageSet):
    def __init__(self, path: Path):
        self.path = path
        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in EXTENSIONS)
        if not self.files:
            raise ValueError(f"{path}: no images ({', '.join(EXTENSIONS)})")

    def __len__(self) -> int:
        return len(self.files)

    def batch(self, lo: int, hi: int) -> torch.Tensor:
        images = [np.asarray(Image.open(p).convert("RGB")) for p in self.files[lo:hi]]
        shapes = {a.shape for a in images}
        if len(shapes) > 1:
            raise ValueError(f"{self.path}: images of different sizes {sorted(shapes)} in one batch")
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def open_images(path: str | Path) -> ImageSet:
    path = Path(path)
    if path.is_dir():
        return FolderImages(path)
    if path.suffix == ".npz" and path.is_file():
        return NpzImages(path)
    raise FileNotFoundError(f"{path}: expected an .npz of uint8 NHWC images or a folder of images")

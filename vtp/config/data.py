"""`data:` (where shards live and how ingest writes them) and `aug:` (multi-crop views and iBOT masks)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vtp.config.base import Section, fail


class DataConfig(Section):
    dataset: str = "synthetic"  # folder under `root` holding {train,val}-NNNNNN.tar + manifest.json
    root: str = "data/shards"
    resolution: int = Field(64, ge=8, le=4096)
    synthetic_train: int = Field(8192, ge=1)  # images the `synthetic` source generates per split
    synthetic_val: int = Field(1024, ge=1)
    shard_size: int = Field(1000, ge=1)
    shuffle_buffer: int = Field(2000, ge=0)
    loader_workers: int = Field(0, ge=0)
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)  # folder/pairs/shards sources: split by image hash
    image_format: Literal["png", "jpg"] = "png"  # how ingest stores images in the shards
    jpeg_quality: int = Field(95, ge=1, le=100)
    max_image_pixels: int = Field(89_478_485, ge=1)  # larger inputs are skipped as decompression bombs (PIL's limit)
    caption_template: str = "a photo of a {label}."  # folder source: caption of an image without a .txt beside it


class AugConfig(Section):
    """DINOv2 multi-crop, photometric augmentations and iBOT block masking (sizes in pixels; scales are area
    fractions; probabilities in [0, 1]). The photometric defaults are DINOv2's (vtp.data.photometric)."""
    global_crop_size: int = Field(64, ge=8)
    local_crop_size: int = Field(32, ge=8)
    local_crops: int = Field(4, ge=0)
    global_crop_scale: tuple[float, float] = (0.32, 1.0)
    local_crop_scale: tuple[float, float] = (0.05, 0.32)
    mask_probability: float = Field(0.5, ge=0.0, le=1.0)
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    hflip: bool = True
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect-ratio range of RandomResizedCrop-style crops
    mask_min_block: int = Field(4, ge=1)  # smallest masked block, in patches (DINOv2's min_num_patches)
    photometric: bool = True  # master switch: off gives the crops and flips alone
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    color_jitter_p: float = Field(0.8, ge=0.0, le=1.0)
    grayscale_p: float = Field(0.2, ge=0.0, le=1.0)
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)  # first global view, second global view, local views
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # px at a global crop of blur_reference_size px (scaled to ours)
    blur_reference_size: int = Field(224, ge=1)  # DINOv2's global crop size, where blur_sigma is in its own px
    solarize_p: float = Field(0.2, ge=0.0, le=1.0)  # second global view only

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("global_crop_scale", "local_crop_scale", "mask_ratio"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                fail(name, [lo, hi], "need 0 <= min <= max <= 1")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            fail("crop_ratio", list(self.crop_ratio), "need 0 < min <= max")
        if min(self.color_jitter) < 0 or self.color_jitter[3] > 0.5:
            fail("color_jitter", list(self.color_jitter), "need brightness, contrast, saturation >= 0 and "
                 "0 <= hue <= 0.5")
        if not all(0.0 <= p <= 1.0 for p in self.blur_p):
            fail("blur_p", list(self.blur_p), "need three probabilities in [0, 1] (global 1, global 2, local)")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            fail("blur_sigma", list(self.blur_sigma), "need 0 < min <= max")
        return self

"""Tokenizer evaluation: reconstruction (PSNR, SSIM, LPIPS, FD/KID) and understanding (zero-shot, linear probes).

Metric layer (no tokenizer needed): `image_metrics` (PSNR/SSIM = skimage's), `fidelity` (FD/KID via torch-fidelity,
named by feature space; `effnet_extractor` is the offline space), `zeroshot`, `probe`, `grids`, `report`.
Drivers: `reconstruction` (per-batch scoring), `features` (what is read from a tokenizer), `evaluate` (the stage).
Images are float (B, 3, H, W) in [-1, 1] inside the library and uint8 only at file / torch-fidelity boundaries.
"""

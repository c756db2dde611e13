"""vtp: pre-training visual tokenizers for generation (VTP + ViTok), at laptop and cluster scale."""
__version__ = "0.1.0"

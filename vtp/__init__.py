"""vtp: pre-training visual tokenizers for generation (VTP + ViTok), at laptop and cluster scale."""
import os as _os

# Bitwise-reproducible CPU runs (a resumed run equals an uninterrupted one): by default MKL's sgemm may give
# different last bits from one call to the next on the same inputs (~1 run in 10 of the 4-step tiny training
# differed by 1e-8). Strict conditional numerical reproducibility fixes that at the same speed here (interleaved
# sgemm timings equal within noise; COMPATIBLE was 4x slower). MKL reads this at its first call, not at import;
# a value the user set wins.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"

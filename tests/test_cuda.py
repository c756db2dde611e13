"""The CUDA paths (bf16 autocast, the GPU attention kernels' FLOP count, the datasheet peak): skipped without a GPU,
run by `benchmarks/gpu.sh` (`pytest -m cuda`) whenever a CUDA machine is at hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vtp.models.flops import FlopCounterMode
from vtp.models.tokenizer import Tokenizer
from vtp.train.accounting import known_peak
from vtp.train.pretrain import run_pretrain

from train_utils import tiny_config, tiny_loader

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_attention_flops_are_counted_for_the_gpu_kernels():
    q = torch.randn(2, 4, 64, 32, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    with FlopCounterMode(display=False) as fwd:
        out = F.scaled_dot_product_attention(q, q, q)
    with FlopCounterMode(display=False) as both:
        F.scaled_dot_product_attention(q, q, q).sum().backward()
    expected = 2 * 2 * (2 * 4 * 64 * 64 * 32)  # QK^T and PV, 2 FLOPs per multiply-accumulate
    assert fwd.get_total_flops() == expected and both.get_total_flops() > 2 * expected
    assert out.dtype == torch.bfloat16


def test_bf16_encoder_agrees_with_fp32():
    torch.manual_seed(0)
    tok = Tokenizer.from_spec("tiny").cuda().eval()
    x = torch.rand(4, 3, 32, 32, device="cuda") * 2 - 1
    with torch.no_grad():
        ref = tok.encode(x).float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = tok.encode(x).float()
    assert F.cosine_similarity(ref.flatten(1), low.flatten(1)).min() > 0.99


def test_a_pretraining_run_uses_bf16_and_reports_utilisation(tmp_path):
    cfg = tiny_config(tmp_path, "vtp", steps=3)
    assert cfg.train.precision == "auto"  # bf16 autocast on CUDA
    m = run_pretrain(cfg, resume=False, loader=tiny_loader(cfg))
    assert m["step"] == 3 and math.isfinite(m["loss"]) and m["flops_per_step"] > 0
    name = torch.cuda.get_device_name()
    if known_peak(name, bf16=True) is not None:  # A100/H100/H200: MFU against the datasheet's dense bf16 peak
        assert m["peak_source"].startswith("datasheet") and 0 < m["mfu"] < 1
    else:
        assert 0 < m["mfu_vs_matmul"]


def test_rms_norm_on_cuda_is_torchs_fused_op_with_the_cpu_values():
    """On CUDA RmsNorm is one autograd node (torch's fused kernels), with the hand-written CPU path's values."""
    from vtp.models.norm import RmsNorm

    torch.manual_seed(0)
    norm = RmsNorm(192, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    x, g = torch.randn(4, 65, 192) * 3, torch.randn(4, 65, 192)
    outs = []
    for device in ("cpu", "cuda"):
        norm.to(device)
        xi = x.to(device).requires_grad_()
        y = norm(xi)
        if device == "cuda":
            assert {type(f).__name__ for f, _ in y.grad_fn.next_functions if f is not None} == {"AccumulateGrad"}
        outs.append([t.cpu() for t in (y, *torch.autograd.grad(y, [xi, norm.weight], g.to(device)))])
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)

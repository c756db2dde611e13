"""CLIP loss: open_clip's ClipLoss (local loss, gather with grad); DDP over 2 gloo processes equals one process."""
from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from vtp.losses.clip import MAX_LOG_SCALE, ClipLoss, clamp_logit_scale_


def _embeddings(b: int = 6, e: int = 8, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, e, generator=g, dtype=dtype), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(b, e, generator=g, dtype=dtype), dim=-1).requires_grad_()
    return img, txt


def test_matches_open_clip_values_and_gradients():
    from open_clip.loss import ClipLoss as OpenClipLoss

    img, txt = _embeddings()
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    ours = ClipLoss()(img, txt, log_scale)
    ours.backward()
    ours_grads = [t.grad.clone() for t in (img, txt, log_scale)]

    img2, txt2 = (t.detach().clone().requires_grad_() for t in (img, txt))
    log_scale2 = log_scale.detach().clone().requires_grad_()
    ref = OpenClipLoss()(img2, txt2, log_scale2.exp())
    ref.backward()
    torch.testing.assert_close(ours, ref)
    for a, b in zip(ours_grads, (img2.grad, txt2.grad, log_scale2.grad)):
        torch.testing.assert_close(a, b)


def test_perfectly_aligned_pairs_at_max_scale_give_near_zero_loss():
    eye = torch.eye(4)
    assert ClipLoss()(eye, eye, torch.tensor(MAX_LOG_SCALE)).item() < 1e-3
    # swapped captions: every image scores its own caption lowest-but-one -> loss far above log(B)
    assert ClipLoss()(eye, eye.roll(1, 0), torch.tensor(MAX_LOG_SCALE)).item() > math.log(4)


def test_the_scale_is_clamped_after_the_step_not_inside_the_loss():
    """Past ln 100 the loss still sees the parameter (a clamp inside the loss would zero its gradient forever, so
    it could never come back down); OpenCLIP clamps the parameter in place after the optimizer step."""
    img, txt = _embeddings()
    high = torch.tensor(math.log(1000.0), requires_grad=True)
    ClipLoss()(img, txt, high).backward()
    assert high.grad != 0
    param = torch.nn.Parameter(torch.tensor([math.log(1000.0)]))
    clamp_logit_scale_(param)
    assert param.item() == pytest.approx(MAX_LOG_SCALE) and param.requires_grad
    low = torch.nn.Parameter(torch.tensor([-1.0]))
    clamp_logit_scale_(low)
    assert low.item() == 0.0  # and never below a temperature of 1


def test_shape_errors():
    with pytest.raises(ValueError, match=r"same \(B, E\) shape"):
        ClipLoss()(torch.zeros(4, 8), torch.zeros(3, 8), torch.tensor(1.0))
    with pytest.raises(ValueError, match="log_scale must be a scalar"):
        ClipLoss()(torch.zeros(4, 8), torch.zeros(4, 8), torch.zeros(2))


class _Towers(nn.Module):
    """Two linear 'encoders' and a learnable log temperature: the smallest CLIP model."""

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(5, 4, dtype=torch.float64)
        self.text = nn.Linear(3, 4, dtype=torch.float64)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07), dtype=torch.float64))

    def forward(self, images, texts):
        return F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1), self.log_scale


def _global_batch(n: int = 8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randn(n, 3, generator=g, dtype=torch.float64)


def _model() -> _Towers:
    torch.manual_seed(0)
    return _Towers()


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(_model())
        images, texts = _global_batch()
        b = images.shape[0] // world
        loss = ClipLoss()(*model(images[rank * b:(rank + 1) * b], texts[rank * b:(rank + 1) * b]))
        loss.backward()  # DDP averages the parameter gradients over the ranks
        grads = {k: p.grad for k, p in model.module.named_parameters()}
        torch.save({"loss": loss.detach(), "grads": grads}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_ddp_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    world = 2
    mp.spawn(_ddp_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]

    model = _model()
    loss = ClipLoss()(*model(*_global_batch()))
    loss.backward()
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / world, loss.detach())
    for name, p in model.named_parameters():
        for r in ranks:
            torch.testing.assert_close(r["grads"][name], p.grad, msg=f"gradient of {name}")

"""DINO loss and teacher centering (Sinkhorn-Knopp, softmax with EMA centre), single and 2-process."""
from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vtp.losses.centering import TeacherCentering, sinkhorn_knopp
from vtp.losses.dino import DINOLoss

LN3 = math.log(3.0)


def test_dino_loss_hand_computed():
    """K=2. softmax([0, ln3]) = (1/4, 3/4). Student g0 -> t1, g1 -> t0, local -> t0 and t1."""
    loss = DINOLoss(prototypes=2, student_temp=0.5, centering="softmax")
    student = [torch.tensor([[0.0, LN3]]) * 0.5, torch.tensor([[LN3, 0.0]]) * 0.5, torch.tensor([[0.0, 0.0]])]
    teacher = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    # (g0, t1): -ln(3/4); (g1, t0): -ln(3/4); (local, t0) and (local, t1): ln 2 each; the mean of the 4 pairs
    expected = (2 * math.log(4 / 3) + 2 * math.log(2)) / 4
    assert loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_dino_loss_batch_mean_and_gradient():
    loss = DINOLoss(prototypes=3, student_temp=0.1)
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(4, 3, generator=g, requires_grad=True) for _ in range(3)]
    teacher = [torch.softmax(torch.randn(4, 3, generator=g), -1) for _ in range(2)]
    value = loss(student, teacher)
    pairs = [(0, 1), (1, 0), (2, 0), (2, 1)]
    expected = sum(-(teacher[t] * torch.log_softmax(student[s] / 0.1, -1)).sum(-1).mean() for s, t in pairs) / 4
    torch.testing.assert_close(value, expected)
    value.backward()
    assert all(s.grad is not None for s in student)


def test_dino_loss_input_errors():
    loss = DINOLoss(prototypes=3)
    with pytest.raises(ValueError, match="student_logits\\[1\\] has shape"):
        loss([torch.zeros(2, 3), torch.zeros(2, 4)], [torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="at least one other crop"):
        loss([torch.zeros(2, 3)], [torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="centering"):
        DINOLoss(prototypes=3, centering="mean")


def test_sinkhorn_one_iteration_hand_computed():
    # exp(logits) = [[3, 1], [1, 1]]; /6; columns to 1/2 each: [[3/8, 1/4], [1/8, 1/4]];
    # rows to 1/2 each, then x2: [[3/5, 2/5], [1/3, 2/3]]
    logits = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    expected = torch.tensor([[3 / 5, 2 / 5], [1 / 3, 2 / 3]])
    torch.testing.assert_close(sinkhorn_knopp(logits, temp=1.0, iterations=1), expected)


def test_sinkhorn_marginals():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 4, generator=g) * 3
    for iterations in (3, 200):
        q = sinkhorn_knopp(logits, temp=0.5, iterations=iterations)
        torch.testing.assert_close(q.sum(dim=1), torch.ones(12))  # each target is a distribution
        assert (q >= 0).all()
    # converged: every prototype receives N/K of the mass
    torch.testing.assert_close(q.sum(dim=0), torch.full((4,), 3.0), rtol=0, atol=1e-4)
    # scale-free: huge logits at a low temperature do not overflow
    assert torch.isfinite(sinkhorn_knopp(logits * 1e3, temp=0.04)).all()


def test_softmax_centering_and_center_update():
    c = TeacherCentering(prototypes=2, centering="softmax", momentum=0.9)
    logits = torch.tensor([[1.0, 3.0], [1.0, 1.0]])  # batch mean (1, 2)
    torch.testing.assert_close(c.probs(logits, temp=1.0), torch.softmax(logits, -1))  # centre starts at 0
    c.update(logits)
    torch.testing.assert_close(c.center, torch.tensor([[0.1, 0.2]]))  # 0.9 * 0 + 0.1 * (1, 2)
    torch.testing.assert_close(c.probs(logits, temp=0.5), torch.softmax((logits - c.center) / 0.5, -1))


def test_teacher_probs_carry_no_graph_and_check_shapes():
    loss = DINOLoss(prototypes=4)
    logits = torch.randn(6, 4, requires_grad=True)
    assert not loss.teacher_probs(logits, 0.07).requires_grad
    with pytest.raises(ValueError, match="expected \\(N, 4\\)"):
        loss.teacher_probs(torch.zeros(6, 5), 0.07)


def _global_logits() -> torch.Tensor:
    return torch.randn(8, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


ROWS = (3, 5)  # ranks hold different numbers of rows, as uneven SSL subsets and iBOT masks do


def _dist_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        start = sum(ROWS[:rank])
        local = _global_logits()[start:start + ROWS[rank]]
        centering = TeacherCentering(prototypes=5, centering="softmax", momentum=0.5).double()
        centering.update(local)
        torch.save({"sinkhorn": sinkhorn_knopp(local, temp=0.1), "center": centering.center},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_two_processes_with_uneven_rows_equal_one_process(tmp_path):
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    logits = _global_logits()
    torch.testing.assert_close(torch.cat([r["sinkhorn"] for r in ranks]).double(), sinkhorn_knopp(logits, 0.1).double())
    for r in ranks:
        torch.testing.assert_close(r["center"], 0.5 * logits.mean(dim=0, keepdim=True))

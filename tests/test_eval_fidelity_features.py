"""Generation metrics from features: torch-fidelity's own `calculate_metrics` is the reference; image sets read
in batches equal what numpy reads whole; the rank gather keeps item order with uneven shares."""
from __future__ import annotations

import os
import socket
import zipfile

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from vtp import dist as vdist
from vtp.eval import fidelity
from vtp.eval.image_sets import open_images


def _images(n: int, seed: int, top: int = 255) -> torch.Tensor:
    return (torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * top).to(torch.uint8)


def test_feature_metrics_equal_torch_fidelity():
    import torch_fidelity

    a, b = _images(40, 0), _images(30, 1, top=200)
    space = fidelity.resolve_feature_space("effnetlite0")
    ours = fidelity.distribution_metrics(fidelity.extract([a[:25], a[25:]], space),
                                         fidelity.extract([b], space), space, kid_subset_size=20, is_splits=4)
    ref = torch_fidelity.calculate_metrics(
        input1=fidelity._Uint8Images(a), input2=fidelity._Uint8Images(b), fid=True, kid=True, prc=True, isc=True,
        kid_subset_size=20, isc_splits=4, feature_extractor=space.extractor, cuda=False, cache=False, verbose=False,
        feature_extractor_weights_path=str(space.weights))
    assert ours["fd_effnetlite0"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-5)
    assert ours["kid_effnetlite0"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["precision_effnetlite0"] == pytest.approx(ref["precision"])
    assert ours["recall_effnetlite0"] == pytest.approx(ref["recall"])
    assert ours["is_effnetlite0"] == pytest.approx(ref["inception_score_mean"], rel=1e-6)


def test_npz_and_folder_sets_read_in_batches(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (9, 8, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", arr, np.arange(9))
    s = open_images(tmp_path / "s.npz")
    got = torch.cat(list(s.batches(range(len(s)), 4))).permute(0, 2, 3, 1).numpy()
    assert len(s) == 9 and np.array_equal(got, arr)
    np.savez_compressed(tmp_path / "c.npz", arr)
    with pytest.raises(ValueError, match="compressed"):
        open_images(tmp_path / "c.npz")
    (tmp_path / "png").mkdir()
    for i in range(3):
        Image.fromarray(arr[i]).save(tmp_path / "png" / f"{i:02d}.png")
    assert torch.equal(open_images(tmp_path / "png").batch(0, 3).permute(0, 2, 3, 1), torch.from_numpy(arr[:3]))
    assert zipfile.is_zipfile(tmp_path / "s.npz")
    with pytest.raises(FileNotFoundError, match="expected an .npz"):
        open_images(tmp_path / "missing.npz")


def _gather_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), VTP_DEVICE="cpu")
    vdist.init_distributed()
    rows = vdist.block(7)
    got = vdist.all_gather_rows(torch.arange(7.0)[rows.start:rows.stop, None].repeat(1, 2))
    if rank == 0:
        torch.save(got, out)
    vdist.shutdown()


@pytest.mark.dist
def test_gather_keeps_order_with_uneven_blocks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert [list(vdist.block(7, r, 3)) for r in range(3)] == [[0, 1, 2], [3, 4, 5], [6]]
    mp.spawn(_gather_main, args=(3, port, str(tmp_path / "g.pt")), nprocs=3, join=True)
    assert torch.equal(torch.load(tmp_path / "g.pt", weights_only=True), torch.arange(7.0)[:, None].repeat(1, 2))

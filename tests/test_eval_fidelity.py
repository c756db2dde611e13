"""Frechet distance / KID: equal to a direct torch-fidelity call, honestly named, and moving the right way."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_fidelity
from PIL import Image
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from vtp.data.synthetic import sample
from vtp.eval import fidelity
from vtp.eval.effnet_extractor import EfficientNetLite0Extractor, effnetlite0_weights
from vtp.eval.fidelity import FeatureSpace, find_inception_weights, frechet, resolve_feature_space
from vtp.eval.image_metrics import from_uint8, to_uint8

from fidelity_fakes import FakeExtractor

TINY = "vtp-test-tiny-conv"


class TinyConvExtractor(FakeExtractor):
    """A fixed random conv net pooled by spatial mean and std: a cheap, deterministic feature space that sees
    texture (blur lowers the std), for plumbing and direction tests."""

    DIM = "48"

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(16, 3, 3, 3, generator=g) / 5, requires_grad=False)
        self.w2 = torch.nn.Parameter(torch.randn(24, 16, 3, 3, generator=g) / 12, requires_grad=False)

    def forward(self, x):
        x = x.float() / 127.5 - 1
        x = F.relu(F.conv2d(x, self.w1, stride=2))
        x = F.conv2d(x, self.w2)
        return (torch.cat([x.mean((2, 3)), x.std((2, 3))], 1).double(),)


if TINY not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(TINY, TinyConvExtractor)
TINY_SPACE = FeatureSpace("tinyconv", TINY, None, "48")


def shapes(n: int, res: int = 32, offset: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.stack([sample(0, "val", offset + i, res)[0] for i in range(n)])).permute(0, 3, 1, 2)


def blur(images: torch.Tensor, k: int) -> torch.Tensor:
    x = from_uint8(images)
    return to_uint8(F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1))


def write_folder(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    return folder


def test_frechet_equals_direct_torch_fidelity_on_folders(tmp_path):
    a, b = shapes(40), blur(shapes(40, offset=40), 3)
    da, db = write_folder(a, tmp_path / "a"), write_folder(b, tmp_path / "b")
    direct = torch_fidelity.calculate_metrics(input1=str(da), input2=str(db), fid=True, kid=True, kid_subset_size=20,
                                              feature_extractor=TINY, cuda=False, save_cpu_ram=True, verbose=False,
                                              cache=False)
    ours_folders = frechet(da, db, TINY_SPACE, kid_subset_size=20, device="cpu")
    ours_tensors = frechet(a, b, TINY_SPACE, kid_subset_size=20, device="cpu")
    assert set(ours_folders) == {"fd_tinyconv", "kid_tinyconv", "kid_tinyconv_std"}
    assert direct["frechet_inception_distance"] > 0
    for ours in (ours_folders, ours_tensors):
        assert ours["fd_tinyconv"] == pytest.approx(direct["frechet_inception_distance"], rel=1e-6)
        assert ours["kid_tinyconv"] == pytest.approx(direct["kernel_inception_distance_mean"], rel=1e-6)


def test_frechet_rejects_wrong_inputs(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        frechet(shapes(4).float(), shapes(4), TINY_SPACE, device="cpu")
    with pytest.raises(FileNotFoundError, match="neither"):
        frechet(tmp_path / "missing", shapes(4), TINY_SPACE, device="cpu")


def test_effnetlite0_space_is_named_fd_and_never_fid():
    space = resolve_feature_space("effnetlite0")
    assert (space.fd_key, space.kid_key, space.is_key) == ("fd_effnetlite0", "kid_effnetlite0", "is_effnetlite0")
    assert space.weights == effnetlite0_weights() and space.weights.name == "efficientnet-lite0-57934424.pth"


def test_inception_is_fid_only_with_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match="effnetlite0"):
        resolve_feature_space("inception")
    with pytest.raises(FileNotFoundError, match="inception_weights"):
        resolve_feature_space("inception", tmp_path / "nope.pth")
    explicit = tmp_path / "my-inception.pth"
    explicit.write_bytes(b"not read when resolving")
    space = resolve_feature_space("inception", explicit)
    assert (space.fd_key, space.kid_key, space.weights) == ("fid_inception", "kid_inception", explicit)
    # torch-fidelity's own file in the torch hub cache is found without configuration.
    cached = tmp_path / "torch" / "hub" / "checkpoints" / fidelity.inception_weights_file()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert find_inception_weights() == cached
    assert fidelity.inception_weights_file().startswith("weights-inception-2015-12-05")
    with pytest.raises(ValueError, match="allowed"):
        resolve_feature_space("clip")


def test_inception_weights_must_be_a_plain_state_dict(tmp_path):
    evil = tmp_path / "w.pth"
    torch.save({"obj": Path("x")}, evil)  # a pickled non-tensor object: refused by weights_only
    with pytest.raises(Exception, match="[Ww]eights only|weights_only"):
        frechet(shapes(2), shapes(2), FeatureSpace("inception", "inception-v3-compat", evil, "2048"), device="cpu")


def test_effnetlite0_recognises_a_cat():
    """Weights and preprocessing are right: skimage's chelsea is ImageNet class 285 (Egyptian cat)."""
    from skimage.data import chelsea

    ext = EfficientNetLite0Extractor("x", ["logits", "1280"])
    img = torch.from_numpy(chelsea()).permute(2, 0, 1)[None]
    with torch.no_grad():
        logits, pooled = ext(img)
    assert logits.argmax().item() == 285
    assert pooled.shape == (1, 1280)


def test_blur_raises_fd_and_kid():
    """Two disjoint sets of the same scenes are close; blurring one of them moves it away (cheap feature space)."""
    ref, other = shapes(40), shapes(40, offset=40)
    base = frechet(ref, other, TINY_SPACE, kid_subset_size=20, device="cpu")
    mild = frechet(ref, blur(other, 5), TINY_SPACE, kid_subset_size=20, device="cpu")
    strong = frechet(ref, blur(other, 11), TINY_SPACE, kid_subset_size=20, device="cpu")
    assert base["fd_tinyconv"] < mild["fd_tinyconv"] < strong["fd_tinyconv"]
    assert base["kid_tinyconv"] < mild["kid_tinyconv"] < strong["kid_tinyconv"]


@pytest.mark.slow  # numpy's eigvals on 1280 x 1280 covariances inside torch-fidelity: ~10-20 s per distance here
def test_blur_raises_fd_effnetlite0():
    """The reconstruction setting: originals against blurred copies of themselves, mild then strong."""
    ref = shapes(16, 32)
    mild = frechet(blur(ref, 3), ref, "effnetlite0", device="cpu")["fd_effnetlite0"]
    strong = frechet(blur(ref, 7), ref, "effnetlite0", device="cpu")["fd_effnetlite0"]
    assert 0 < mild and strong > 1.3 * mild

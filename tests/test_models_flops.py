"""Measured parameters and MACs against the published numbers (ViTok Table 1, VTP METHOD.md 1.1 / Table 1)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vtp.cli import app
from vtp.models.flops import CONVENTION, measure
from vtp.models.registry import get_spec
from vtp.models.tokenizer import Tokenizer

# ViTok Table 1 / Table 3 at 256 px, p16: (params in M, "GFLOPs" = G multiply-accumulates, METHOD.md 4.5).
# A single tower is patch embed + blocks + norm + in/out projection: our encoder or decoder component.
VITOK_TOWERS = {"s": (43.3, 11.6), "b": (85.8, 23.1), "l": (383.7, 101.8)}


def rel(measured: float, published: float) -> float:
    return abs(measured - published) / published


@pytest.mark.parametrize("tower", ["s", "b", "l"])
def test_vitok_towers_match_table_1(tower):
    params, gmacs = VITOK_TOWERS[tower]
    report = measure(get_spec(f"vitok-{tower}"), 256)
    for side in ("encoder", "decoder"):
        comp = report["components"][side]
        assert rel(comp["params"] / 1e6, params) < 0.02, (side, comp["params"])
        assert rel(comp["macs"] / 1e9, gmacs) < 0.02, (side, comp["macs"])


def test_vitok_s_b_16_total_matches_table_1():
    total = measure(get_spec("vitok-s-b/16"), 256)["total"]
    assert rel(total["params"] / 1e6, 129.0) < 0.02 and rel(total["macs"] / 1e9, 34.8) < 0.02, total


def test_vitok_s_b_16_at_512px_matches_table_4():
    total = measure(get_spec("vitok-s-b/16"), 512)["total"]
    assert rel(total["macs"] / 1e9, 160.8) < 0.02, total  # 1024 tokens: attention is ~18% of it


def test_vtp_l_encoder_and_decoders():
    comps = measure(get_spec("vtp-l-d64"), 256)["components"]
    assert rel(comps["encoder"]["params"] / 1e6, 303.5) < 0.01
    assert rel(comps["text"]["params"] / 1e6, 123.7) < 0.01  # OpenCLIP 12 x 768 text tower
    # VTP Table 1: symmetric ViT-L / ViT-B auto-encoders (encoder + decoder) have 607.2M / 171.2M parameters
    assert rel((comps["encoder"]["params"] + comps["decoder"]["params"]) / 1e6, 607.2) < 0.01
    b = measure(get_spec("vtp-b-d64"), 256)["components"]
    assert rel((b["encoder"]["params"] + b["decoder"]["params"]) / 1e6, 171.2) < 0.01
    dec4 = measure(get_spec("vtp-l-d64-dec4l"), 256)["components"]["decoder"]
    assert rel(dec4["params"] / 1e6, 51.3) < 0.01  # 4-block ViT-L scaling-study decoder (METHOD.md 1.1)


def test_report_layout_and_totals_cover_every_parameter():
    report = measure(get_spec("tiny"), 64)
    assert set(report) == {"name", "resolution", "convention", "components", "total"}
    assert report["convention"] == CONVENTION and report["name"] == "tiny" and report["resolution"] == 64
    assert set(report["components"]) == {"encoder", "decoder", "text", "clip_head", "dino_head"}
    for r in (*report["components"].values(), report["total"]):
        assert set(r) - {"blocks_flops"} == {"params", "macs", "flops"} and r["flops"] == 2 * r["macs"]
    assert 0 < report["components"]["encoder"]["blocks_flops"] < report["components"]["encoder"]["flops"]
    n = sum(p.numel() for p in Tokenizer.from_spec("tiny").parameters())
    assert report["total"]["params"] == n


def test_encoder_macs_match_the_closed_form():
    """tiny at 64 px: 64 tokens of width 64, 1 CLS; linear MACs per token + attention 2 * T^2 * D per block."""
    spec, t = get_spec("tiny"), 65
    d, hid = 64, spec.encoder.mlp_hidden
    per_token_block = d * 3 * d + d * d + d * 2 * hid + hid * d
    expected = 2 * (t * per_token_block + 2 * t * t * d) + 64 * (3 * 8 * 8 * d) + 64 * d * spec.bottleneck_dim
    assert measure(spec, 64)["components"]["encoder"]["macs"] == expected


def test_measure_rejects_a_resolution_the_patch_does_not_divide():
    with pytest.raises(ValueError, match="multiple of the patch size 8, got 60"):
        measure(get_spec("tiny"), 60)


def test_cli_flops_json_and_errors():
    runner = CliRunner()
    res = runner.invoke(app, ["flops", "tiny", "--resolution", "64", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["total"] == measure(get_spec("tiny"), 64)["total"]
    res = runner.invoke(app, ["flops", "vtp-xxl"])
    assert res.exit_code == 2 and "unknown model size 'vtp-xxl'" in res.output


def test_measure_builds_on_the_meta_device(monkeypatch):
    """Large sizes must not allocate: every parameter of the measured model lives on the meta device."""
    import vtp.models.flops as flops

    built = []
    original = Tokenizer.from_spec.__func__
    monkeypatch.setattr(Tokenizer, "from_spec", classmethod(lambda cls, *a, **k: built.append(original(cls, *a, **k))
                                                            or built[-1]))
    flops._measure.cache_clear()
    measure(get_spec("vitok-l-l/8"), 256)  # 767M parameters, 1024 tokens
    assert len(built) == 1 and {p.device.type for p in built[0].parameters()} == {"meta"}

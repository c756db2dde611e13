"""The papers' scaling claims checked against this study's numbers: one verdict per claim, with its evidence.

Verdicts: HOLDS, FAILS ("does not hold at this scale") or UNTESTABLE ("cannot be tested by this study", with the
reason). A verdict rests on the fits' bootstrap intervals (vtp.report.fits), never on a point estimate alone; an
interval that includes 0 means no trend was detected, which is what "stalls" claims and nothing more.
"""
from __future__ import annotations

from vtp.report.collect import number
from vtp.report.fits import groups, objectives_of

HOLDS, FAILS, UNTESTABLE = "holds at this scale", "does not hold at this scale", "cannot be tested by this study"
EQUAL_FLOPS = 0.02  # configurations within 2% of each other's pretraining FLOPs count as equal compute
R2_MIN = 0.8
VITOK_SRC = "ViTok, METHOD.md §4.4 (F1)"


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def fmt_ci(ci) -> str:
    return "no interval" if not ci else f"95% CI [{fmt(ci[0])}, {fmt(ci[1])}]"


def fd_key(rows: list[dict], part: str) -> str | None:
    """The Frechet-distance column of `part` ('eval' = rFD, 'generation' = gFD), by feature space preference."""
    keys = {k for r in rows for k in r if k.startswith(f"{part}.")}
    for k in (f"{part}.fd_effnetlite0", f"{part}.fid_inception"):
        if k in keys:
            return k
    return next((k for k in sorted(keys) if k.startswith((f"{part}.fd_", f"{part}.fid_"))), None)


def find(fits: list[dict], metric: str | None, group: str, x: str) -> dict | None:
    return next((f for f in fits if f["metric"] == metric and f["group"] == group and f["x"] == x), None)


def _claim(cid: str, source: str, text: str, verdict: str, evidence: list[str], reason: str = "") -> dict:
    return {"id": cid, "source": source, "claim": text, "verdict": verdict, "evidence": evidence, "reason": reason}


def _trend(fits, rows, metric, want_groups, sign_ok) -> tuple[list[str], list[bool], list[str]]:
    """Per group: an evidence line, and for groups with an interval whether `sign_ok(ci)`; else why not."""
    evidence, results, why = [], [], []
    for g in want_groups:
        f = find(fits, metric, g, "model_total_flops")
        if f is None:
            why.append(f"{g}: not tested: no {metric} values")
        elif f["exponent_ci"] is None:
            why.append(f"{g}: {metric}: not tested: {f['note'] or 'no interval'}")
        else:
            ok = sign_ok(f["exponent_ci"])
            results.append(ok)
            evidence.append(f"{g}: {metric} ~ FLOPs^b, b = {fmt(f['exponent'])} ({fmt_ci(f['exponent_ci'])}), "
                            f"n = {f['n']}, R^2 = {fmt(f['r2'])}" + (f"; {f['note']}" if f["note"] else ""))
    return evidence, results, why


def _verdict(cid, src, text, evidence, results, why, nothing: str) -> dict:
    if not results:
        return _claim(cid, src, text, UNTESTABLE, why, "; ".join(why) or nothing)
    return _claim(cid, src, text, HOLDS if all(results) else FAILS, evidence + why)


def _groups(rows, pred) -> list[str]:
    """The FLOPs-fit groups (objectives, E) whose objectives satisfy `pred`; a lone configuration (an E sweep's
    point off the budget line) only when no group has two."""
    want = {g: m for g, m in groups(rows).items() if pred(objectives_of(g).split("+"))}
    lines = [g for g, m in want.items() if len(m) > 1]
    return lines or list(want)


def generation_scales(rows, fits) -> dict:
    text = "With CLIP and/or SSL objectives, generation FD falls as tokenizer pretraining FLOPs grow."
    src = "VTP, METHOD.md §2.5 (65.8% gFID drop for 10x FLOPs) and §3 (Fig. 5)"
    metric = fd_key(rows, "generation")
    want = _groups(rows, lambda o: "clip" in o or "ssl" in o)
    if metric is None or not want:
        why = "no generation metrics (runs/<cfg>/generation/summary.json)" if metric is None else \
            "no configuration with a clip or ssl objective"
        return _claim("vtp.generation_scales", src, text, UNTESTABLE, [], why)
    ev, res, why = _trend(fits, rows, metric, want, lambda ci: ci[1] < 0)
    return _verdict("vtp.generation_scales", src, text, ev, res, why, "")


def ae_stalls(rows, fits) -> dict:
    text = "A reconstruction-only auto-encoder's generation FD stops improving (even worsens) with more FLOPs."
    src = "VTP, METHOD.md §2.5 (AE 'stagnates very early') and §3 (Fig. 4: gFID 55.04 -> 58.56)"
    metric = fd_key(rows, "generation")
    want = _groups(rows, lambda o: o == ["rec"])
    if metric is None or not want:
        why = "no generation metrics" if metric is None else "no reconstruction-only (AE) configuration"
        return _claim("vtp.ae_stalls", src, text, UNTESTABLE, [], why)
    ev, res, why = _trend(fits, rows, metric, want, lambda ci: ci[1] >= 0)
    c = _verdict("vtp.ae_stalls", src, text, ev, res, why, "")
    if c["verdict"] == HOLDS:
        c["evidence"].append("an interval reaching 0 means no improvement was detected at this n, not proof of none")
    return c


def _pairs(rows) -> list[tuple[dict, dict, str]]:
    """(VTP row, AE row, how they are tied): train.equal_compute_with ties, or FLOPs within EQUAL_FLOPS."""
    by, out, seen = {r["config"]: r for r in rows}, [], set()
    for r in rows:
        other = by.get(r.get("equal_compute_with") or "")
        if other is not None:
            out.append((r, other, f"train.equal_compute_with: {r['config']} -> {other['config']}"))
    for a in rows:
        for b in rows:
            fa, fb = number(a.get("model_total_flops")), number(b.get("model_total_flops"))
            if a is not b and fa and fb and abs(fa - fb) <= EQUAL_FLOPS * max(fa, fb):
                out.append((a, b, f"FLOPs within {EQUAL_FLOPS:.0%}"))
    kept = []
    for a, b, how in out:
        vtp, ae = (a, b) if a.get("kind") == "VTP" else (b, a)
        key = (vtp["config"], ae["config"])
        if vtp.get("kind") == "VTP" and ae.get("kind") == "AE-only" and key not in seen:
            seen.add(key)
            kept.append((vtp, ae, how))
    return kept


def equal_compute(rows, fits) -> dict:
    text = "At equal pretraining compute, the VTP tokenizer gives lower generation FD than the plain AE."
    src = "VTP, METHOD.md §3 (Fig. 5, equal budgets; Fig. 7b: AE ~57 vs VTP 26-31)"
    metric, ev, res = fd_key(rows, "generation"), [], []
    pairs = _pairs(rows)
    if metric is None or not pairs:
        why = "no generation metrics" if metric is None else \
            "no VTP/AE pair at equal compute (train.equal_compute_with or FLOPs within 2%)"
        return _claim("vtp.equal_compute", src, text, UNTESTABLE, [], why)
    for vtp, ae, how in pairs:
        fv, fa = number(vtp.get(metric)), number(ae.get(metric))
        xv, xa = number(vtp.get("model_total_flops")), number(ae.get("model_total_flops"))
        ratio = f"FLOPs ratio {xv / xa:.3f}" if xv and xa else "FLOPs not measured for both"
        head = f"{vtp['config']} vs {ae['config']} ({how}; {ratio})"
        if fv is None or fa is None:
            ev.append(f"{head}: {metric} missing for {vtp['config'] if fv is None else ae['config']}")
        elif xv and xa and abs(xv - xa) > EQUAL_FLOPS * max(xv, xa):
            ev.append(f"{head}: measured FLOPs differ by more than 2%: not an equal-compute comparison")
        else:
            res.append(fv < fa)
            ev.append(f"{head}: {metric} {fmt(fv)} vs {fmt(fa)}")
    if not res:
        return _claim("vtp.equal_compute", src, text, UNTESTABLE, ev, "no pair with both FDs at equal FLOPs")
    ev.append("single runs: no interval on the difference (no seed repeats); FD is biased upward at small n")
    return _claim("vtp.equal_compute", src, text, HOLDS if all(res) else FAILS, ev)


def understanding_scales(rows, fits) -> dict:
    text = "Understanding (zero-shot accuracy, bottleneck linear probe) improves with pretraining FLOPs."
    src = "VTP, METHOD.md §3 (Fig. 5: understanding, rFID and gFID all improve with FLOPs)"
    ev, res, why = [], [], []
    for metric, pred in (("eval.zeroshot_top1", lambda o: "clip" in o),
                         ("eval.probe_bottleneck_top1", lambda o: "clip" in o or "ssl" in o)):
        want = _groups(rows, pred)
        e, r, w = _trend(fits, rows, metric, want, lambda ci: ci[0] > 0)
        ev, res, why = ev + e, res + r, why + w
    return _verdict("vtp.understanding_scales", src, text, ev, res, why,
                    "no configuration with understanding objectives and understanding metrics")


EXPECTED_SIGN = {"eval.psnr": 1, "eval.ssim": 1}  # larger E -> higher PSNR/SSIM, lower LPIPS and FD


def e_predicts_reconstruction(rows, fits) -> dict:
    text = f"Reconstruction follows log E (E = tokens x channels), R^2 >= {R2_MIN} (ViTok: 0.92-0.98)."
    ev, res, why = [], [], []
    for f in (f for f in fits if f["x"] == "E"):
        if f["distinct_E"] < 3 or f["r2"] is None:
            why.append(f"{f['metric']} ({f['group']}): {f['distinct_E']} distinct E value(s) (needs >= 3)")
            continue
        sign = EXPECTED_SIGN.get(f["metric"], -1)
        ok = f["r2"] >= R2_MIN and f["slope"] * sign > 0
        res.append(ok)
        y = f"ln {f['metric']}" if f["y_scale"] == "log" else f["metric"]
        ev.append(f"{f['group']}: {y} = m ln E + c: m = {fmt(f['slope'])} ({fmt_ci(f['slope_ci'])}), "
                  f"R^2 = {fmt(f['r2'])}, n = {f['n']}" + ("" if f["slope"] * sign > 0 else "; wrong sign"))
    return _verdict("vitok.e_predicts_reconstruction", VITOK_SRC, text, ev, res, why,
                    "no E sweep: no configurations that differ only in E have reconstruction metrics")


CHECKS = (generation_scales, ae_stalls, equal_compute, understanding_scales, e_predicts_reconstruction)


def check_claims(rows: list[dict], fits: list[dict]) -> list[dict]:
    return [check(rows, fits) for check in CHECKS]


def claims_markdown(claims: list[dict]) -> str:
    lines = []
    for c in claims:
        lines.append(f"- **{c['verdict'].upper()}**: {c['claim']} ({c['source']})")
        lines += [f"  - {e}" for e in c["evidence"]]
        if c["verdict"] == UNTESTABLE and c["reason"] and not c["evidence"]:
            lines.append(f"  - why: {c['reason']}")
    counts = {v: sum(c["verdict"] == v for c in claims) for v in (HOLDS, FAILS, UNTESTABLE)}
    lines.append("")
    lines.append("In short: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".")
    return "\n".join(lines)

"""What a study leaves in the Prefect UI: a metrics table per configuration, the report, links to grids and the
DVC remote. Artifact keys keep history across runs (lowercase letters, digits, dashes)."""
from __future__ import annotations

from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

HEADLINE = {"loss", "steps", "model_total_flops", "images_per_s", "mfu", "mfu_vs_matmul", "judge_accuracy"}
# Every number of these; training stages give only their headline numbers.
TABLE_STAGES = {"evaluate", "sample", "evaluate-generation"}


def metrics_rows(results: list[dict]) -> list[dict]:
    rows: dict[str, dict] = {}
    for r in results:
        if not r.get("config"):
            continue
        row = rows.setdefault(r["config"], {"config": r["config"]})
        for key, value in r["metrics"].items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and (r["stage"] in TABLE_STAGES or key in HEADLINE):
                row[f"{r['stage']}.{key}"] = value
    columns = sorted({k for row in rows.values() for k in row} - {"config"})
    return [{"config": c, **{k: row.get(k) for k in columns}} for c, row in rows.items()]


def grid_links(results: list[dict]) -> list[tuple[str, str]]:
    links = []
    for r in results:
        for out in r["outputs"]:
            path = Path(r["workspace"]) / out
            if path.name in {"grids", "samples"} and path.is_dir():
                links.append((f"{r['target']}: {out}", path.as_uri()))
    return links


def publish(prefix: str, results: list[dict], workspace: Path, remote: str | None) -> None:
    rows = metrics_rows(results)
    if rows:
        create_table_artifact(rows, key=f"{prefix}-metrics", description="Metrics per configuration (DVC outputs)")
    for report in sorted((workspace / "reports").glob("*.md")):
        create_markdown_artifact(report.read_text(), key=f"{prefix}-report-{_slug(report.stem)}",
                                 description=f"reports/{report.name}")
    for text, link in grid_links(results):
        create_link_artifact(link, link_text=text, key=f"{prefix}-grid-{_slug(text)}", description="image grid")
    if remote:
        create_link_artifact(remote, link_text=f"DVC remote {remote}", key=f"{prefix}-dvc-remote",
                             description="where `dvc push` put the results; `dvc pull` fetches them")


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(p for p in out.split("-") if p)[:60]

"""Door 2: Prefect orchestration over the DVC pipeline.

A task runs one registry stage through DVC (`dvc repro <stage>@<cfg>`), so a scheduled run never bypasses lineage;
it returns paths and metrics, never models. The library (`vtp/`) knows nothing of Prefect.
"""

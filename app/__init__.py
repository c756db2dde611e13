"""The Streamlit explorer: a read-only window over runs/, reports/ and DVC. Not part of the vtp package.

Data access lives in plain modules (data, curves, dvc, reports, provenance, samples, recon) that ordinary tests
cover; `ui` holds the Streamlit glue (caches, pickers, downloads); Home.py and pages/ stay thin.
"""

"""A fake project (params.yaml + runs/ + judge) the explorer's tests, e2e check and benchmark read."""

"""`vtp report`: pure functions from the runs' metrics files to the scaling table, power-law fits, claim
verdicts and plots (no torch). collect -> fits -> claims -> build (writes reports/); plots is optional
(matplotlib)."""

"""Model evaluation against labels: streaming metrics over a run's outputs."""

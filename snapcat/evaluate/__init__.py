"""Evaluation: metrics, paired statistics against production, the release gate and the report.

:mod:`snapcat.evaluate.gate` holds every rule that blesses or refuses a candidate. Imports the
floors below it (contract, imaging, dataset, train, :mod:`snapcat.stats`) and
:mod:`snapcat.rollout` (to find production's model); nothing imports it but the CLI, the
pipeline's components and :mod:`snapcat.demo`.
"""

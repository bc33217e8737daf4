"""The pure CPR core: resource ledger, stop rule, forecast, gradient-mass maths and resource model.

Nothing here imports torch, Ray, DeepSpeed or MLflow (a test enforces it); numpy and scipy only.
"""

"""The Hydra config groups of a pretraining job, shipped in the package: Hydra reads them as `pkg://orchestrator.conf`."""

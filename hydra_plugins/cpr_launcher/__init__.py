"""cpr's Hydra launcher: `cpr submit -m …` queues every job of a sweep on the cluster's controller."""

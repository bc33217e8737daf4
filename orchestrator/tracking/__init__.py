"""MLflow: the run writer the controller uses, and the read side behind `cpr status` / `cpr stop`."""

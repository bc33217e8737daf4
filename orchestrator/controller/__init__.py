"""The controller: one named Ray actor per cluster that runs jobs, takes reports, decides and writes MLflow."""

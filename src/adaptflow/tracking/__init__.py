"""Everything MLflow: store, runs, model registry, plots. Only this package imports mlflow."""

"""The custom KServe predictor: serves one registered scikit-learn model version."""

"""NumPyro model definitions of TransST (importable as `transst_bayes.models`)."""

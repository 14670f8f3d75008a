"""Model import and conversion, datasets, training, evaluation, export and registry."""

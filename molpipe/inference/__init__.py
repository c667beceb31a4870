"""Using a trained model: ``Predictor`` (SMILES, Mols, files, the applicability domain) and
``evaluate`` (metrics on a labelled file or the run's own test split)."""

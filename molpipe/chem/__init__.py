"""RDKit molecules to MolGraph: featurizers, plans (rounds, rings), rejects."""

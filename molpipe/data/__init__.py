"""CSV/SDF readers, bundled data set registry, graph store, splits, instances."""

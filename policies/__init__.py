"""Policy as code: the engine and the shipped bundles."""

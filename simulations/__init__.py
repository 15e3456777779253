"""Multi-node runs of the real node code, and the benchmarks."""

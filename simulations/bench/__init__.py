"""Benchmarks of the real code on this machine (`yrd bench ...`)."""

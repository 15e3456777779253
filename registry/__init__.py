"""The federated catalogue and the federation manifest."""

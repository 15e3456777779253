"""The counter-facing API shared by both doors: the backend, its gRPC service, and clerk accounts."""

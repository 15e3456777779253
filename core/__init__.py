"""The shared kernel: what every layer needs (errors, clock, keys, wire helpers, the database
engine, TOML helpers). It imports nothing of ours, so registry/, policies/ and node/ can all
stand on it without pulling each other in."""

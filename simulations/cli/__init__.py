"""The `yrd` command groups that drive a whole federation: demo, bench, simulate."""

"""``yrd demo``: the four provincial nodes as separate processes under a small supervisor.

``layout`` prepares the data directory and accounts, ``supervisor`` starts, restarts and
stops node processes, ``sample`` shows one routed application, ``run`` ties them together.
The defaults live here, free of imports, because every ``yrd`` command (``node run``
included) builds the demo's argument parser.
"""

from pathlib import Path

DEFAULT_BASE_PORT = 7100
DEFAULT_DATA_DIR = Path(".demo")

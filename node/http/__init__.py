"""The HTTP front of a node: the counter and operator JSON API (aiohttp)."""

from node.http.app import build_http_app
from node.http.bodies import HttpLimits

__all__ = ["HttpLimits", "build_http_app"]

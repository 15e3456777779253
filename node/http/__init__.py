"""The HTTP front of a node: the counter and operator JSON API (aiohttp)."""

from node.http.app import build_http_app

__all__ = ["build_http_app"]

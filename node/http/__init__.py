"""The HTTP front of a node: the counter and operator JSON API (aiohttp)."""

from node.http.app import build_http_app
from node.http.backend import Attachment, CounterBackend, Document, Principal, SubmitRequest
from node.http.bodies import HttpLimits

__all__ = [
    "Attachment",
    "CounterBackend",
    "Document",
    "HttpLimits",
    "Principal",
    "SubmitRequest",
    "build_http_app",
]

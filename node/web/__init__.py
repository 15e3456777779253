"""The pages people use: the counter, the owner's work queue, the citizen's tracking page and
the operator console, served by the node's own aiohttp server (docs/architecture.md).

``register`` is the one hook the HTTP factory calls; the JSON API under /api/v1 is untouched.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from core.clock import Clock
from node.counter.api import CounterBackend
from node.counter.contract import CounterLimits
from node.counter.users import UserStore
from node.web import (
    bundle_pages,
    certificate_pages,
    clue_pages,
    console_pages,
    counter_pages,
    owner_pages,
    session_pages,
    sharing_pages,
)
from node.web.console_pages import SAMPLER
from node.web.core import WEB_BACKEND, WEB_CLOCK, WEB_LIMITS, WEB_USERS
from node.web.sampler import Sampler

STATIC = Path(__file__).parent / "static"


def register(
    app: web.Application, backend: CounterBackend, users: UserStore, clock: Clock, limits: CounterLimits
) -> None:
    app[WEB_BACKEND], app[WEB_USERS], app[WEB_CLOCK], app[WEB_LIMITS] = backend, users, clock, limits
    sampler = Sampler(clock, backend)
    app[SAMPLER] = sampler

    async def start(_app: web.Application) -> None:
        sampler.start()

    async def stop(_app: web.Application) -> None:
        await sampler.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    for module in (
        session_pages,
        counter_pages,
        bundle_pages,
        owner_pages,
        console_pages,
        clue_pages,
        certificate_pages,
        sharing_pages,
    ):
        app.add_routes(module.routes)
    app.router.add_static("/web/static", STATIC, append_version=True)

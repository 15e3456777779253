"""The navigation list: one entry per page group, shown to the roles that may open it.

Other page groups (clues, bundles) add their entry here; the template draws whatever the
list holds for the caller's role, so adding a page needs no template change. The roles
mirror what node/counter/backend.py enforces: hiding a link is a courtesy, the backend's
refusal is the rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.counter.users import CLERK, OPERATOR, OWNER_CLERK, SUPERVISOR


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str  # a key of node.web.i18n
    roles: frozenset[str]


NAV: list[NavItem] = [
    NavItem("/web/services", "nav_services", frozenset({CLERK, SUPERVISOR})),
    NavItem("/web/queue", "nav_queue", frozenset({CLERK, SUPERVISOR})),
    NavItem("/web/owner", "nav_owner", frozenset({OWNER_CLERK, SUPERVISOR})),
    NavItem("/web/clues", "nav_clues", frozenset({CLERK, OWNER_CLERK, SUPERVISOR})),
    NavItem("/web/certificates/verify", "nav_certificates", frozenset({CLERK, OWNER_CLERK, SUPERVISOR})),
    NavItem("/web/console", "nav_console", frozenset({OPERATOR, SUPERVISOR})),
    NavItem("/web/data", "nav_data", frozenset({CLERK, OWNER_CLERK, SUPERVISOR, OPERATOR})),
    NavItem("/track", "nav_track", frozenset({CLERK, OWNER_CLERK, SUPERVISOR, OPERATOR})),
]


def home_of(role: str) -> str:
    """The first page a role lands on after logging in."""
    return next((item.path for item in NAV if role in item.roles), "/track")


def items_for(role: str) -> list[NavItem]:
    return [item for item in NAV if role in item.roles]

"""server/app.py matches the most frequent writes' routes first; that is only safe while
no request path could be answered by routes of two routers."""

from __future__ import annotations

import re

from starlette.routing import compile_path

from chatledger.server.app import ROUTERS


def _example(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "some-id", template)


def test_no_path_of_one_router_is_a_path_of_another() -> None:
    paths = [
        (number, route.path)
        for number, router in enumerate(ROUTERS)
        for route in router.routes
        if hasattr(route, "methods")
    ]
    assert len(paths) > 40
    shared = [
        (template, other)
        for number, template in paths
        for other_number, other in paths
        if number != other_number and compile_path(template)[0].match(_example(other))
    ]
    assert shared == []

"""Input the two databases cannot store alike (see chatledger/storable.py) is refused
before any route runs, as a 422 naming where it was.

One check for every route (path, query and JSON body), rather than a validator on each
field of each schema, so that a new field cannot forget it. The one exception: a batch's
body is checked by the batch itself (batch/body.py), item by item, so that one bad item
is rejected alone and the others land (offline sync must not be blocked by one row);
nothing else of that body is stored.
"""

from __future__ import annotations

from fastapi import Request

from chatledger.storable import check_json, check_text, may_hold_unstorable

# Routes that check their own bodies.
_CHECKING_THEIR_BODIES = {("POST", "/v1/batch")}


async def refuse_unstorable(request: Request) -> None:
    """An app-wide dependency: raises InvalidInput for a value no database can store."""
    for name, value in request.path_params.items():
        check_text(str(value), name)
    for name, value in request.query_params.multi_items():
        check_text(value, name)
    # (The scope's path, as `BatchTurns` matches it: `request.url` would build a URL for
    # every request only to read its path.)
    if (request.method, request.scope["path"]) in _CHECKING_THEIR_BODIES:
        return
    if not may_hold_unstorable(await request.body()):
        return
    try:
        parsed = await request.json()
    except ValueError:
        return  # not JSON: the route's own validation answers for it
    check_json(parsed)

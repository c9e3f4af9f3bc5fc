"""Input the two databases cannot store alike (see chatledger/storable.py) is refused
before any route runs, as a 422 naming where it was.

One check for every route (path, query and JSON body), rather than a validator on each
field of each schema, so that a new field cannot forget it. The one exception: a batch's
items are checked one by one by the batch itself, so that one bad item is rejected
alone and the others land (offline sync must not be blocked by one row).
"""

from __future__ import annotations

from fastapi import Request

from chatledger.storable import check_json, check_text, may_hold_unstorable

# Bodies whose list under this key is checked item by item by the route itself.
_CHECKED_PER_ITEM = {("POST", "/v1/batch"): "items"}


async def body_may_hold_unstorable(request: Request) -> bool:
    """`may_hold_unstorable` of the request's body, searched once per request: the batch
    route asks again (a pass over a 400 kB body takes a millisecond or two)."""
    verdict: bool | None = getattr(request.state, "body_may_hold_unstorable", None)
    if verdict is None:
        # The body is kept by the request: the route reads it again for free.
        verdict = may_hold_unstorable(await request.body())
        request.state.body_may_hold_unstorable = verdict
    return verdict


async def refuse_unstorable(request: Request) -> None:
    """An app-wide dependency: raises InvalidInput for a value no database can store."""
    for name, value in request.path_params.items():
        check_text(str(value), name)
    for name, value in request.query_params.multi_items():
        check_text(value, name)
    if not await body_may_hold_unstorable(request):
        return
    try:
        parsed = await request.json()
    except ValueError:
        return  # not JSON: the route's own validation answers for it
    per_item = _CHECKED_PER_ITEM.get((request.method, request.url.path))
    if per_item is not None and isinstance(parsed, dict):
        parsed = {key: value for key, value in parsed.items() if key != per_item}
    check_json(parsed)

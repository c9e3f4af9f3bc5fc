"""The client's usage resource: requests, tokens and cost per UTC day (a task counts on
the day it ended), by user and model or summed per model or per user."""

from __future__ import annotations

from datetime import date

from chatledger.client.base import Resource, body
from chatledger.usage.schemas import DailyUsage, GroupBy


class Usage(Resource):
    async def daily(
        self,
        from_: date | str | None = None,
        to: date | str | None = None,
        group_by: GroupBy | None = None,
        user_id: str | None = None,
    ) -> DailyUsage:
        """Usage from `from_` to `to` inclusive (default: the last 30 days). Members see
        their own usage; owners, admins and service keys the whole project's, or one
        end user's with `user_id`."""
        params = body(**{"from": from_}, to=to, group_by=group_by, user_id=user_id)
        response = await self._t.request("GET", "/v1/usage/daily", params=params)
        return DailyUsage.model_validate(response.json())

"""Which value a variable takes (on SQLite and PostgreSQL): for every pair of sources the
higher one wins — computed > request > project > org > user > default — placeholders
that are not declared resolve by the same rules, computed values follow the
`user_timezone` variable, and every variable with no value is named in one error."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chatledger import Ledger
from chatledger.errors import InvalidInput
from chatledger.prompts import rendering
from chatledger.prompts import service as prompts
from chatledger.prompts.schemas import PromptCreate
from chatledger.tenants import service as tenants
from chatledger.tenants.caller import Caller
from chatledger.variables import service as variables
from chatledger.variables.resolve import SOURCES, WEEKDAYS, MissingVariables

PAIRS = list(itertools.combinations(SOURCES, 2))  # (higher, lower), 15 of them
# Ana owns org "acme" and its project "app"; every scope applies to her renders there.
ANA = Caller("app", "ana", sees_all=True, role="owner", key_kind="user")


@dataclass
class World:
    ledger: Ledger
    made: int = 0

    async def prompt(self, content: str, declared: list[dict[str, Any]] | None = None) -> str:
        self.made += 1
        name = f"p{self.made}"
        new = PromptCreate.model_validate(
            {
                "name": name,
                "messages": [{"role": "system", "content": content}],
                "variables": declared or [],
            }
        )
        async with self.ledger.database.transaction() as session:
            await prompts.create(session, ANA, new)
        return name

    async def store(self, scope: str, key: str, value: str, caller: Caller = ANA) -> None:
        scope_id = {"user": caller.user_id, "project": "app", "org": "acme"}[scope]
        async with self.ledger.database.transaction() as session:
            await variables.put(session, caller, scope, scope_id, key, value)

    async def render(
        self,
        name: str,
        given: Mapping[str, str] | None = None,
        *,
        caller: Caller = ANA,
        now: datetime | None = None,
    ) -> rendering.Rendered:
        async with self.ledger.database.reading() as session:
            return await rendering.render(
                session, caller, prompts.PromptRef(name), given or {}, now
            )


@pytest.fixture
async def world(ledger: Ledger) -> World:
    async with ledger.database.transaction() as session:
        await tenants.ensure_user(session, "ana")
        await tenants.create_org(session, "acme", "Acme", "ana")
        await tenants.create_project(session, "app", "App", "ana", "acme")
    return World(ledger)


async def _with_sources(
    world: World, sources: tuple[str, ...], name: str = "v"
) -> rendering.Rendered:
    """Render a variable that has a value in exactly these sources (each value says
    which source it is). `computed` only exists for the computed names: use `weekday`."""
    name = "weekday" if "computed" in sources else name
    declared = [{"name": name, "default": "default"}] if "default" in sources else []
    prompt = await world.prompt(f"value: {{{{ {name} }}}}", declared)
    for scope in ("project", "org", "user"):
        if scope in sources:
            await world.store(scope, name, scope)
    given = {name: "request"} if "request" in sources else {}
    return await world.render(prompt, given)


@pytest.mark.parametrize(("higher", "lower"), PAIRS, ids=[f"{h}>{lo}" for h, lo in PAIRS])
async def test_the_higher_source_of_every_pair_wins(world: World, higher: str, lower: str) -> None:
    rendered = await _with_sources(world, (higher, lower))

    [resolved] = rendered.variables.values()
    assert resolved.source == higher
    if higher == "computed":
        assert resolved.value in WEEKDAYS
    else:
        assert resolved.value == higher
    assert rendered.messages[0]["content"] == f"value: {resolved.value}"


@pytest.mark.parametrize("source", SOURCES[1:])
async def test_each_source_alone_gives_the_value(world: World, source: str) -> None:
    rendered = await _with_sources(world, (source,))

    assert rendered.variables["v"].source == source
    assert rendered.messages[0]["content"] == f"value: {source}"


async def test_all_sources_at_once_peeled_from_the_top(world: World) -> None:
    """The whole order in one go: with every source set, take the winner away, again."""
    present = list(SOURCES[1:])
    seen = []
    for round_ in itertools.count():
        if not present:
            break
        rendered = await _with_sources(world, tuple(present), name=f"v{round_}")
        seen.append(rendered.variables[f"v{round_}"].source)
        present.pop(0)

    assert seen == ["request", "project", "org", "user", "default"]


async def test_placeholders_not_declared_resolve_by_the_same_rules(world: World) -> None:
    await world.store("org", "team", "Platform")
    await world.store("user", "nickname", "Ana")
    prompt = await world.prompt(
        "{{nickname}} of {{team}}, {{mood}}", [{"name": "x", "default": "1"}]
    )

    rendered = await world.render(prompt, {"mood": "cheerful"})

    assert rendered.messages[0]["content"] == "Ana of Platform, cheerful"
    assert {n: r.source for n, r in rendered.variables.items()} == {
        "nickname": "user",
        "team": "org",
        "mood": "request",
        "x": "default",
    }


async def test_every_missing_variable_is_named_at_once(world: World) -> None:
    prompt = await world.prompt(
        "{{a}} {{b}} {{given}} {{c}} {{a}}",
        [{"name": "declared_unused"}, {"name": "with_default", "default": "ok"}],
    )

    with pytest.raises(MissingVariables) as caught:
        await world.render(prompt, {"given": "yes"})

    assert caught.value.details["missing"] == ["a", "b", "c", "declared_unused"]
    assert caught.value.field == "variables"
    assert "a, b, c, declared_unused" in caught.value.message


async def test_computed_values_in_the_users_timezone(world: World) -> None:
    await world.store("user", "user_timezone", "Asia/Tokyo")
    prompt = await world.prompt(
        "{{current_date}}|{{current_time}}|{{current_datetime}}|{{weekday}}"
    )
    tokyo = ZoneInfo("Asia/Tokyo")

    before = datetime.now(tokyo)
    rendered = await world.render(prompt)
    after = datetime.now(tokyo)

    date, time, stamp, weekday = rendered.messages[0]["content"].split("|")
    # A render at midnight may see either day: compare with both ends of the window.
    assert date in {before.date().isoformat(), after.date().isoformat()}
    assert weekday in {before.strftime("%A"), after.strftime("%A")}
    at = datetime.fromisoformat(stamp)
    assert at.utcoffset() == tokyo.utcoffset(before)
    assert before.replace(microsecond=0) <= at <= after
    assert time == at.strftime("%H:%M") and date == at.date().isoformat()
    assert {r.source for r in rendered.variables.values()} == {"computed"}


async def test_computed_values_at_a_known_instant(world: World) -> None:
    prompt = await world.prompt("{{current_datetime}} {{weekday}} {{current_time}}")
    instant = datetime(2025, 1, 1, 20, 30, 15, tzinfo=UTC)  # a Wednesday evening in UTC

    in_utc = await world.render(prompt, now=instant)
    await world.store("user", "user_timezone", "Asia/Tokyo")
    in_tokyo = await world.render(prompt, now=instant)
    # A request may name the timezone too, above the stored one.
    in_new_york = await world.render(prompt, {"user_timezone": "America/New_York"}, now=instant)

    assert in_utc.messages[0]["content"] == "2025-01-01T20:30:15+00:00 Wednesday 20:30"
    assert in_tokyo.messages[0]["content"] == "2025-01-02T05:30:15+09:00 Thursday 05:30"
    assert in_new_york.messages[0]["content"] == "2025-01-01T15:30:15-05:00 Wednesday 15:30"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "utc+2", "Europe"])
async def test_an_invalid_timezone_is_named(world: World, zone: str) -> None:
    await world.store("user", "user_timezone", zone)
    prompt = await world.prompt("{{current_date}}")

    with pytest.raises(InvalidInput) as caught:
        await world.render(prompt)

    assert caught.value.field == "variables.user_timezone"
    assert repr(zone) in caught.value.message


async def test_a_timezone_is_only_needed_for_computed_values(world: World) -> None:
    await world.store("user", "user_timezone", "Not/A_Zone")
    prompt = await world.prompt("{{x}}", [{"name": "x", "default": "fine"}])

    assert (await world.render(prompt)).messages[0]["content"] == "fine"

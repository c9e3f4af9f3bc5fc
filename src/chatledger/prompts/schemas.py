"""Prompts over the API: templates written, versions and labels read, renders asked for
and returned."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from chatledger.fields import ClientId
from chatledger.prompts.render import NAME_PATTERN as VARIABLE_NAME_PATTERN
from chatledger.variables.service import MAX_VALUE_LENGTH

# Names travel in URL paths: no `/`, and not `builtins` (that path lists the built-ins).
PROMPT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
RESERVED_NAMES = ("builtins",)
LABEL_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_MESSAGES = 100
MAX_CONTENT_LENGTH = 100_000


def _not_reserved(name: str) -> str:
    if name in RESERVED_NAMES:
        raise ValueError(f"{name!r} is reserved (GET /v1/prompts/{name} lists the built-ins)")
    return name


PromptName = Annotated[
    str,
    Field(pattern=PROMPT_NAME_PATTERN, examples=["support-agent"]),
    AfterValidator(_not_reserved),
]
LabelName = Annotated[str, Field(pattern=LABEL_PATTERN, examples=["production"])]
VariableName = Annotated[str, Field(pattern=VARIABLE_NAME_PATTERN, examples=["language"])]
VariableValue = Annotated[str, Field(max_length=MAX_VALUE_LENGTH)]
Version = Annotated[int, Field(ge=1, le=2**31 - 1)]
Description = Annotated[str, Field(max_length=2000)]
# Values given with a render or a chat, over every stored one but the computed ones.
GivenVariables = dict[VariableName, VariableValue]


class TemplateMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(min_length=1, max_length=MAX_CONTENT_LENGTH)]


class VariableDeclaration(BaseModel):
    name: VariableName
    default: VariableValue | None = None
    description: Description | None = None


def _one_each(declared: list[VariableDeclaration] | None) -> list[VariableDeclaration] | None:
    names = [variable.name for variable in declared or []]
    if len(names) != len(set(names)):
        raise ValueError("each variable is declared once")
    return declared


def _model_is_text(settings: dict[str, Any] | None) -> dict[str, Any] | None:
    model = (settings or {}).get("model")
    if model is not None and not (isinstance(model, str) and 0 < len(model) <= 200):
        raise ValueError("model must be a 'provider/model' string")
    return settings


class _Template(BaseModel):
    messages: Annotated[list[TemplateMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    variables: list[VariableDeclaration] = Field(default_factory=list)
    # Model settings: `model` ("provider/model"), temperature, …; a chat's own win.
    settings: dict[str, Any] = Field(default_factory=dict)

    _variables = field_validator("variables")(_one_each)
    _settings = field_validator("settings")(_model_is_text)


class PromptCreate(_Template):
    """A new prompt with its first version (labelled `production` and `latest`)."""

    id: ClientId | None = None
    name: PromptName
    description: Description | None = None


class VersionCreate(BaseModel):
    """A new version; what is left out is copied from the newest version."""

    messages: (
        Annotated[list[TemplateMessage], Field(min_length=1, max_length=MAX_MESSAGES)] | None
    ) = None
    variables: list[VariableDeclaration] | None = None
    settings: dict[str, Any] | None = None
    # Labels to point at the new version at once, e.g. ["production"].
    labels: list[LabelName] = Field(default_factory=list, max_length=20)

    _variables = field_validator("variables")(_one_each)
    _settings = field_validator("settings")(_model_is_text)


class LabelSet(BaseModel):
    version: Version


class PromptVersionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    version: int
    messages: list[TemplateMessage]
    variables: list[VariableDeclaration]
    settings: dict[str, Any]
    created_at: datetime
    created_by: str | None


class PromptRead(BaseModel):
    id: str
    name: str
    description: str | None
    builtin: bool
    latest_version: int
    # Label → version number, e.g. {"latest": 3, "production": 2}.
    labels: dict[str, int]
    created_at: datetime
    updated_at: datetime


class PromptDetail(PromptRead):
    """A prompt with one of its versions: the one asked for, else `production`'s."""

    version: PromptVersionRead


class LabelRead(BaseModel):
    prompt: str
    label: str
    version: int
    version_id: str


class RenderCreate(BaseModel):
    variables: GivenVariables = Field(default_factory=dict)
    version: Version | None = None
    label: LabelName | None = None
    # Service keys only: render for this end user (their user-scope variables).
    user_id: ClientId | None = None

    @model_validator(mode="after")
    def _version_or_label(self) -> RenderCreate:
        if self.version is not None and self.label is not None:
            raise ValueError("give a version or a label, not both")
        return self


class PromptChoice(BaseModel):
    """A prompt to chat with: a name, and a version or a label (default `production`)."""

    name: PromptName
    version: Version | None = None
    label: LabelName | None = None

    @model_validator(mode="after")
    def _version_or_label(self) -> PromptChoice:
        if self.version is not None and self.label is not None:
            raise ValueError("give a version or a label, not both")
        return self

    @staticmethod
    def by_name(value: Any) -> Any:
        """A bare name stands for `{"name": name}`."""
        return {"name": value} if isinstance(value, str) else value


class ResolvedVariable(BaseModel):
    value: str
    source: Literal["computed", "request", "project", "org", "user", "default"]


class RenderedMessage(BaseModel):
    role: str
    content: str  # may be empty: a template of only an empty value


class RenderRead(BaseModel):
    prompt: str
    prompt_id: str
    builtin: bool
    version: int
    version_id: str
    messages: list[RenderedMessage]
    variables: dict[str, ResolvedVariable]
    settings: dict[str, Any]

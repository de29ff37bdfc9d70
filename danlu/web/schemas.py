"""Request bodies of the page's /api routes, in pydantic: a bad field is a 400 naming it (app.py's handler)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from danlu.server.openai.protocol import TopP

Role = Literal["system", "user", "assistant"]
MAX_TEXT = 200_000  # characters in one message


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolCallShown(Strict):
    """A tool call the model made, as the page shows it in a card."""

    id: str | None = Field(None, max_length=200)
    name: str = Field(max_length=200)
    arguments: str = Field("", max_length=MAX_TEXT)


class MessageMeta(Strict):
    """What the page shows beside a message, stored with it (the model never sees it)."""

    model: str | None = Field(None, max_length=200)
    tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    seconds: Annotated[float, Field(ge=0)] | None = Field(None, description="decoding time of the reply")
    first_token_s: Annotated[float, Field(ge=0)] | None = Field(None, description="loading + reading the prompt")
    finish_reason: str | None = Field(None, max_length=40)
    interrupted: bool | None = Field(None, description="the connection broke mid-reply: the text is partial")
    reasoning: str | None = Field(None, max_length=MAX_TEXT, description="the model's thinking, shown folded")
    reasoning_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    reasoning_s: Annotated[float, Field(ge=0)] | None = None
    tool_calls: list[ToolCallShown] | None = Field(None, max_length=64)


class Message(Strict):
    role: Role
    content: str = Field(max_length=MAX_TEXT)
    meta: MessageMeta | None = None

    def meta_dict(self) -> dict | None:
        return self.meta.model_dump(exclude_none=True) if self.meta else None


class GenerationSettings(Strict):
    """What the page lets a person set; unset fields fall back to the server's and then the model's defaults."""

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: TopP | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=32768)] | None = None

    def given(self) -> dict:
        return self.model_dump(exclude_none=True)


class NewSession(Strict):
    model: str = Field(min_length=1, max_length=200)
    params: GenerationSettings = Field(default_factory=GenerationSettings)
    messages: list[Message] = Field(default_factory=list, description="the first finished turn, system prompt first")


class SessionMessages(Strict):
    messages: list[Message] = Field(min_length=1)


class SessionRename(Strict):
    name: str = Field(min_length=1, max_length=100)


class NewBattle(Strict):
    mode: Literal["anonymous", "side_by_side"] = "anonymous"
    model_a: str | None = Field(None, min_length=1, max_length=200, description="side by side only: the left model")
    model_b: str | None = Field(None, min_length=1, max_length=200, description="side by side only: the right model")
    params: GenerationSettings = Field(default_factory=GenerationSettings)


class BattleTurn(Strict):
    content: str = Field(min_length=1, max_length=MAX_TEXT)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("the message is blank: write something")
        return content


class BattleVote(Strict):
    vote: Literal["a", "b", "tie", "both_bad"] = Field(description="a: left better, b: right better, tie, both bad")

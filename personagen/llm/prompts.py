"""Prompt templates: files shipped with the package, versioned by a hash of their content.

Each LLM stage has `templates/<name>.system.md` and `templates/<name>.user.md`. The user template
holds one `{{DATA}}` slot, filled with the stage's input as JSON between `<data>` and `</data>`;
the system prompt says that block is data, never instructions. JSON encoding escapes quotes and
newlines, and `<`/`>` are escaped too, so no user text can close the block or pose as the prompt.
Other `{{NAME}}` slots take short trusted text from the stage itself (e.g. a scale's range).
A stage whose answers are not JSON may bring its own `templates/<name>.repair.md` (the message
that asks again after an unusable answer); the others share `repair.user.md`.

`Prompt.version` = name + a hash of the templates and the answer schema; it is stored with every
output row and is part of the response-cache key, so editing a template invalidates old answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel

from personagen.llm.structured import json_schema

DATA_SLOT = "{{DATA}}"
ERROR_SLOT = "{{ERROR}}"

Messages = list[dict[str, str]]


def _template_file(name: str) -> Any:
    return resources.files("personagen.llm").joinpath("templates", name)


def _template(name: str) -> str:
    return _template_file(name).read_text("utf-8")


def encode_data(data: Any) -> str:
    """JSON of `data` that cannot contain the block delimiters: one list item per line."""
    text = _dump_lines(data)
    return text.replace("<", "\\u003c").replace(">", "\\u003e")


def _dump_lines(data: Any) -> str:
    if isinstance(data, dict):
        items = [f"{json.dumps(k)}: {_dump_lines(v)}" for k, v in data.items()]
        return "{" + ",\n".join(items) + "}"
    if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        return "[\n" + ",\n".join(json.dumps(x, ensure_ascii=False) for x in data) + "\n]"
    return json.dumps(data, ensure_ascii=False)


@dataclass(frozen=True)
class Prompt:
    name: str
    system: str
    user: str
    schema: dict[str, Any]
    version: str
    repair: str
    """The message that asks again after an unusable answer ({{ERROR}}: what was wrong)."""

    def messages(self, data: Any, slots: Mapping[str, str] | None = None) -> Messages:
        """The chat messages for one input; `data` goes in the user message, as data, and
        each `slots` entry replaces `{{NAME}}` there as given (trusted text only)."""
        user = self.user
        for name, value in (slots or {}).items():
            user = user.replace("{{" + name + "}}", value)
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": user.replace(DATA_SLOT, encode_data(data), 1)},
        ]

    def repair_messages(self, messages: Messages, answer: str, error: str) -> Messages:
        return repair_messages(messages, answer, error, self.repair)


@cache
def load_prompt(name: str, answer: type[BaseModel] | None = None) -> Prompt:
    """The stage prompt `name` whose answers are instances of `answer` (None: plain text)."""
    system = _template(f"{name}.system.md").strip()
    user = _template(f"{name}.user.md").strip()
    if DATA_SLOT not in user:
        raise ValueError(f"template {name}.user.md lacks the {DATA_SLOT} slot")
    own_repair = _template_file(f"{name}.repair.md")
    repair = own_repair.read_text("utf-8").strip() if own_repair.is_file() else repair_template()
    schema = json_schema(answer) if answer is not None else {}
    digest = hashlib.sha256(
        "\0".join([system, user, repair, json.dumps(schema, sort_keys=True)]).encode()
    ).hexdigest()
    return Prompt(name, system, user, schema, f"{name}-{digest[:12]}", repair)


@cache
def repair_template() -> str:
    return _template("repair.user.md").strip()


def repair_messages(
    messages: Messages, answer: str, error: str, template: str | None = None, limit: int = 4000
) -> Messages:
    """The conversation of one repair request: the bad answer and what was wrong with it."""
    text = template if template is not None else repair_template()
    return [
        *messages,
        {"role": "assistant", "content": answer[:limit]},
        {"role": "user", "content": text.replace(ERROR_SLOT, error)},
    ]


def posts_data(posts: list[dict[str, Any]] | None) -> list[dict[str, str]]:
    """A history's posts as prompts show them: date (where known) and text."""
    out = []
    for post in posts or []:
        item = {"date": post["date"]} if post.get("date") else {}
        item["text"] = post.get("text") or ""
        out.append(item)
    return out

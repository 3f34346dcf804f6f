"""The LLM-personas baseline: the LLM writes a persona from nothing ("describe a person").

This is how the persona sets the paper compares against were made (GPT-4o, a plain prompt): no
history, no target, only the model's own idea of a person, which is where the known biases (too
extraverted, too stable, too agreeable) show. Each row is one persona to write; its request
carries its own seed (from the run's `seed` and the persona id), so the samples of one prompt
differ, and a re-run writes the same set. The answer has the mined personas' shape
(`PersonaAnswer`), so the bank is scored, embedded and aligned like a mined one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from personagen.config import Config
from personagen.io.bank import ATTRIBUTES_TYPE, KEY
from personagen.llm.prompts import Prompt, load_prompt
from personagen.stages.base import LLMStage, Request
from personagen.stages.persona import PersonaAnswer

STAGE = "describe"
WORDS = "150 to 300 words"
"""The length asked for: the mined personas' (`mine` prompt), so the sets compare."""


def describe_prompt() -> Prompt:
    return load_prompt("describe", PersonaAnswer)


@dataclass(frozen=True)
class DescribeParams:
    prompt: Prompt
    min_words: int
    temperature: float
    seed: int
    model: str


DESCRIBE_COLUMNS = pa.schema(
    [
        ("narrative", pa.string()),
        ("attributes", ATTRIBUTES_TYPE),
        ("source_meta", pa.string()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
    ]
)


def request_seed(seed: int, persona_id: str) -> int:
    """The sampling seed of one persona's request: reproducible, distinct per persona."""
    digest = hashlib.sha256(f"describe:{seed}:{persona_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # fits the int32 seeds servers take


def describe_request(row: dict[str, Any], params: DescribeParams) -> Request:
    return Request(
        params.prompt.messages({"words": WORDS}),
        PersonaAnswer,
        params.prompt.version,
        context={"min_words": params.min_words},
        temperature=params.temperature,
        seed=request_seed(params.seed, row[KEY]),
    )


def describe_parse(
    row: dict[str, Any], persona: PersonaAnswer, params: DescribeParams
) -> dict[str, Any]:
    return {
        "narrative": persona.narrative,
        "attributes": persona.attributes.model_dump(),
        "source_meta": None,
        "model": params.model,
        "prompt_version": params.prompt.version,
    }


def describe_stage(cfg: Config, temperature: float) -> LLMStage:
    """The stage that writes one persona per row (`persona_id`) at `temperature`."""
    prompt = describe_prompt()
    params = DescribeParams(
        prompt=prompt,
        min_words=cfg.mine.min_words,
        temperature=temperature,
        seed=cfg.seed,
        model=cfg.stage_llm(STAGE).model,
    )
    return LLMStage(
        STAGE,
        DESCRIBE_COLUMNS,
        params,
        describe_request,
        describe_parse,
        prompt.version,
        provenance={"temperature": temperature, "seeds": "sha256('describe:<seed>:<id>')"},
    )

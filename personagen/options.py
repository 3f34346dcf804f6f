"""The base of every options model: what a core package takes, declared where it is used.

A core package (the LLM client, the embedded server, the embedder, the FAISS index, the aligner)
declares the options it takes as a pydantic model with defaults and a description per field;
`personagen.config` composes those models into the one YAML configuration. So the core never
imports the configuration, and every default is written once, next to the code that reads it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    """Unknown keys are errors, and values are validated when they are set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

"""Typed configuration: YAML in, validated, defaults = the embedded offline setup.

One `Config` object is built from (defaults) <- (YAML file) <- (`--set key=value` overrides) and
passed to every command. The core packages declare the options they take (`ClientOptions`,
`EmbeddedServerOptions`, `EmbedderOptions`, `IndexOptions`, `AlignOptions`, ...); this module
composes them, with the run's own settings, into one schema. Secrets never live here:
`llm.api_key_env` names the environment variable that holds the key, and `masked()` is what may
be printed or written to a manifest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import Field, ValidationError, model_validator

from personagen.align.options import AlignMethod, AlignOptions
from personagen.errors import ConfigError
from personagen.index.options import EmbedderOptions, IndexOptions, TrainingOptions
from personagen.llm.options import ClientOptions, EmbeddedServerOptions
from personagen.llm.usage import Price
from personagen.options import Options
from personagen.psychometrics.flags import FlagOptions

Section = Options
"""Every config section: unknown keys are errors, values are validated on set."""

LLM_STAGES = ("mine", "judge", "score", "consistency", "revise", "queries", "describe")
"""The stages that ask an LLM; each has its own LLM settings (`Config.stage_llm`) and pool."""


class VLLMConfig(Section):
    """In-cluster vLLM engines on GPU workers (`llm.engine: ray-vllm`), through Ray Data's
    `ray.data.llm` processors: one processor per LLM stage, loading that stage's `model`."""

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine replica")
    max_model_len: int | None = Field(
        None, ge=256, description="context of the engine (prompt + answer); unset = the model's"
    )
    concurrency: int | tuple[int, int] = Field(
        1, description="engine replicas per stage: n (autoscaling 1..n) or [min, max]"
    )
    batch_size: int = Field(32, ge=1, description="rows per batch sent to an engine replica")
    accelerator_type: str | None = Field(
        None, description="GPU type the replicas need, e.g. A10G, H100 (unset = any GPU)"
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="other vLLM engine arguments, e.g. gpu_memory_utilization, "
        "enable_prefix_caching, dtype",
    )

    @model_validator(mode="after")
    def _check(self) -> VLLMConfig:
        sizes = self.concurrency if isinstance(self.concurrency, tuple) else (1, self.concurrency)
        if min(sizes) < 1 or sizes[0] > sizes[1]:
            raise ValueError(f"concurrency must be n >= 1 or [min, max], got {self.concurrency}")
        own = {"model", "tensor_parallel_size", "max_model_len"}
        doubled = sorted(own & set(self.engine_kwargs))
        if doubled:
            raise ValueError(
                f"set {', '.join(doubled)} as llm.model / llm.vllm.<key>, not in engine_kwargs"
            )
        return self


class LLMConfig(ClientOptions):
    """The LLM every stage (mine, judge, score, revise) uses: an OpenAI-compatible endpoint, or
    with `engine: ray-vllm` vLLM engines inside the Ray cluster."""

    api_key_env: str = Field(
        "OPENAI_API_KEY", description="name of the environment variable holding the API key"
    )
    cache: bool = Field(True, description="keep answers in a persistent cache (resume, re-runs)")
    cache_dir: str | None = Field(
        None, description="cache folder; unset = BANK/llm-cache (one SQLite file per host)"
    )
    prices: dict[str, Price] = Field(
        default_factory=dict, description="model name -> price per 1M tokens (for run costs)"
    )
    embedded: EmbeddedServerOptions = Field(default_factory=EmbeddedServerOptions)
    engine: Literal["openai", "ray-vllm"] = Field(
        "openai",
        description="openai = requests to base_url (or the embedded server); ray-vllm = vLLM "
        "engines on the cluster's GPU workers (ray.data.llm), `model` is what they load",
    )
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)

    def api_key(self) -> str | None:
        """The key from the environment, read at the moment of use (never stored)."""
        return os.environ.get(self.api_key_env) or None


class PoolConfig(Section):
    """How one LLM stage's actor pool is sized: actors x concurrency requests in flight."""

    actors: int | None = Field(
        None,
        ge=1,
        description="LLM actors; unset = one per CPU (no more than there are batches), one for "
        "the embedded server",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="rows per actor call; unset = half the concurrency (min 4), for scoring "
        "enough personas to fill the request slots twice",
    )
    concurrency: int | None = Field(
        None,
        ge=1,
        description="requests in flight per actor; unset = llm.concurrency "
        "(llm.embedded.concurrency for the embedded server)",
    )
    actor_cpus: float = Field(0.25, gt=0, description="CPUs reserved per actor (I/O bound)")


class PoolsConfig(Section):
    """Each LLM stage's own actor pool (`pools.<stage>.actors`, ...): no stage is sized by
    another stage's settings."""

    mine: PoolConfig = Field(default_factory=PoolConfig)
    judge: PoolConfig = Field(default_factory=PoolConfig)
    score: PoolConfig = Field(default_factory=PoolConfig)
    consistency: PoolConfig = Field(default_factory=PoolConfig)
    revise: PoolConfig = Field(default_factory=PoolConfig)
    queries: PoolConfig = Field(default_factory=PoolConfig)
    describe: PoolConfig = Field(default_factory=PoolConfig)

    def of(self, stage: str) -> PoolConfig:
        return getattr(self, stage)


class DedupConfig(Section):
    """Near-duplicate personas (a user's windows, generic boilerplate) by MinHash LSH."""

    enabled: bool = True
    threshold: float = Field(0.7, gt=0, le=1, description="Jaccard similarity of word shingles")
    num_perm: int = Field(128, ge=16, description="MinHash permutations")
    shingle: int = Field(3, ge=1, description="words per shingle")


class MineConfig(Section):
    """Persona mining: history -> narrative persona + attributes."""

    judge: bool = Field(True, description="judge every new persona in the same run")
    min_words: int = Field(40, ge=1, description="narratives shorter than this are invalid")
    max_tokens: int | None = Field(None, ge=1, description="answer limit; unset = llm.max_tokens")


class StageLLMConfig(Section):
    """An LLM stage's own endpoint and model, where they should differ from `llm`."""

    base_url: str | None = Field(None, description="this stage's endpoint; unset = llm.base_url")
    model: str | None = Field(None, description="this stage's model; unset = llm.model")
    api_key_env: str | None = Field(None, description="this stage's key variable; unset = llm's")
    temperature: float = Field(0.0, ge=0, le=2)

    def _llm(self, llm: LLMConfig, **update: Any) -> LLMConfig:
        """`llm` with this section's overrides (and the stage's own `update`)."""
        update["temperature"] = self.temperature
        for key in ("base_url", "model", "api_key_env"):
            if getattr(self, key) is not None:
                update[key] = getattr(self, key)
        return llm.model_copy(update=update)


class JudgeConfig(StageLLMConfig):
    """Quality assessment of personas against their source posts (a judge LLM)."""

    max_tokens: int = Field(512, ge=1, description="answer token limit of one judgement")
    threshold: float = Field(
        3.0, ge=1, le=5, description="personas with overall below are rejected"
    )
    min_scores: dict[
        Literal["faithfulness", "specificity", "consistency", "plausibility"], float
    ] = Field(default_factory=dict, description="optional per-criterion minimums")
    dedup: DedupConfig = Field(default_factory=DedupConfig)

    def endpoint(self, llm: LLMConfig) -> LLMConfig:
        """The LLM settings the judge uses: `llm` with this section's overrides."""
        return self._llm(llm, max_tokens=self.max_tokens)


class RayConfig(Section):
    address: str | None = Field(
        None,
        description="Ray cluster address, or `auto` (the Ray already running here); "
        "unset = RAY_ADDRESS or a new local Ray instance",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray instance")
    object_store_mb: int | None = Field(
        None, ge=64, description="object store of a local Ray instance (default: Ray's choice)"
    )


class RedactConfig(Section):
    """PII redaction applied at ingest, before any text can reach an LLM."""

    enabled: bool = True
    types: list[Literal["email", "phone", "url", "handle"]] = Field(
        default_factory=lambda: ["email", "phone", "url", "handle"]
    )


class WindowConfig(Section):
    """How a long history is cut to the miner's token budget."""

    strategy: Literal["recent", "spread", "windows"] = "spread"
    max_tokens: int = Field(3000, ge=64, description="token budget of one window")
    max_windows: int = Field(4, ge=1, description="windows per user (strategy=windows)")


class IngestConfig(Section):
    format: Literal["auto", "blogs-xml", "jsonl", "parquet"] = "auto"
    grouped: Literal["auto"] | bool = Field(
        "auto",
        description="whether each user's posts lie in one input file, so that no group-by is "
        "needed: true = trust it, false = group every user, auto = find the users in several "
        "files (from their ids) and group only those",
    )
    min_posts: int = Field(1, ge=1, description="users with fewer non-empty posts are skipped")
    redact: RedactConfig = Field(default_factory=RedactConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)


class ScoreConfig(StageLLMConfig, FlagOptions):
    """Psychometric scoring: the inventory, how answers are obtained, and the quality flags."""

    instrument: str = Field(
        "ipip-50", description="built-in instrument id or a path to a YAML/JSON instrument file"
    )
    mode: Literal["auto", "logprob", "calibrated", "text", "batch", "embedding"] = Field(
        "auto",
        description="auto = logprob where the endpoint returns top_logprobs, otherwise text; "
        "calibrated = logprob with each item's content-free answer prior divided out; "
        "embedding = zero-shot keyed similarity of narrative and items (no LLM, "
        "`personagen score` only)",
    )
    only_kept: bool = Field(
        False,
        description="score only personas the judge kept; false = also those without a verdict "
        "(personas the judge rejected are never scored)",
    )
    top_logprobs: int = Field(
        20, ge=2, le=20, description="alternatives asked per answer token (logprob mode)"
    )
    item_retries: int = Field(
        2, ge=0, description="re-asks after an answer that is not a point of the scale"
    )
    items_per_request: int | None = Field(
        None, ge=1, description="batch mode: items per JSON answer; unset = the whole instrument"
    )
    consistency: bool = Field(
        False, description="after scoring, check extreme traits against the narrative (judge LLM)"
    )
    consistency_quantile: float = Field(
        0.1, gt=0, le=0.5, description="extreme = in the bank's top or bottom fraction of a trait"
    )

    def endpoint(self, llm: LLMConfig) -> LLMConfig:
        """The LLM settings scoring uses: `llm` with this section's overrides, and an embedded
        server that can return logprobs where the mode may read them."""
        if llm.embedded.logits_all is not None:
            return self._llm(llm)
        logits_all = self.mode in ("auto", "logprob", "calibrated")
        return self._llm(llm, embedded=llm.embedded.model_copy(update={"logits_all": logits_all}))


class ReferenceConfig(Section):
    """How human reference distributions are loaded (see `personagen reference show`)."""

    min_rows: int = Field(
        50, ge=1, description="fewest rows a reference or a --group/--countries subset may have"
    )
    builtin_rows: int = Field(
        16000,
        ge=100,
        description="rows sampled from a builtin:<group> summary (below align.atoms, so the "
        "sample is aligned to as it is, without k-means compression)",
    )


class EvaluateConfig(Section):
    """Distribution metrics and their noise floors (`personagen evaluate`, align reports)."""

    energy_max_rows: int = Field(
        5000, ge=100, description="energy distance uses a seeded subsample beyond this many rows"
    )
    sliced_projections: int = Field(128, ge=8, description="directions of sliced Wasserstein")
    floor_repeats: int = Field(5, ge=1, description="draws of the reference behind a noise floor")


class AlignConfig(AlignOptions):
    """`personagen align`: resampling the personas to the reference (see personagen.align)."""

    method: AlignMethod = "auto"
    replace: bool = Field(False, description="allow a persona to be chosen more than once")
    also: list[str] = Field(
        default_factory=list, description="demographic columns aligned jointly with the traits"
    )
    also_weight: float = Field(
        1.0, gt=0, description="weight of `also` columns in the cost (1 = one trait SD)"
    )
    exclude_flagged: bool = Field(False, description="leave out personas with score_flags")
    shards: int | None = Field(None, ge=1, description="Ray shards; unset = one per CPU")
    ray_min_personas: int = Field(
        200_000, ge=0, description="below this many candidates, shards run in-process"
    )
    report_max_rows: int = Field(
        100_000, ge=1000, description="larger sets enter the report as a seeded subsample"
    )


class EmbedConfig(EmbedderOptions):
    """Sentence embeddings of personas (stage `embed`) and of search queries."""

    text: Literal["narrative", "attributes+narrative"] = Field(
        "narrative", description="what is embedded for each persona"
    )
    batch_size: int = Field(256, ge=1, description="personas per Ray batch (one encode call)")
    actors: int | None = Field(
        None, ge=1, description="embedding actors (one model each); unset = CPUs / threads"
    )
    threads: int = Field(1, ge=1, description="torch / ONNX Runtime threads per actor")


class AdaptConfig(StageLLMConfig):
    """`personagen adapt`: retrieve, revise toward a group, re-score, re-align (the revision
    LLM's endpoint and model are this section's overrides of `llm`)."""

    k: int = Field(200, ge=1, description="candidates retrieved for the query (top k)")
    filters: list[str] = Field(
        default_factory=lambda: ["kept=true"],
        description="where-conditions every candidate meets (ANDed; --where adds more); [] = none",
    )
    min_similarity: float | None = Field(
        None, ge=-1, le=1, description="leave out retrieved personas below this cosine"
    )
    revise: bool = Field(True, description="revise each candidate toward the group (LLM)")
    target: str | None = Field(
        None,
        description="who the revision writes toward; unset = the group's name and countries",
    )
    temperature: float = Field(0.3, ge=0, le=2)
    max_tokens: int = Field(1024, ge=1, description="answer token limit of one revision")
    min_words: int = Field(
        40,
        ge=1,
        description="a revision shorter than this (or than half the original) is a failure",
    )
    instrument: str | None = Field(
        None, description="instrument of the re-scoring; unset = the bank's, else score.instrument"
    )
    n: int = Field(100, ge=1, description="personas chosen when --n is not given")
    method: AlignMethod | None = Field(None, description="alignment method; unset = align.method")

    def endpoint(self, llm: LLMConfig) -> LLMConfig:
        """The LLM settings the revision uses: `llm` with this section's overrides."""
        return self._llm(llm, max_tokens=self.max_tokens)


class TrainEmbedderConfig(StageLLMConfig, TrainingOptions):
    """`personagen train-embedder`: query-driven contrastive fine-tuning of the embedding model
    (the query-writing LLM's endpoint and model are this section's overrides of `llm`)."""

    base_model: str | None = Field(None, description="model to fine-tune; unset = embed.model")
    queries_per_persona: int = Field(3, ge=1, le=10, description="queries the LLM writes")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(256, ge=1, description="answer token limit of one query request")

    def endpoint(self, llm: LLMConfig) -> LLMConfig:
        """The LLM settings query writing uses: `llm` with this section's overrides."""
        return self._llm(llm, max_tokens=self.max_tokens)


class BaselineConfig(StageLLMConfig):
    """`personagen baseline`: the sets the paper compares against (the LLM-personas writer's
    endpoint and model are this section's overrides of `llm`)."""

    temperature: float = Field(
        1.0,
        gt=0,
        le=2,
        description="sampling temperature of the written personas (llm-personas) and of the "
        "bare model's answers (no-persona): samples must differ",
    )
    max_tokens: int = Field(1024, ge=1, description="answer token limit of one written persona")

    def endpoint(self, llm: LLMConfig) -> LLMConfig:
        """The LLM settings persona writing uses: `llm` with this section's overrides."""
        return self._llm(llm, max_tokens=self.max_tokens)


class BuildAlignConfig(Section):
    """The aligned set a build ends with (BANK/aligned), when enabled."""

    enabled: bool = False
    reference: str = Field("builtin:global", description="as `personagen align --reference`")
    n: int = Field(100, ge=1, description="personas in the aligned set")
    method: AlignMethod | None = Field(None, description="unset = align.method")
    group: str | None = Field(None, description="reference group (region), e.g. east-asia")
    countries: list[str] | None = Field(None, description="reference countries (ISO-2)")
    exclude_flagged: bool = Field(True, description="leave out personas with score_flags")


class BuildAdaptConfig(Section):
    """A group-adapted set the build ends with (BANK/adapted), when enabled: `personagen adapt`
    on the finished bank; unset keys come from the `adapt` section."""

    enabled: bool = False
    query: str | None = Field(None, description="who to retrieve, e.g. 'young parents in a city'")
    reference: str = Field("builtin:global", description="the group's reference, as for align")
    group: str | None = Field(None, description="reference group (region), e.g. east-asia")
    countries: list[str] | None = Field(None, description="reference countries (ISO-2)")
    n: int | None = Field(None, ge=1, description="personas chosen; unset = adapt.n")
    k: int | None = Field(None, ge=1, description="candidates retrieved; unset = adapt.k")

    @model_validator(mode="after")
    def _query_when_enabled(self) -> BuildAdaptConfig:
        if self.enabled and not self.query:
            raise ValueError("build.adapt.enabled needs build.adapt.query")
        return self


class BuildConfig(Section):
    """`personagen build`: the stages of the stream and the bank-wide steps after it."""

    input: str | None = Field(None, description="histories to build from (a file or a folder)")
    format: Literal["auto", "blogs-xml", "jsonl", "parquet"] = "auto"
    judge: bool = True
    score: bool = True
    embed: bool = True
    index: bool = Field(True, description="build the FAISS index after the stream (with embed)")
    align: BuildAlignConfig = Field(default_factory=BuildAlignConfig)
    adapt: BuildAdaptConfig = Field(default_factory=BuildAdaptConfig)
    rows_per_block: int | None = Field(
        None,
        ge=1,
        description="history rows per block entering the LLM stages (a block moves to the next "
        "stage once all its rows are done); unset = 16, or 4 with the embedded LLM, whose "
        "stages would otherwise wait minutes for each other",
    )
    embed_cpus: float = Field(
        0.25,
        gt=0,
        description="CPUs the embedding actor claims in the stream (it shares the cores with "
        "the LLM actors, which mostly wait on the network, and is far faster than they are)",
    )


class Config(Section):
    seed: int = Field(0, description="seed of every random choice (sampling, shuffles)")
    progress_s: float = Field(10.0, gt=0, description="seconds between progress lines")
    ray: RayConfig = Field(default_factory=RayConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    mine: MineConfig = Field(default_factory=MineConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    align: AlignConfig = Field(default_factory=AlignConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    index: IndexOptions = Field(default_factory=IndexOptions)
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)
    train_embedder: TrainEmbedderConfig = Field(default_factory=TrainEmbedderConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    pools: PoolsConfig = Field(default_factory=PoolsConfig)

    def stage_llm(self, stage: str) -> LLMConfig:
        """The LLM settings of one stage (see `LLM_STAGES`): `llm` with the stage section's
        overrides (the consistency check uses the judge's), the run's seed (`llm.seed`, else
        `seed`), and an embedded server without per-token logits unless the stage reads logprobs
        (only scoring does; computing them costs 15-20% of the embedded model's speed)."""
        sections: dict[str, StageLLMConfig | None] = {
            "mine": None,
            "judge": self.judge,
            "consistency": self.judge,
            "score": self.score,
            "revise": self.adapt,
            "queries": self.train_embedder,
            "describe": self.baseline,
        }
        if stage not in sections:
            raise ConfigError(f"no LLM stage {stage!r}; stages: {', '.join(LLM_STAGES)}")
        section = sections[stage]
        llm = self.llm if section is None else section.endpoint(self.llm)
        update: dict[str, Any] = {"seed": llm.seed if llm.seed is not None else self.seed}
        if llm.embedded.logits_all is None:
            update["embedded"] = llm.embedded.model_copy(update={"logits_all": False})
        if stage == "mine" and self.mine.max_tokens is not None:
            update["max_tokens"] = self.mine.max_tokens
        return llm.model_copy(update=update)

    def updated(self, values: Mapping[str, Any]) -> Config:
        """A validated copy with `values` set, by dotted key (e.g. {"score.mode": "batch"});
        None values are left out (a flag the user did not give). How command-line flags and
        callers' overrides reach a command: through the configuration, one way."""
        data = self.model_dump()
        for key, value in values.items():
            if value is None:
                continue
            _check_key(key)
            _set_dotted(data, key, value)
        return _validated(data)

    def masked(self) -> dict[str, Any]:
        """The configuration as plain data, safe to print or to store in a manifest."""
        data = self.model_dump(mode="json")
        data["llm"]["api_key"] = "****" if self.llm.api_key() else "(not set)"
        for name in ("judge", "score", "adapt", "train_embedder", "baseline"):
            section = getattr(self, name)
            data[name]["api_key"] = "****" if section.endpoint(self.llm).api_key() else "(not set)"
        return mask_urls(data)


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_URL_SECRET_QUERY = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|sig)=)[^&\s]+")


def mask_urls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: mask_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_urls(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return _URL_SECRET_QUERY.sub(r"\1****", _URL_CREDENTIALS.sub("****@", value))
    return value


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    seed: int | None = None,
) -> Config:
    """Defaults, then the YAML file at `path`, then `key=value` overrides, then `seed`."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(Path(path))
    for item in overrides:
        key, value = _parse_override(item)
        _check_key(key)
        _set_dotted(data, key, value)
    if seed is not None:
        data["seed"] = seed
    return _validated(data)


def _validated(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys, not {type(data).__name__}"
        )
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value (e.g. llm.concurrency=64), got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _section_of(annotation: Any) -> type[Section] | None:
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    if get_origin(annotation) is not None:
        for arg in get_args(annotation):
            found = _section_of(arg)
            if found is not None:
                return found
    return None


def _check_key(key: str) -> None:
    """Reject an unknown dotted key with the list of keys allowed at that level. A mapping of
    sections (e.g. `llm.prices.<model>`) takes any name at its level."""
    model: type[Section] = Config
    parts = key.split(".")
    walked: list[str] = []
    free_name = False
    for part in parts:
        walked.append(part)
        if free_name:
            free_name = False
            continue
        fields = model.model_fields
        if part not in fields:
            where = ".".join(walked[:-1]) or "the top level"
            raise ConfigError(
                f"unknown config key {key!r}: allowed at {where}: {', '.join(fields)}"
            )
        annotation = fields[part].annotation
        section = _section_of(annotation)
        if section is None:
            if len(walked) < len(parts):
                raise ConfigError(f"unknown config key {key!r}: {'.'.join(walked)} is a value")
            return
        free_name = get_origin(annotation) is dict
        model = section


def _describe(exc: ValidationError) -> str:
    """One line per problem: the dotted key, what is wrong, and the value given."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            allowed = _allowed_keys(parent)
            lines.append(f"unknown config key {key!r}: allowed: {', '.join(allowed)}")
        else:
            lines.append(f"invalid config {key}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[Section] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        section = _section_of(field.annotation) if field else None
        if section is None:
            break
        model = section
    return list(model.model_fields)

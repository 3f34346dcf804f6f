"""In-cluster vLLM through ray.data.llm (`llm.engine: ray-vllm`), without vLLM or a GPU.

vLLM cannot run on this machine, so the engine itself is never started. What is tested: the
processor config built from our config (and the real `build_processor`, which needs no vLLM until
the engine actors start); that preprocess sends exactly the request the OpenAI-client path sends
(compared with the body the real `LLMClient` sends to the test server); that postprocess turns the
same answer into the same columns, and a malformed answer into a failure; and a real Ray Data run
of the processor `build_processor` makes (chat template, tokenize, engine, detokenize, with a
small tokenizer made here) in which a stand-in engine stage answers in place of vLLM, after
checking each request as vLLM 0.29's `SamplingParams` and `StructuredOutputsParams` would.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from llm_test_server import LLMTestServer, schema_responder

from personagen.config import load_config
from personagen.errors import ConfigError, PersonagenError
from personagen.io.bank import KEY, read_failures, read_group
from personagen.io.histories import HISTORY_COLUMNS
from personagen.llm.client import Endpoint, LLMClient
from personagen.psychometrics.instruments import get_instrument
from personagen.runtime.executors.endpoint import llm_endpoint
from personagen.runtime.executors.vllm import (
    ENGINE_ERROR,
    NOOP_SCHEMA,
    OUT,
    ROW,
    map_vllm_stage,
    pack_rows,
    postprocess,
    preprocess,
    processor_config,
    score_mode,
    vllm_processor,
)
from personagen.runtime.sinks import PartSink, stage_split
from personagen.stages import judge, mine, score
from personagen.stages.base import answer_row, error_column, output_schema

POSTS = [{"date": "2,June,2004", "text": "Rehearsal ran late again; the cello part is hard."}]
PERSONA = {
    "narrative": " ".join(["A quiet cellist who rehearses late and worries about exams."] * 6),
    "attributes": {
        "age_range": "20-29",
        "gender": None,
        "occupation": "student",
        "location": None,
        "interests": ["music"],
        "values": ["discipline"],
    },
}
JUDGEMENT = {
    **{c: {"rationale": "Supported by the posts.", "score": 4} for c in judge.CRITERIA},
    "overall": 4,
}
SETTINGS = ["llm.engine=ray-vllm", "mine.min_words=10", "seed=7", "llm.max_tokens=500"]


def config(*extra: str):
    return load_config(None, [*SETTINGS, *extra])


def history(i: int = 1, text: str | None = None) -> dict[str, Any]:
    posts = [{**POSTS[0], "text": text}] if text else POSTS
    return {
        "history_id": f"u{i}/0",
        "user_id": f"u{i}",
        "window_id": 0,
        "posts": posts,
        "n_posts": 1,
        "n_tokens": 12,
        "source": "test",
        "gender": "female",
    }


def stage_and_row(name: str) -> tuple[Any, Any, dict[str, Any]]:
    """A built stage, its LLM settings and an input row as the stream hands it over."""
    cfg = config()
    mined = {**history(), KEY: "u1/0", **PERSONA, "mine__error": None, "mine__attempts": 1}
    if name == "mine":
        return mine.mine_stage(cfg), cfg.stage_llm("mine"), history()
    if name == "judge":
        return judge.judge_stage(cfg, after="mine"), cfg.stage_llm("judge"), mined
    instrument = get_instrument(cfg.score.instrument)
    judged = {**mined, "kept": True, "judge__error": None, "judge__attempts": 1}
    stage = score.score_stage(cfg, instrument, score_mode(cfg.score, instrument), after="judge")
    return stage, cfg.stage_llm("score"), judged


def packed(row: dict[str, Any]) -> dict[str, Any]:
    return pack_rows(pa.Table.from_pylist([row])).to_pylist()[0]


class Recording:
    """Test-server responder that keeps each request body and the answer it gave."""

    def __init__(self) -> None:
        self.respond = schema_responder(70)
        self.bodies: list[dict[str, Any]] = []
        self.answers: list[str] = []

    def __call__(self, body: dict[str, Any], rng: random.Random) -> str:
        text = self.respond(body, rng)
        self.bodies.append(body)
        self.answers.append(text)
        return text


async def openai_path(stage: Any, llm: Any, row: dict[str, Any], url: str) -> dict[str, Any]:
    client = LLMClient(llm, Endpoint.remote(url), concurrency=1)
    try:
        return await answer_row(stage, client, row)
    finally:
        await client.aclose()


# ------------------------------------------------------------------------------ configuration


def test_processor_config_carries_the_vllm_section():
    cfg = config(
        "llm.model=/mnt/personagen/models/Qwen2.5-7B-Instruct",
        "llm.vllm.tensor_parallel_size=2",
        "llm.vllm.max_model_len=16384",
        "llm.vllm.concurrency=[1, 4]",
        "llm.vllm.batch_size=48",
        "llm.vllm.accelerator_type=A10G",
        "llm.vllm.engine_kwargs={gpu_memory_utilization: 0.85, enable_prefix_caching: true}",
    )
    built = processor_config(cfg.llm)
    assert type(built).__name__ == "vLLMEngineProcessorConfig"
    assert built.model_source == "/mnt/personagen/models/Qwen2.5-7B-Instruct"
    assert built.engine_kwargs == {
        "gpu_memory_utilization": 0.85,
        "enable_prefix_caching": True,
        "tensor_parallel_size": 2,
        "max_model_len": 16384,
        "task_type": "generate",  # added by Ray's own validator
    }
    assert built.concurrency == (1, 4)
    assert built.get_concurrency() == {"min_size": 1, "max_size": 4}
    assert built.batch_size == 48
    assert built.accelerator_type == "A10G"
    assert built.should_continue_on_error is True
    # The judge's own model is what its processor loads.
    judge_llm = load_config(None, [*SETTINGS, "judge.model=/models/judge"]).judge.endpoint(cfg.llm)
    assert processor_config(judge_llm).model_source == "/models/judge"


def test_the_example_job_config_asks_for_cluster_yaml_gpu_workers():
    import yaml

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "jobs" / "configs" / "vllm-ray.yaml")
    assert cfg.llm.engine == "ray-vllm"
    assert score_mode(cfg.score, get_instrument(cfg.score.instrument)) == "batch"
    accelerator = processor_config(cfg.llm).accelerator_type
    cluster = yaml.safe_load((root / "cluster.yaml").read_text())
    gpu_worker = cluster["available_node_types"]["gpu_worker"]["resources"]
    assert f"accelerator_type:{accelerator}" in gpu_worker


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("llm.vllm.engine_kwargs={max_model_len: 4096}", "max_model_len"),
        ("llm.vllm.concurrency=[3, 1]", "concurrency"),
        ("llm.vllm.concurrency=0", "concurrency"),
        ("llm.engine=vllm", "llm.engine"),
    ],
)
def test_bad_vllm_settings_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_scoring_is_batch_only_and_endpoint_steps_refuse_the_engine():
    ipip = get_instrument("ipip-50")
    assert score_mode(config().score, ipip) == "batch"
    for bad in ("score.mode=logprob", "score.mode=text", "score.items_per_request=10"):
        with pytest.raises(PersonagenError, match="ray-vllm"):
            score_mode(config(bad).score, ipip)
    with pytest.raises(PersonagenError, match="ray-vllm"), llm_endpoint(config().llm):
        pass


# ------------------------------------------------------------------------------ the row functions


@pytest.mark.parametrize("name", ["mine", "judge", "score"])
def test_rows_match_the_openai_client_path(name):
    stage, llm, row = stage_and_row(name)
    recording = Recording()
    with LLMTestServer(responder=recording) as server:
        expected = asyncio.run(openai_path(stage, llm, row, server.base_url))
    (body,) = recording.bodies
    assert expected[error_column(stage)] is None

    request = preprocess(packed(row), stage=stage, llm=llm)
    assert request["messages"] == body["messages"]
    params = request["sampling_params"]
    structured = json.loads(params.pop("structured_outputs")["json"])
    assert structured == body["response_format"]["json_schema"]["schema"]
    assert params == {k: body[k] for k in ("max_tokens", "temperature", "seed")}
    assert params["seed"] == 7
    if name == "score":  # all 50 items in one request, in the persona's shuffled order
        assert list(structured["properties"]) == expected["item_ids"]
        assert params["max_tokens"] == score.BATCH_TOKENS_PER_ITEM * 50 + 32

    answer = {"generated_text": recording.answers[0], "num_input_tokens": 900}
    result = postprocess({**packed(row), **answer, "num_generated_tokens": 80}, stage, llm)
    columns = json.loads(result[OUT])
    assert result[ROW] == packed(row)[ROW]
    usage = {f"{name}__{k}" for k in ("requests", "prompt_tokens", "completion_tokens")}
    same = {k: v for k, v in expected.items() if k not in usage}
    assert {k: v for k, v in columns.items() if k not in usage} == same
    assert [columns[f"{name}__{k}"] for k in ("requests", "prompt_tokens")] == [1, 900]


@pytest.mark.parametrize("name", ["mine", "judge", "score"])
def test_a_malformed_answer_is_a_failure_with_its_reason(name):
    stage, llm, row = stage_and_row(name)
    broken = {**packed(row), "generated_text": '{"narrative": "cut', "num_input_tokens": 900}
    columns = json.loads(postprocess({**broken, "num_generated_tokens": 9999}, stage, llm)[OUT])
    reason = columns[error_column(stage)]
    # Scoring wraps it: the persona fails for the traits its failed items leave short.
    assert reason.startswith("too few items answered" if name == "score" else "invalid answer")
    assert "invalid answer: invalid JSON" in reason
    assert reason.endswith("(the answer was cut off at the token limit)")
    assert columns[f"{name}__attempts"] == 1
    assert not set(columns) & set(stage.columns.names)  # no half-filled output


@pytest.mark.parametrize(
    ("response_format", "constraint"),
    [
        ("auto", {"json": json.dumps(NOOP_SCHEMA)}),
        ("json_object", {"json_object": True}),
        ("none", None),
    ],
)
def test_rows_the_stage_does_not_take_pass_untouched(response_format, constraint):
    """A skipped row's one-token request has the fields and the constraint kind of a real one:
    a block of skipped rows only must give `sampling_params` the same Arrow type."""
    stage, _, row = stage_and_row("score")
    llm = config(f"llm.response_format={response_format}").stage_llm("score")
    real = preprocess(packed(row), stage=stage, llm=llm)["sampling_params"]
    for skipped in ({**row, "kept": False}, {**row, "judge__error": "timeout"}):
        request = preprocess(packed(skipped), stage=stage, llm=llm)
        params = request["sampling_params"]
        assert params == {
            "max_tokens": 1,
            "temperature": 0.0,
            "seed": 7,
            "structured_outputs": constraint,
        }
        assert pa.array([params]).type == pa.array([real]).type
        answer = {"generated_text": "{", "num_input_tokens": 3, "num_generated_tokens": 1}
        out = postprocess({**packed(skipped), **answer}, stage, llm)
        assert json.loads(out[OUT]) == {}


# ------------------------------------------------------------------------------ Ray Data


# vLLM 0.29.0 (the version ray[llm] 2.60 pins), vllm/sampling_params.py: the fields a request
# may set in `sampling_params` (SamplingParams' input fields), those of its `structured_outputs`
# (StructuredOutputsParams), and the constraints of which exactly one must be set.
# fmt: off
SAMPLING_FIELDS = frozenset([
    "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p",
    "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens",
    "logprobs", "prompt_logprobs", "logprob_token_ids", "flat_logprobs", "detokenize",
    "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output",
    "output_kind", "stream_interval", "skip_clone", "structured_outputs", "logit_bias",
    "allowed_token_ids", "extra_args", "bad_words", "skip_reading_prefix_cache",
    "thinking_token_budget", "repetition_detection", "routed_experts_prompt_start",
    "trace_decode_token_ids",
])
STRUCTURED_FIELDS = frozenset([
    "json", "regex", "choice", "grammar", "json_object", "disable_any_whitespace",
    "disable_additional_properties", "whitespace_pattern", "structural_tag",
])
# fmt: on
CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer_folder(folder: Path) -> Path:
    """A byte-level BPE tokenizer with a ChatML template, as a model folder holds one: what the
    processor's chat-template, tokenize and detokenize stages load (decoding gives back any
    text exactly)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([json.dumps(PERSONA), json.dumps(JUDGEMENT)], trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", chat_template=CHATML
    ).save_pretrained(folder)
    return folder


class _StandInEngine:
    """Built lazily: the stage classes come from ray.llm, imported inside the tests."""

    @staticmethod
    def stage(tokenizer: Path) -> Any:
        import ray
        from ray.llm._internal.batch.stages.base import StatefulStage, StatefulStageUDF

        # Plain values: the class travels to Ray workers by value; tests/ is not importable there.
        answers = {"narrative": json.dumps(PERSONA), "overall": json.dumps(JUDGEMENT)}
        sampling_fields, structured_fields, constraints = (
            SAMPLING_FIELDS,
            STRUCTURED_FIELDS,
            CONSTRAINTS,
        )

        def checked(sampling_params: dict[str, Any]) -> dict[str, Any] | None:
            """The request's constraint, after the checks vLLM 0.29 makes when Ray 2.60's engine
            stage builds `SamplingParams(**params, structured_outputs=
            StructuredOutputsParams(**constraint))` (`_prepare_llm_request`)."""
            params = dict(sampling_params)
            structured = params.pop("structured_outputs", None)
            unknown = set(params) - sampling_fields
            assert not unknown, f"SamplingParams has no field {sorted(unknown)}"
            assert isinstance(params["max_tokens"], int) and params["max_tokens"] >= 1
            assert isinstance(params["temperature"], float)
            if not structured:  # Ray passes structured_outputs=None
                return None
            unknown = set(structured) - structured_fields
            assert not unknown, f"StructuredOutputsParams has no field {sorted(unknown)}"
            kinds = [k for k in constraints if structured.get(k) is not None]
            assert len(kinds) == 1, f"exactly one structured-output constraint, got {structured}"
            assert isinstance(structured.get("json") or "", (str, dict))
            assert isinstance(structured.get("json_object") or False, bool)
            return structured

        class AnswerUDF(StatefulStageUDF):
            """In place of vLLM, behind the chat-template and tokenize stages: a valid persona
            or judgement (by the schema asked), malformed text for rows whose prompt holds
            BROKEN, an engine error (as vLLM's stage reports it with should_continue_on_error)
            for ENGINE-FAIL. Answers as token ids, which the detokenize stage turns into text."""

            def __init__(self, data_column: str, expected_input_keys: list[str]) -> None:
                from transformers import AutoTokenizer

                super().__init__(data_column, expected_input_keys)
                self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))

            async def udf(self, batch: list[dict[str, Any]]):
                for row in batch:
                    prompt = row["prompt"]
                    assert prompt.startswith("<|im_start|>") and prompt.endswith("assistant\n")
                    tokens = list(row["tokenized_prompt"])
                    assert tokens == self.tokenizer(prompt)["input_ids"]
                    # no constraint (llm.response_format=none) is unconstrained text for vLLM
                    structured = checked(row["sampling_params"]) or {"json": "{}"}
                    asked = json.loads(structured["json"]).get("properties", {})
                    text = next((a for key, a in answers.items() if key in asked), "{")
                    if "BROKEN" in prompt:
                        text = "not JSON at all"
                    out = {
                        self.IDX_IN_BATCH_COLUMN: row[self.IDX_IN_BATCH_COLUMN],
                        "prompt": prompt,
                        "prompt_token_ids": tokens,
                        "num_input_tokens": len(tokens),
                        "generated_tokens": self.tokenizer(text)["input_ids"],
                        "generated_text": "",
                        "num_generated_tokens": len(self.tokenizer(text)["input_ids"]),
                        ENGINE_ERROR: "",
                    }
                    if "ENGINE-FAIL" in prompt:
                        out.update(prompt_token_ids=None, num_input_tokens=0)
                        out.update(generated_tokens=[], num_generated_tokens=0)
                        out[ENGINE_ERROR] = "ValueError: prompt is longer than max_model_len"
                    yield out

        class AnswerStage(StatefulStage):
            fn: type = AnswerUDF

            def get_required_input_keys(self) -> dict[str, str]:
                return {"sampling_params": "as vLLM's engine stage requires"}

        return AnswerStage(
            fn_constructor_kwargs={},
            map_batches_kwargs={"compute": ray.data.ActorPoolStrategy(size=1), "num_cpus": 0.1},
        )


def batches_of(llm: Any, rows: int) -> Any:
    """`llm` with processor batches of `rows` rows."""
    return llm.model_copy(update={"vllm": llm.vllm.model_copy(update={"batch_size": rows})})


def stand_in_processor(stage: Any, llm: Any, tokenizer: Path) -> Any:
    """The processor `build_processor` makes for `stage`, its vLLM engine stage replaced by the
    stand-in; every stage on a tenth of a CPU (the local Ray has two)."""
    processor = vllm_processor(stage, llm)
    processor.stages["vLLMEngineStage"] = _StandInEngine.stage(tokenizer)
    for step in processor.stages.values():
        step.map_batches_kwargs["num_cpus"] = 0.1
    return processor


@pytest.mark.slow  # a real Ray Data stream of two processors, ~60 s here
def test_mine_and_judge_through_ray_data_processors(ray_local, tmp_path):
    """The real processors (preprocess, chat template, tokenize, engine stage, detokenize,
    postprocess) in a real stream, the stand-in answering in place of vLLM: rows reach the bank
    as with the OpenAI path. The second block holds only rows whose mining fails; the miner's
    batches of 3 keep the blocks apart, the judge's batches of 6 merge them, so the judge's
    processor merges a block in which it takes no row with one in which it takes all."""
    import ray

    tokenizer = tokenizer_folder(tmp_path / "model")
    cfg = config(f"llm.model={tokenizer}")
    texts = ["Tea at noon."] * 3 + ["BROKEN answer please", "ENGINE-FAIL here", "BROKEN again"]
    rows = [history(i, text) for i, text in enumerate(texts)]
    table = pa.Table.from_pylist(
        [{k: v for k, v in r.items() if k != "gender"} for r in rows], schema=HISTORY_COLUMNS
    ).append_column("gender", pa.array(["female"] * len(rows)))
    stages = [
        (mine.mine_stage(cfg), batches_of(cfg.stage_llm("mine"), 3)),
        (judge.judge_stage(cfg, after="mine"), batches_of(cfg.stage_llm("judge"), 6)),
    ]
    ds = ray.data.from_arrow([table.slice(0, 3), table.slice(3, 3)])
    for stage, llm in stages:
        ds = map_vllm_stage(ds, stage, stand_in_processor(stage, llm, tokenizer))
    expected = pa.schema(
        [*table.schema, *output_schema(stages[0][0]), *output_schema(stages[1][0])]
    )
    assert ds.schema().base_schema == expected
    plan = [("mine", "personas", "history_id"), ("judge", "quality", KEY)]
    sink = PartSink(tmp_path / "bank", stage_split(plan), "bank")
    ds.write_datasink(sink)

    counts = sink.counts
    assert (counts["mine:in"], counts["mine:out"], counts["mine:failed"]) == (6, 3, 3)
    assert (counts["judge:in"], counts["judge:out"], counts["judge:failed"]) == (3, 3, 0)
    assert counts["mine:requests"] == 6 and counts["mine:prompt_tokens"] > 0
    bank = tmp_path / "bank"
    personas = read_group(bank, "personas")
    assert sorted(personas.column(KEY).to_pylist()) == [f"u{i}/0" for i in range(3)]
    assert personas.column("narrative").to_pylist() == [PERSONA["narrative"]] * 3
    assert set(personas.column("model").to_pylist()) == {cfg.llm.model}
    assert read_group(bank, "quality").num_rows == 3
    failures = read_failures(bank)
    reasons = dict(
        zip(
            failures.column("input_id").to_pylist(),
            failures.column("reason").to_pylist(),
            strict=True,
        )
    )
    broken = "invalid answer: no JSON object in the answer"
    assert reasons == {
        "u3/0": broken,
        "u4/0": "vLLM engine error: ValueError: prompt is longer than max_model_len",
        "u5/0": broken,
    }
    assert pc.all(pc.equal(failures.column("stage"), "mine")).as_py()


def test_build_processor_builds_without_vllm(ray_local, tmp_path):
    """`build_processor` itself runs here (vLLM is imported only when an engine actor starts):
    the engine stage asks for the configured GPUs and accelerator, and our row functions run
    inside Ray's preprocess wrapper."""
    stage, _, row = stage_and_row("mine")
    settings = [f"llm.model={tmp_path}", "llm.vllm.accelerator_type=A10G", "llm.vllm.concurrency=3"]
    llm = config(*settings).llm
    processor = vllm_processor(stage, llm)
    assert processor.list_stage_names() == [
        "ChatTemplateStage",
        "TokenizeStage",
        "vLLMEngineStage",
        "DetokenizeStage",
    ]
    engine = processor.get_stage_by_name("vLLMEngineStage")
    kwargs = engine.map_batches_kwargs
    assert (kwargs["num_gpus"], kwargs["accelerator_type"]) == (1, "A10G")
    assert (kwargs["compute"].min_size, kwargs["compute"].max_size) == (1, 3)
    assert engine.fn_constructor_kwargs["model"] == str(tmp_path)
    assert engine.fn_constructor_kwargs["should_continue_on_error"] is True
    data = processor.preprocess(packed(row))["__data"]
    assert data["messages"] == preprocess(packed(row), stage=stage, llm=llm)["messages"]

    two_gpus = vllm_processor(stage, config(*settings, "llm.vllm.tensor_parallel_size=2").llm)
    engine = two_gpus.get_stage_by_name("vLLMEngineStage")
    # Tensor parallel: vLLM's Ray executor places its GPU workers in a placement group.
    assert engine.map_batches_kwargs["num_gpus"] == 0
    assert "ray_remote_args_fn" in engine.map_batches_kwargs


def test_build_wires_the_stages_to_processors(ray_local, tmp_path, monkeypatch):
    """`build` with llm.engine=ray-vllm starts no endpoint (the guard would say so), builds the
    mine and judge processors, and refuses per-item scoring before anything runs."""
    from personagen.commands.build import build
    from personagen.runtime.executors import vllm as ray_vllm

    built = []

    def counted(stage, llm):
        built.append(stage.name)
        return vllm_processor(stage, llm)

    monkeypatch.setattr(ray_vllm, "vllm_processor", counted)

    examples = Path(__file__).resolve().parents[1] / "examples" / "histories.jsonl"
    settings = [f"llm.model={tmp_path}", f"build.input={examples}"]
    with pytest.raises(PersonagenError, match=r"score\.mode=logprob sends one request per item"):
        build(config(*settings, "score.mode=logprob"), tmp_path / "bank")
    assert built == ["mine", "judge"]
    with pytest.raises(PersonagenError, match=r"score\.consistency"):
        build(config(*settings, "score.consistency=true"), tmp_path / "bank")

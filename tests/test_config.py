import pytest

from personagen.config import Config, load_config
from personagen.errors import ConfigError

CONTRACT_KEYS = [
    "llm.base_url",
    "llm.model",
    "llm.api_key_env",
    "llm.concurrency",
    "llm.timeout_s",
    "llm.max_retries",
    "ray.address",
    "seed",
]


def _get(cfg: Config, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def test_contract_keys_exist_and_defaults_are_offline():
    cfg = load_config()
    for key in CONTRACT_KEYS:
        _get(cfg, key)
    assert cfg.llm.base_url is None  # None = the embedded llama.cpp server
    assert cfg.ray.address is None
    assert cfg.ingest.redact.enabled


def test_yaml_then_overrides_then_seed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("llm:\n  concurrency: 16\n  model: gpt-4o-mini\nseed: 3\n")
    cfg = load_config(path, ["llm.concurrency=64", "ingest.window.strategy=recent"], seed=9)
    assert cfg.llm.concurrency == 64
    assert cfg.llm.model == "gpt-4o-mini"
    assert cfg.ingest.window.strategy == "recent"
    assert cfg.seed == 9
    assert load_config(path).seed == 3


def test_override_values_are_typed():
    cfg = load_config(
        overrides=[
            "llm.timeout_s=2.5",
            "ingest.redact.enabled=false",
            "ingest.redact.types=[email, url]",
        ]
    )
    assert cfg.llm.timeout_s == 2.5
    assert cfg.ingest.redact.enabled is False
    assert cfg.ingest.redact.types == ["email", "url"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("llm.concurrancy=4", "allowed at llm: base_url, model"),
        ("nosuch=1", "allowed at the top level"),
        ("llm.concurrency=0", "llm.concurrency"),
        ("llm.concurrency=lots", "llm.concurrency"),
        ("ingest.window.strategy=bogus", "'recent', 'spread' or 'windows'"),
        ("seed.x=1", "seed is a value"),
        ("novalue", "key=value"),
    ],
)
def test_bad_keys_and_values_name_the_key_and_the_allowed_values(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert expected in str(info.value)


def test_unknown_key_in_yaml_lists_allowed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("llm:\n  temprature: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "llm.temprature" in str(info.value)
    assert "temperature" in str(info.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("llm: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_masked_hides_key_and_url_credentials(monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-test-very-secret-123")
    cfg = load_config(
        overrides=[
            "llm.api_key_env=MY_LLM_KEY",
            "llm.base_url=https://user:hunter2@api.example.com/v1?api_key=abcdef",
        ]
    )
    assert cfg.llm.api_key() == "sk-test-very-secret-123"
    text = str(cfg.masked())
    assert "sk-test-very-secret-123" not in text
    assert "hunter2" not in text
    assert "abcdef" not in text
    assert cfg.masked()["llm"]["api_key"] == "****"
    assert cfg.masked()["llm"]["api_key_env"] == "MY_LLM_KEY"


def test_mapping_sections_take_any_name_then_check_their_keys():
    cfg = load_config(overrides=["llm.prices.gpt-4o-mini.prompt=0.15"])
    assert cfg.llm.prices["gpt-4o-mini"].prompt == 0.15
    with pytest.raises(
        ConfigError, match=r"allowed at llm\.prices\.gpt-4o-mini: prompt, completion"
    ):
        load_config(overrides=["llm.prices.gpt-4o-mini.promt=0.15"])

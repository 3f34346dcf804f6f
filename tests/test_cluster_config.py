"""cluster.yaml is a valid Ray cluster launcher config (the schema shipped inside `ray`)."""

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema(cluster):
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(cluster, schema)


def test_cluster_yaml_has_cpu_and_gpu_workers_with_bounds(cluster):
    types = cluster["available_node_types"]
    assert cluster["head_node_type"] in types
    workers = {name: t for name, t in types.items() if name != cluster["head_node_type"]}
    assert any("g5" in t["node_config"]["InstanceType"] for t in workers.values())
    for node_type in workers.values():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"]
    assert sum(t["max_workers"] for t in workers.values()) <= cluster["max_workers"]


def test_setup_installs_the_project(cluster):
    setup = " ".join(cluster["setup_commands"])
    assert "pip install" in setup and "personagen" in setup
    assert "/home/ubuntu/personagen" in cluster["file_mounts"]


def test_an_invalid_config_is_rejected():
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {
                "cluster_name": "x",
                "provider": {"type": "aws"},
                "available_node_types": {"w": {"node_config": {}}},
            },
            schema,
        )

"""Configuration: defaults everywhere, errors that name the key, examples and schema."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from actors.config import ConfigError, PipelineConfig, json_schema, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_empty_config_is_the_demo_default() -> None:
    cfg = load_config(None)
    assert cfg.backend == "ray" and cfg.workers == 2
    assert cfg.source.socket_kind == "sub" and cfg.reducers == [{"type": "moench"}]
    assert parse_config(None) == cfg == parse_config({})


@pytest.mark.parametrize(("data", "fragments"), [
    ({"sourc": {}}, ["sourc: unknown key"]),
    ({"workers": 0}, ["workers:", "greater than 0"]),
    ({"overflow": "maybe"}, ["overflow:", "'block' or 'drop'", "'maybe'"]),
    ({"source": {"protocol": "eiger"}}, ["source.protocol:", "dectris-v2", "'eiger'"]),
    ({"source": {"endpoint": "localhost:5000"}}, ["source.endpoint:", "tcp://"]),
    ({"source": {"geometry": {"rows": 10, "cols": 10, "dtype": "int3"}}},
     ["source.geometry.dtype", "uint16"]),
    ({"batch": {"max_frames": 0}}, ["batch.max_frames"]),
    ({"tango": {"device": "just-a-name"}}, ["tango.device", "domain/family/member"]),
    ({"reducers": []}, ["reducers", "at least one"]),
    ({"reducers": [{"type": "sum"}, {"type": "sum"}]}, ["reducers", "unique", "'name'"]),
    ({"reducers": [{"type": "moench", "counting_sigma": -1}]},
     ["reducers", "moench", "counting_sigma", "greater than or equal to 0"]),
    ({"reducers": [{"type": "moench", "processing_pattern": "ped,xx"}]},
     ["processing_pattern", "xx"]),
    ({"reducers": [{"type": "radial", "center": [1, 2], "bins": 0}]}, ["bins"]),
    ({"reducers": [{"type": "nosuch"}]}, ["reducers", "nosuch"]),
    ({"workers": 8, "max_inflight": 4}, ["max_inflight", "workers"]),
])
def test_errors_name_the_bad_key(data: dict, fragments: list[str]) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.yaml")
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, text


def test_yaml_and_toml_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "workers: 3\nmax_inflight: 6\nsource: {protocol: dectris-v2}\n")
    (tmp_path / "b.toml").write_text(
        'workers = 3\nmax_inflight = 6\n[source]\nprotocol = "dectris-v2"\n')
    a, b = load_config(tmp_path / "a.yaml"), load_config(tmp_path / "b.toml")
    assert a == b and a.source.socket_kind == "pull"
    (tmp_path / "bad.yaml").write_text("workers: [unclosed\n")
    with pytest.raises(ConfigError, match="does not parse"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "deploy" / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_example_configs_load_and_match_the_schema(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    jsonschema.validate(yaml.safe_load(path.read_text()), json.loads(json_schema()))


def test_committed_schema_is_current() -> None:
    committed = json.loads((ROOT / "deploy" / "rayline.schema.json").read_text())
    assert committed == json.loads(json_schema()), "run: rayline config schema > " \
        "deploy/rayline.schema.json"


def test_batch_frames_auto_grows_batches_of_small_frames_only() -> None:
    batch = parse_config({"source": {"endpoint": "tcp://127.0.0.1:5"}}).batch
    assert batch.max_frames == "auto"
    assert batch.frames_for(400 * 400 * 2) == 100  # MOENCH: 32 MB a batch
    assert batch.frames_for(1065 * 1030 * 2) == 32  # 1M and larger: 32
    assert batch.frames_for(2167 * 2070 * 2) == 32
    assert batch.frames_for(32 * 32 * 2) == 1024  # (at most)
    fixed = parse_config({"source": {"endpoint": "tcp://127.0.0.1:5"},
                          "batch": {"max_frames": 8}}).batch
    assert fixed.frames_for(400 * 400 * 2) == 8
    for bad in (0, 5000, "many"):
        with pytest.raises(ConfigError, match="max_frames"):
            parse_config({"source": {"endpoint": "tcp://127.0.0.1:5"},
                          "batch": {"max_frames": bad}})

"""deploy/: the YAML files parse and reference entry points that exist."""

from __future__ import annotations

import configparser
import shlex
import tomllib
from pathlib import Path

import yaml

from actors.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_console_script_points_at_the_cli() -> None:
    from actors import cli

    assert SCRIPTS == {"rayline": "actors.cli:main"}
    assert callable(cli.main)


def test_ray_cluster_launcher_config() -> None:
    cfg = yaml.safe_load((DEPLOY / "ray" / "cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "head_start_ray_commands",
                "worker_start_ray_commands", "setup_commands"):
        assert key in cfg
    assert cfg["provider"]["type"] == "local" and cfg["provider"]["worker_ips"]
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("pip install rayline" in c for c in cfg["setup_commands"])


def test_kuberay_manifest_runs_the_service_with_a_valid_config() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "raycluster.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"RayCluster", "ConfigMap"}
    head = kinds["RayCluster"]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "rayline run /etc/rayline/config.yaml" in " ".join(head["args"])
    assert kinds["RayCluster"]["spec"]["workerGroupSpecs"][0]["replicas"] >= 1
    parse_config(yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"]), "configmap")


def test_systemd_units_start_existing_commands() -> None:
    commands = {"ray", *SCRIPTS}
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(unit)
        assert {"Unit", "Service", "Install"} <= set(parser.sections()), unit.name
        exe = Path(shlex.split(parser["Service"]["ExecStart"])[0]).name
        assert exe in commands, (unit.name, exe)
    rayline = (DEPLOY / "systemd" / "rayline.service").read_text()
    assert "ExecStart=/opt/rayline/bin/rayline run " in rayline

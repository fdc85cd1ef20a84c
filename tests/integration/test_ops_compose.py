"""compose.yaml: valid for docker-compose (checked with `docker-compose config`; no engine is
needed), every CELERIAC_* variable it or the Dockerfile passes is one the binaries accept (as
listed by `worker --help` / `producer --help`), and the worker services follow the native
topology: one worker per queue, users and email. Needs no servers."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("CELERIAC_BUILD", ROOT / "build"))
COMPOSE = ROOT / "compose.yaml"
ENV_NAME = re.compile(r"CELERIAC_[A-Z0-9_]+")

pytestmark = pytest.mark.skipif(not shutil.which("docker-compose"),
                                reason="docker-compose not installed (Debian: docker-compose)")


def compose_config(*profiles):
    args = ["docker-compose", "-f", str(COMPOSE), "--project-directory", str(ROOT)]
    for p in profiles:
        args += ["--profile", p]
    p = subprocess.run([*args, "config"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    import yaml

    return yaml.safe_load(p.stdout)


@pytest.fixture(scope="module")
def config():
    return compose_config("tools", "monitoring")


def accepted(binary, *args):
    p = subprocess.run([str(BUILD / "bin" / binary), *args, "--help"], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    return set(ENV_NAME.findall(p.stdout))


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return env


def test_config_is_valid_with_and_without_profiles(config):
    base = compose_config()
    assert {"rabbitmq", "redis", "worker-users", "worker-email"} <= set(base["services"])
    assert {"producer", "prometheus"} <= set(config["services"])


def test_servers_have_healthchecks_and_settings(config):
    s = config["services"]
    assert s["rabbitmq"]["healthcheck"]["test"]
    assert "consumer_timeout" in env_of(s["rabbitmq"])["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    ports = [str(p["target"]) if isinstance(p, dict) else p for p in s["rabbitmq"]["ports"]]
    assert any(":15672" in p for p in ports), ports  # the management UI
    assert "--appendonly" in s["redis"]["command"] and s["redis"]["healthcheck"]["test"]
    for w in ("worker-users", "worker-email"):
        svc = s[w]
        # scalable: no container_name and no fixed host port
        assert "container_name" not in svc and not svc.get("ports")
        assert svc["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert "/readyz" in " ".join(svc["healthcheck"]["test"])
    assert s["producer"]["entrypoint"] == ["producer"]


def test_every_celeriac_variable_is_accepted(config):
    worker_env, producer_env = accepted("worker"), accepted("producer")
    assert "CELERIAC_QUEUE" in worker_env and "CELERIAC_BROKER_URL" in producer_env
    for name, svc in config["services"].items():
        used = {k for k in env_of(svc) if k.startswith("CELERIAC_")}
        if name.startswith("worker-"):
            assert used and used <= worker_env, (name, used - worker_env)
        elif name == "producer":
            assert used and used <= producer_env, (name, used - producer_env)
        else:
            assert not used, name
    dockerfile = set(ENV_NAME.findall((ROOT / "Dockerfile").read_text()))
    assert dockerfile <= worker_env, dockerfile - worker_env


def test_queues_follow_the_native_topology(config):
    queues = {}
    for name, svc in config["services"].items():
        if name.startswith("worker-"):
            queues[name] = env_of(svc)["CELERIAC_QUEUE"]
    # one worker service per queue, named after it
    assert queues == {"worker-users": "users", "worker-email": "email"}
    for q in queues.values():  # a task 'svc.x' goes to queue 'svc': the service of that name
        assert (ROOT / "services" / q / f"{q}.c").is_file()
        assert (BUILD / "services" / f"{q}.so").is_file()
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    for q in queues.values():
        assert f"worker --queue {q} " in demo


def test_prometheus_scrapes_the_metrics_port(config):
    import yaml

    prom = config["services"]["prometheus"]
    assert prom["profiles"] == ["monitoring"]
    vol = prom["volumes"][0]
    src = Path(vol["source"] if isinstance(vol, dict) else vol.split(":")[0])
    assert src.is_file(), src
    scrape = yaml.safe_load(src.read_text())["scrape_configs"][0]["dns_sd_configs"][0]
    ports = {env_of(config["services"][w])["CELERIAC_METRICS_PORT"]
             for w in ("worker-users", "worker-email")}
    assert ports == {str(scrape["port"])}
    assert set(scrape["names"]) == {"worker-users", "worker-email"}
    for w in ("worker-users", "worker-email"):
        assert env_of(config["services"][w])["CELERIAC_METRICS_BIND"] == "0.0.0.0"

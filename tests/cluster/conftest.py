"""Fixtures for the cluster suite (make test-cluster): a private three-node RabbitMQ cluster and
Redis on loopback from scripts/cluster.sh, started once per session under .run/ and stopped at
the end. CELERIAC_CLUSTER_RUN_DIR=<dir of a cluster already up> reuses one instead (not stopped).
"""

import os
import secrets
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("CELERIAC_BUILD", ROOT / "build"))
SCRIPT = ROOT / "scripts" / "cluster.sh"


def parse_env(text):
    env = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            k, v = line[len("export "):].split("=", 1)
            env[k] = v.strip("'")
    return env


class Cluster:
    def __init__(self, run_dir, env):
        self.run_dir = run_dir
        self.env = env
        self.urls = [env[f"CELERIAC_CLUSTER_URL_{n}"] for n in (1, 2, 3)]
        self.backend = env["CELERIAC_RESULT_BACKEND"]

    def script(self, *args, timeout=180):
        p = subprocess.run([str(SCRIPT), *args], env=dict(os.environ, CELERIAC_RUN_DIR=self.run_dir),
                           capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, f"cluster.sh {' '.join(args)}: {p.stderr}"
        return p.stdout

    def ctl(self, node, *args):
        return self.script("ctl", str(node), *args)


@pytest.fixture(scope="session")
def cluster():
    if not (BUILD / "bin" / "worker").exists():
        pytest.fail(f"{BUILD}/bin/worker missing: run make first", pytrace=False)
    reuse = os.environ.get("CELERIAC_CLUSTER_RUN_DIR")
    run_dir = reuse or str(ROOT / ".run" / f"cluster-{os.getpid()}-{secrets.token_hex(3)}")
    env = dict(os.environ, CELERIAC_RUN_DIR=run_dir)
    p = subprocess.run([str(SCRIPT), "env" if reuse else "up"], env=env, capture_output=True,
                       text=True, timeout=300)
    try:
        assert p.returncode == 0, f"scripts/cluster.sh failed: {p.stderr}"
        yield Cluster(run_dir, parse_env(p.stdout))
    finally:
        if not reuse:
            subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, timeout=300)
            subprocess.run(["rm", "-rf", run_dir])

"""conftest.py for tests/chaos: one private RabbitMQ+Redis stack for the session (the scenarios
restart servers, which must never touch the shared stack), a per-scenario run, and the summary
lines "chaos <scenario>: sent N, completed N, duplicates 0, lost 0, time T s" at the end."""
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chaoslib  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    run_dir = chaoslib.ROOT / ".run" / f"chaos-{os.getpid()}-{random.randrange(1 << 24):x}"
    s = chaoslib.Stack(run_dir)
    try:
        s.up()
        yield s
    finally:
        try:
            s.down()
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def tmp_run_dir():
    with tempfile.TemporaryDirectory(prefix="celeriac-chaos-") as d:
        yield d


def pytest_terminal_summary(terminalreporter):
    if chaoslib.SUMMARY:
        terminalreporter.section("chaos summary")
        for line in chaoslib.SUMMARY:
            terminalreporter.write_line(line)

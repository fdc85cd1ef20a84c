"""`make demo` runs from start to end and shows what the README promises: three users created,
a duplicate and an invalid email failing with the handler's ValueError, and one welcome mail per
new user delivered through the email queue."""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_make_demo(tmp_path):
    env = dict(os.environ,
               CELERIAC_DEMO_RUN_DIR=str(tmp_path / "stack"),
               CELERIAC_DEMO_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run(["make", "-s", "demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    out = proc.stdout  # with stderr, where the producer reports a failed job
    assert proc.returncode == 0, out
    for user in ("alice", "bob", "carol"):
        assert f'"username": "{user}"' in out, out
    assert "ValueError: username 'alice' already exists" in out
    assert "ValueError: invalid email 'not-an-email'" in out
    mails = [json.loads(line) for line in out.splitlines() if line.startswith('{"outbox_id"')]
    assert sorted(m["to"] for m in mails) == [
        "alice@example.com", "bob@example.com", "carol@example.com"]
    assert "Try next" in out
    # the demo stops what it started
    status = subprocess.run(["scripts/stack.sh", "status"], cwd=ROOT, capture_output=True,
                            text=True, env=dict(os.environ, CELERIAC_RUN_DIR=str(tmp_path / "stack")))
    assert "rabbitmq: down" in status.stdout and "redis: down" in status.stdout

"""Packaging: `make install DESTDIR=<tmp> PREFIX=/usr` installs a usable tree: binaries, the
library (static, shared with soname links), headers that compile on their own, a pkg-config file
with the right prefix, the services and a systemd unit template that systemd accepts. Needs no
servers."""

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("CELERIAC_BUILD", ROOT / "build"))

CLIENT = r"""
#include <celeriac/broker.h>
#include <celeriac/client.h>
#include <celeriac/service.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    char red[128];
    cel_url_redact("amqp://u:secret@h:5672/", red, sizeof red);
    if (!cel_broker_class_for("amqp://h/") || strstr(red, "secret"))
        return 1;
    printf("celeriac client ok: %s\n", red);
    return 0;
}
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    dest = tmp_path_factory.mktemp("destdir")
    p = subprocess.run(["make", "-C", str(ROOT), f"BUILD={BUILD}", "install", f"DESTDIR={dest}",
                        "PREFIX=/usr"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return dest


def test_tree(tree):
    usr = tree / "usr"
    for f in ("bin/worker", "bin/producer"):
        assert os.access(usr / f, os.X_OK), f
    lib = usr / "lib"
    assert (lib / "libceleriac.a").is_file()
    real = lib / "libceleriac.so.0.1.0"
    assert real.is_file() and not real.is_symlink()
    assert os.readlink(lib / "libceleriac.so.0") == "libceleriac.so.0.1.0"
    assert os.readlink(lib / "libceleriac.so") == "libceleriac.so.0"
    soname = subprocess.run(["objdump", "-p", str(real)], capture_output=True, text=True).stdout
    assert "SONAME               libceleriac.so.0" in soname
    for h in ("celeriac.h", "broker.h", "client.h", "service.h", "common/message.h"):
        assert (usr / "include/celeriac" / h).is_file(), h
    services = sorted(p.name for p in (lib / "celeriac/services").iterdir())
    assert {"users.so", "email.so"} <= set(services)
    pc = (lib / "pkgconfig/celeriac.pc").read_text()
    assert "prefix=/usr\n" in pc
    assert "worker.env.example" in os.listdir(usr / "share/celeriac")


def test_installed_worker_finds_its_services(tree):
    """The installed worker's default --services is <exe>/../lib/celeriac/services."""
    p = subprocess.run([str(tree / "usr/bin/worker"), "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--metrics-port" in p.stdout


def pkg_env(tree):
    env = dict(os.environ)
    env["PKG_CONFIG_SYSROOT_DIR"] = str(tree)
    env["PKG_CONFIG_PATH"] = str(tree / "usr/lib/pkgconfig")
    env["PKG_CONFIG_LIBDIR"] = ":".join(["/usr/lib/x86_64-linux-gnu/pkgconfig", "/usr/lib/pkgconfig",
                                         "/usr/share/pkgconfig"])
    return env


def pkg_config(tree, *args):
    p = subprocess.run(["pkg-config", *args, "celeriac"], env=pkg_env(tree), capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


@pytest.mark.parametrize("link", ["shared", "static"])
def test_client_program_builds_against_the_tree(tree, tmp_path, link):
    src = tmp_path / "client.c"
    src.write_text(CLIENT)
    exe = tmp_path / f"client-{link}"
    cflags = pkg_config(tree, "--cflags")
    assert f"-I{tree}/usr/include" in cflags
    if link == "shared":
        libs = pkg_config(tree, "--libs")
    else:  # the archive first, then everything it needs
        libs = [str(tree / "usr/lib/libceleriac.a")] + \
            [f for f in pkg_config(tree, "--static", "--libs") if f != "-lceleriac"]
    p = subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-o", str(exe), str(src), *cflags,
                        *libs], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    env = dict(os.environ, LD_LIBRARY_PATH=str(tree / "usr/lib"))
    r = subprocess.run([str(exe)], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "client ok: amqp://u:***@h:5672/" in r.stdout, r.stdout + r.stderr
    if link == "shared":
        ldd = subprocess.run(["ldd", str(exe)], env=env, capture_output=True, text=True).stdout
        assert f"{tree}/usr/lib/libceleriac.so.0" in ldd


def unit_text(tree):
    return (tree / "usr/lib/systemd/system/celeriac-worker@.service").read_text()


def test_unit_contents(tree):
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read_string(unit_text(tree))
    svc = cp["Service"]
    assert svc["ExecStart"].startswith("/usr/bin/worker --queue %i")
    assert "EnvironmentFile=/etc/celeriac/worker.env" in unit_text(tree)
    assert svc["Restart"] == "on-failure"
    assert svc["KillSignal"] == "SIGTERM"
    assert int(svc["TimeoutStopSec"]) > 60  # the worker's default --shutdown-timeout
    for hardening in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome"):
        assert hardening in svc, hardening
    assert cp["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed "
                    "(test_unit_contents still parses the unit)")
def test_unit_verifies(tree, tmp_path):
    # systemd-analyze checks that ExecStart exists: point it at the installed binary
    text = unit_text(tree).replace("/usr/bin/worker", str(tree / "usr/bin/worker"))
    (tmp_path / "celeriac-worker@.service").write_text(text)
    p = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "celeriac-worker@users.service")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # unknown keys are only warnings: none allowed
    assert "celeriac-worker@" not in p.stderr, p.stderr

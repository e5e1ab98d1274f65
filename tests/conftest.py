"""Shared test setup: no network, quiet TensorFlow, the fixtures folder."""

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FIXTURES = Path(__file__).parent / "fixtures"

# Parity tests append "component: max abs error" lines here; each test's lines travel on its
# report (so that pytest-xdist's workers hand them to the main process) and are printed after
# the run.
PARITY_LINES = []
_MEASURED = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.when == "teardown" and PARITY_LINES:
        report.user_properties.extend(("parity", line) for line in PARITY_LINES)
        del PARITY_LINES[:]


def pytest_runtest_logreport(report):
    _MEASURED.extend(line for key, line in report.user_properties if key == "parity")


def pytest_terminal_summary(terminalreporter):
    if _MEASURED:
        terminalreporter.section("parity with diffusers: measured errors")
        for line in _MEASURED:
            terminalreporter.write_line(line)


class NetworkBlocked(RuntimeError):
    pass


def _guarded_connect(original):
    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host in ("127.0.0.1", "::1", "localhost"):
            return original(self, address)
        if self.family == socket.AF_UNIX:
            return original(self, address)
        raise NetworkBlocked(f"a test tried to reach {address!r}: tests run offline")

    return connect


@pytest.fixture(autouse=True, scope="session")
def _block_network():
    """Every test runs with outbound sockets blocked, so nothing can quietly depend on a
    download."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    socket.socket.connect = _guarded_connect(original_connect)
    socket.socket.connect_ex = _guarded_connect(original_connect_ex)
    yield
    socket.socket.connect = original_connect
    socket.socket.connect_ex = original_connect_ex


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES


@pytest.fixture(scope="session")
def golden():
    """Arrays computed by diffusers on the tiny fixtures (tools/make_parity_fixtures.py)."""
    import numpy as np

    return np.load(FIXTURES / "golden.npz")


@pytest.fixture(scope="session")
def golden_info():
    """How each golden array was made: prompts, configs, cases."""
    import json

    return json.loads((FIXTURES / "golden.json").read_text())

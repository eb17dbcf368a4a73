"""Fixtures: the real collector binary, built once per session and started per test."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentmeter.v1 import usage_pb2, usage_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[3]
READY_TIMEOUT = 30.0


def eventually(what: str, cond: Callable[[], object], timeout: float = 20.0, interval: float = 0.02) -> object:
    """Poll cond until it returns a truthy value (returned) or fail after timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        last = cond()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout}s, still not {what} (last: {last!r})")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def collector_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collector, built from this checkout with `go build`."""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
    if go is None:
        pytest.fail("go is not on PATH: the tests need it to build the collector")
    out = tmp_path_factory.mktemp("bin") / "collector"
    subprocess.run([go, "build", "-o", str(out), "./cmd/collector"], cwd=REPO_ROOT, check=True)
    return out


class Sidecar:
    """One collector process on fixed loopback ports (kept across restarts)."""

    def __init__(self, binary: Path, workdir: Path, receiver: str = "", extra_config: str = "",
                 endpoint: str = "") -> None:
        self.binary = binary
        self.workdir = workdir
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.endpoint = endpoint or f"127.0.0.1:{self.grpc_port}"
        self.target = self.endpoint
        self.receiver = receiver
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._channel: grpc.Channel | None = None

    def config(self) -> str:
        base = f"""receiver:
  grpc:
    endpoint: "{self.endpoint}"
{self.receiver}http:
  endpoint: "127.0.0.1:{self.http_port}"
log:
  level: debug
  format: text
"""
        return base + self.extra_config

    def start(self, wait: bool = True) -> Sidecar:
        self.starts += 1
        path = self.workdir / f"config-{self.starts}.yaml"
        path.write_text(self.config())
        self.log = open(self.workdir / f"collector-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(self.binary), "--config", str(path)], stdout=self.log, stderr=subprocess.STDOUT
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"collector exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2) as r:
                    return bool(r.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        eventually("collector ready", ready, timeout=READY_TIMEOUT)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.log.close()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        return code

    def output(self) -> str:
        text = []
        for i in range(1, self.starts + 1):
            p = self.workdir / f"collector-{i}.log"
            if p.exists():
                text.append(p.read_text(errors="replace"))
        return "\n".join(text)

    # -- what the sidecar saw, asked directly (not through the client under test)

    def usage(self, conversation_id: str, token: str = "") -> usage_pb2.ConversationUsage | None:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.target)
        stub = usage_pb2_grpc.UsageServiceStub(self._channel)
        md = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            return stub.GetUsage(usage_pb2.GetUsageRequest(conversation_id=conversation_id), timeout=5,
                                 metadata=md).usage
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of /metrics by (name, labels without otel_scope_*)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = frozenset((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope_"))
                samples[(s.name, labels)] = samples.get((s.name, labels), 0.0) + s.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of name whose labels include labels."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and want <= set(ls))


@pytest.fixture
def make_sidecar(collector_bin: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Sidecar]]:
    """Sidecar factory: make_sidecar(receiver="", extra_config="", start=True, endpoint="");
    receiver holds more lines of the receiver section, indented by two spaces; endpoint
    replaces receiver.grpc.endpoint (default 127.0.0.1 and a free port)."""
    made: list[Sidecar] = []

    def make(receiver: str = "", extra_config: str = "", start: bool = True, endpoint: str = "") -> Sidecar:
        work = tmp_path / f"sidecar-{len(made)}"
        work.mkdir()
        s = Sidecar(collector_bin, work, receiver, extra_config, endpoint)
        made.append(s)
        if start:
            s.start()
        return s

    yield make
    failed = request.node.stash.get(_failed_key, False)
    for s in made:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        if failed:
            print(f"--- collector output ({s.target}) ---\n{s.output()}")


@pytest.fixture
def sidecar(make_sidecar: Callable[..., Sidecar]) -> Sidecar:
    return make_sidecar()


# A model no one else prices, priced by the tests' own agentmeter price table.
TEST_MODEL = "claude-agentmeter-test-1"
TEST_PRICES = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75, "cache_write_1h": 6.0}  # per M


def test_model_cost(uncached: int = 0, read: int = 0, write_5m: int = 0, write_1h: int = 0, output: int = 0) -> float:
    """The cost of a TEST_MODEL call, computed here from TEST_PRICES."""
    p = TEST_PRICES
    return (uncached * p["input"] + read * p["cache_read"] + write_5m * p["cache_write"]
            + write_1h * p["cache_write_1h"] + output * p["output"]) / 1e6


test_model_cost.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture
def priced_sidecar(make_sidecar: Callable[..., Sidecar], tmp_path: Path) -> Sidecar:
    """A sidecar whose pricing.table is an agentmeter table pricing TEST_MODEL (provider anthropic)."""
    table = tmp_path / "prices.yaml"
    table.write_text(
        f'version: "python-tests"\nmodels:\n  - provider: anthropic\n    name: {TEST_MODEL}\n'
        + "".join(f"    {k}: {v}\n" for k, v in TEST_PRICES.items())
    )
    return make_sidecar(extra_config=f"pricing:\n  table: {str(table)!r}\n  format: agentmeter\n")


_failed_key = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    rep = yield
    if rep.when == "call" and rep.failed:
        item.stash[_failed_key] = True
    return rep

"""Zero lost, zero doubled: seeded runs that SIGKILL the pushing client or the collector at a
chosen request (before it reaches the collector, or after the collector committed it but before
the client heard back), amid 429s, 503s and connection resets. At least 20 runs per backend,
exact counts per installation, and every chain intact."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading

import pytest

from .collectorkit import Collector, Local, db_url, issue, stored, synthetic  # noqa: F401
from .faultproxy import FaultProxy

SEEDS = 20
FAULTS = ("429", "503", "reset_before", "reset_after")
KILLS = ("client_before", "client_after", "collector_before", "collector_after")


class Scenario:
    """The proxy's plan for one seeded run: faults at random, one SIGKILL at a chosen request."""

    def __init__(self, seed: int, requests_before: int):
        rng = random.Random(seed)
        self.rng = rng
        self.records = rng.randint(20, 90)
        self.batch = rng.choice((4, 7, 11))
        self.kill = KILLS[seed % len(KILLS)]  # every kind equally often; where, at random
        # Any request of the push: every batch is sent at least once, so this one comes.
        self.kill_at = requests_before + rng.randint(0, -(-self.records // self.batch) - 1)
        self.killed = False

    def plan(self, n: int) -> str:
        if n == self.kill_at and not self.killed:
            return "hook_before" if self.kill.endswith("before") else "hook_after"
        if self.rng.random() < 0.15:
            return self.rng.choice(FAULTS)
        return "pass"


def push(local: Local, url: str, token: str, batch: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kubectl_record", "push", "--wait", "--batch-size", str(batch),
         "--backoff-base", "0.005", "--backoff-cap", "0.05"],
        env=local.env(url, token), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigkill_matrix(db_url, tmp_path):
    collector = Collector(db_url).start()
    token = issue(db_url, "alice")
    current: dict = {}
    restarts: list[threading.Thread] = []

    def hook(n: int) -> None:
        scenario = current["scenario"]
        scenario.killed = True
        if scenario.kill.startswith("client"):
            current["client"].send_signal(signal.SIGKILL)
            current["client"].wait()
        else:
            collector.kill(signal.SIGKILL)
            # Back after a moment, on the same port; meanwhile the client keeps retrying.
            t = threading.Thread(target=collector.start)
            t.start()
            restarts.append(t)

    proxy = FaultProxy(collector.port, hook=hook, retry_after="0")
    expected: dict[str, set] = {}
    try:
        with proxy:
            for seed in range(SEEDS):
                scenario = Scenario(seed, proxy.count)
                current["scenario"] = scenario
                proxy.plan = scenario.plan
                local = Local(tmp_path, f"seed{seed}")
                local.add(synthetic(scenario.records))
                for attempt in range(5):
                    current["client"] = client = push(local, proxy.url, token, scenario.batch)
                    _, err = client.communicate(timeout=120)
                    if client.returncode == 0:
                        break
                    assert client.returncode == -signal.SIGKILL, err  # only our SIGKILL may stop it
                else:
                    pytest.fail(f"seed {seed}: push never completed")
                for t in restarts:
                    t.join()
                restarts.clear()
                assert scenario.killed, f"seed {seed}: the kill point was never reached"
                conn = local.connect()
                expected[conn.execute("SELECT value FROM meta WHERE key = 'install_id'").fetchone()[0]] = local.ids()
                conn.close()
        rows = stored(db_url)
        by_install: dict[str, list] = {}
        for record_id, install_id, seq, link, _ in rows:
            by_install.setdefault(install_id, []).append((record_id, seq, link))
        assert set(by_install) == set(expected)
        for install_id, ids in expected.items():
            got = by_install[install_id]
            assert len(got) == len(ids) and {r[0] for r in got} == ids  # none lost, none doubled
            assert [r[1] for r in got] == list(range(1, len(ids) + 1)) and {r[2] for r in got} == {"ok"}
    finally:
        collector.kill()

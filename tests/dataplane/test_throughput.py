"""Measured: the ordered bandwidth is what the traffic gets, in both directions.

Goodput is what iperf3's receiver counts (TCP payload); the wire rate is what the HTB class
itself counted leaving the interface (whole frames), sampled by the test in the middle of the
transfer. The figures are printed (pytest -s shows them; `make test-dataplane` does).
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from iod.network.base import ConnectionSpec
from iod.network.linux.driver import LinuxDriver
from tests.dataplane.conftest import Iperf, class_bytes, require_iperf3

RATES = [10, 100, 1000]


def wire_rate(driver: LinuxDriver, spec: ConnectionSpec, download: bool, seconds: float) -> float:
    """Mbps the class sent over `seconds`, measured from its byte counter."""
    start, t0 = class_bytes(driver, spec, download), time.monotonic()
    time.sleep(seconds)
    end, t1 = class_bytes(driver, spec, download), time.monotonic()
    return (end - start) * 8 / (t1 - t0) / 1e6


@pytest.mark.parametrize("mbps", RATES)
@pytest.mark.parametrize("direction", ["download", "upload"])
def test_a_tcp_stream_gets_the_ordered_rate(
    netdriver: LinuxDriver, mbps: int, direction: str
) -> None:
    require_iperf3()
    spec = ConnectionSpec("con_01KTHROUGHPUT00000000001", "PL0001247634", mbps, "10.0.0.4/30")
    netdriver.provision(spec, "job-1")
    download = direction == "download"
    with Iperf(netdriver, spec) as iperf:
        client = subprocess.Popen(
            iperf.client(5, download=download, extra=("-O", "1")),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.5)  # past slow start
        wire = wire_rate(netdriver, spec, download, 3.0)
        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, out[-2000:] + err[-2000:]
    goodput = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
    print(
        f"\n{direction} at {mbps} Mbps: goodput {goodput:.2f} Mbps ({goodput / mbps:.1%}), "
        f"wire {wire:.2f} Mbps ({wire / mbps:.1%})"
    )
    assert 0.90 * mbps <= goodput <= 1.00 * mbps
    # The shaper's own count: never more than ordered (+3 % for the sampling window's edges).
    # Below the order the 3 s window is at the mercy of the sender (a TCP back-off or a
    # starved iperf3 in those 3 s: 92 % at 100 Mbps while the whole run's goodput was 95.6 %,
    # 95.9 % at 1 Gbps under load), so its lower bound is looser than the whole run's goodput.
    assert 0.85 * mbps <= wire <= 1.03 * mbps

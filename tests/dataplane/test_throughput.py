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
    # Never more than ordered (+3 %: the sampling window's edges); below it by at most 5 %,
    # which a starved sender alone can cause (1 Gbps upload through the IFB at a load
    # average of 12 carried 959 Mbps).
    assert -0.05 * mbps <= wire - mbps <= 0.03 * mbps

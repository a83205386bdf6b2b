#!/usr/bin/env python3
"""The extender and the webhook under abuse: does a normal caller still get answers?

Two servers run in processes of their own, each the real thing from its socket inwards: the
extender (``JsonServer`` with the ``Verbs`` routes over a synthetic cluster, as in
extender_latency.py) and the webhook (``JsonServer`` over TLS with a certificate from
``mipart.cluster.pki``, the ``Webhook`` routes). A third process attacks both, phase after
phase, with what used to hold the old thread-per-connection server:

- ``slowloris``: 500 connections that send a request head one field a second;
- ``half-sent body``: 40 connections that declare a 16 MiB body, send 64 KiB and stall;
- ``1000 connections``: 1000 connections opened at once, each sends one request, then idles;
- ``silent TLS``: 300 connections that never start their TLS handshake (on the extender,
  which speaks plain HTTP here, they are silent connections);
- ``all at once``: the four together.

An attacker cut off by a server reconnects and starts over. Meanwhile a probe, in this
process, sends a normal request every 20 ms to each server on one keep-alive connection (a
filter at the fleet's size to the extender; a mutate of a mipart pod to the webhook) and
records how long the answer took. Printed per phase and server: the probe's p50, p99 and max,
its failures, the server's peak resident memory, and what the extender counted as dropped.
Figures only: nothing here passes or fails (hack/bench/README.md); the targets it prints
are those of the hardening issue: probe p99 <= 100 ms, RSS under the printed bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import multiprocessing
import random
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

# This file runs as a script; its shared helpers are found from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hack.bench.extender_latency import HEADERS, extender_args, node_names, pods, serve
from hack.bench.report import machine, percentile, print_table
from mipart.cluster import pki
from mipart.cluster.http import JsonServer, Limits
from mipart.cluster.tls import ServingTls
from mipart.runtime.logs import configure as configure_logging
from mipart.webhook.mutate import Webhook

TARGET_P99_MS = 100.0
PROBE_INTERVAL_S = 0.02
MIB = 2**20
# What one open connection may cost the server, for the printed bound.
PER_CONNECTION = 24 * 1024
PER_TLS_CONNECTION = 96 * 1024

# --- the webhook process -------------------------------------------------------------------


def serve_webhook(pipe: Connection) -> None:
    configure_logging("console", "error")
    serving = ServingTls()
    policy = pki.Policy(
        dns_names=("localhost",), ip_addresses=("127.0.0.1",), validity=dt.timedelta(days=1)
    )
    material = pki.issue(policy, dt.datetime.now(dt.UTC))
    serving.load(material.tls_crt, material.tls_key, source="bench")
    hook = Webhook()
    server = JsonServer("127.0.0.1", 0, tls=serving.context)
    server.post_routes.update({"/mutate": hook.mutate, "/validate": hook.validate})
    server.get_routes["/healthz"] = lambda: (200, "text/plain", b"ok")
    server.start()
    pipe.send((server.port, material.ca_crt))
    pipe.recv()
    server.stop()


def admission_review(pod: dict[str, Any]) -> bytes:
    pod = {k: v for k, v in pod.items() if k != "status"}
    pod["spec"] = {**pod["spec"], "schedulerName": "default-scheduler"}
    request = {
        "uid": "0b1c2d3e-0000-4000-8000-000000000001",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": pod["metadata"]["namespace"],
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:inference:deployer"},
        "object": pod,
    }
    return orjson.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    )


# --- the attacker process ------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    tls: bool
    path: str  # a POST route it serves


@dataclass
class Tally:
    opened: int = 0
    cut: int = 0  # closed by the server (or refused) and opened again
    refused_503: int = 0


def attack(pipe: Connection) -> None:
    """Child process: run the phase it is told for the time it is told; send back tallies."""
    while True:
        order = pipe.recv()
        if order is None:
            return
        phase, targets, seconds = order
        pipe.send(asyncio.run(_phase(phase, targets, seconds)))


async def _phase(phase: str, targets: list[Target], seconds: float) -> dict[str, Tally]:
    tallies = {t.name: Tally() for t in targets}
    kinds: dict[str, Callable[[Target, Tally, float], list[Awaitable[None]]]] = {
        "slowloris": lambda t, y, end: [_slowloris(t, y, end) for _ in range(500)],
        "half-sent body": lambda t, y, end: [_half_body(t, y, end) for _ in range(40)],
        "1000 connections": lambda t, y, end: [
            _one_request_then_idle(t, y, end) for _ in range(1000)
        ],
        "silent TLS": lambda t, y, end: [_silent(t, y, end) for _ in range(300)],
    }
    chosen = list(kinds) if phase == "all at once" else [phase] if phase in kinds else []
    end = time.monotonic() + seconds
    work = [w for kind in chosen for t in targets for w in kinds[kind](t, tallies[t.name], end)]
    if work:
        await asyncio.gather(*work)
    else:
        await asyncio.sleep(seconds)
    return tallies


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _open(
    target: Target, tally: Tally, *, handshake: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    tally.opened += 1
    context = _client_context() if target.tls and handshake else None
    return await asyncio.open_connection("127.0.0.1", target.port, ssl=context)


async def _hold(
    target: Target, tally: Tally, end: float, behave: Callable[..., Awaitable[None]], **kw: Any
) -> None:
    """Run ``behave`` on a fresh connection until the phase ends; when the server cuts it off,
    open another and start over."""
    while time.monotonic() < end:
        writer = None
        try:
            async with asyncio.timeout_at(end):  # the loop's clock is time.monotonic
                reader, writer = await _open(target, tally, **kw)
                await behave(reader, writer, end)
        except (OSError, asyncio.IncompleteReadError):  # TimeoutError and SSLError among them
            pass
        finally:
            if writer is not None:
                writer.transport.abort()
        if time.monotonic() < end:
            tally.cut += 1
            await asyncio.sleep(0.05)


async def _slowloris(target: Target, tally: Tally, end: float) -> None:
    async def behave(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, end: float
    ) -> None:
        writer.write(f"POST {target.path} HTTP/1.1\r\nHost: x\r\n".encode())
        while time.monotonic() < end:
            try:  # a field a second, until the server answers (408) or closes
                await asyncio.wait_for(reader.read(100), timeout=1.0)
            except TimeoutError:
                writer.write(b"X-Slow: a\r\n")
                await writer.drain()
            else:
                raise ConnectionResetError  # cut off

    await _hold(target, tally, end, behave)


async def _half_body(target: Target, tally: Tally, end: float) -> None:
    async def behave(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, end: float
    ) -> None:
        head = f"POST {target.path} HTTP/1.1\r\nHost: x\r\nContent-Length: {16 * MIB}\r\n\r\n"
        writer.write(head.encode())
        await writer.drain()
        with contextlib.suppress(TimeoutError):  # no answer yet: admitted, so stall
            answer = await asyncio.wait_for(reader.read(100), timeout=0.2)
            if answer.startswith(b"HTTP/1.1 503"):
                tally.refused_503 += 1
                return
        writer.write(b"[" * (64 * 1024))
        await writer.drain()
        await asyncio.wait_for(reader.read(100), timeout=max(0.0, end - time.monotonic()))

    await _hold(target, tally, end, behave)


async def _one_request_then_idle(target: Target, tally: Tally, end: float) -> None:
    async def behave(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, end: float
    ) -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await reader.readuntil(b"ok")
        await asyncio.wait_for(reader.read(1), timeout=max(0.0, end - time.monotonic()))

    await _hold(target, tally, end, behave)


async def _silent(target: Target, tally: Tally, end: float) -> None:
    async def behave(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, end: float
    ) -> None:
        await asyncio.wait_for(reader.read(1), timeout=max(0.0, end - time.monotonic()))

    await _hold(target, tally, end, behave, handshake=False)


# --- the probe and the memory watch --------------------------------------------------------


@dataclass
class Probe:
    """One normal caller on one kept-alive connection, a request every PROBE_INTERVAL_S."""

    name: str
    connect: Callable[[], http.client.HTTPConnection]
    path: str
    body: bytes
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def run(self, until: threading.Event) -> None:
        conn = self.connect()
        while not until.wait(PROBE_INTERVAL_S):
            started = time.perf_counter()
            try:
                conn.request("POST", self.path, self.body, HEADERS)
                response = conn.getresponse()
                reply = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {reply[:80]!r}")
                self.latencies.append(time.perf_counter() - started)
            except (OSError, RuntimeError, http.client.HTTPException) as err:
                self.failures.append(f"{type(err).__name__}: {err}")
                conn.close()
                conn = self.connect()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def watch_rss(pids: dict[str, int], peaks: dict[str, float], until: threading.Event) -> None:
    while not until.wait(0.05):
        for name, pid in pids.items():
            peaks[name] = max(peaks[name], rss_mib(pid))


def dropped(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    counts = []
    for line in text.splitlines():
        if line.startswith("mipart_extender_http_dropped_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts.append(f"{reason} {float(line.rsplit(' ', 1)[1]):.0f}")
    return ", ".join(counts) or "none"


# --- the run -------------------------------------------------------------------------------

PHASES = [
    "baseline",
    "slowloris",
    "half-sent body",
    "1000 connections",
    "silent TLS",
    "all at once",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--nodes", type=int, default=1000, help="GPU nodes in the extender's view")
    parser.add_argument("--seconds", type=float, help="per phase (default 10; quick: 3)")
    args = parser.parse_args(argv)
    seconds: float = args.seconds or (3.0 if args.quick else 10.0)
    limits = Limits()
    print(f"server abuse: {machine()}")
    print(
        f"{args.nodes} GPU nodes in the extender's view; {seconds:g} s per phase; "
        f"a probe request every {PROBE_INTERVAL_S * 1000:.0f} ms to each server"
    )

    ctx = multiprocessing.get_context("spawn")
    extender_pipe, extender_end = ctx.Pipe()
    extender = ctx.Process(target=serve, args=(args.nodes, 1, False, extender_end), daemon=True)
    webhook_pipe, webhook_end = ctx.Pipe()
    webhook = ctx.Process(target=serve_webhook, args=(webhook_end,), daemon=True)
    attacker_pipe, attacker_end = ctx.Pipe()
    attacker = ctx.Process(target=attack, args=(attacker_end,), daemon=True)
    for process in (extender, webhook, attacker):
        process.start()
    print("... building the extender's cluster", file=sys.stderr, flush=True)
    extender_port, _facts = extender_pipe.recv()
    webhook_port, ca_pem = webhook_pipe.recv()
    assert extender.pid is not None
    assert webhook.pid is not None
    pids = {"extender": extender.pid, "webhook": webhook.pid}

    names = node_names(args.nodes)
    pod = next(pods(random.Random(7)))
    tls = ssl.create_default_context(cadata=ca_pem.decode())
    probes = [
        Probe(
            "extender",
            lambda: http.client.HTTPConnection("127.0.0.1", extender_port, timeout=30),
            "/filter",
            extender_args(pod, names),
        ),
        Probe(
            "webhook",
            lambda: http.client.HTTPSConnection("127.0.0.1", webhook_port, timeout=30, context=tls),
            "/mutate",
            admission_review(pod),
        ),
    ]
    targets = [
        Target("extender", extender_port, False, "/filter"),
        Target("webhook", webhook_port, True, "/mutate"),
    ]
    baseline = {name: rss_mib(pid) for name, pid in pids.items()}
    rows: list[list[Any]] = []
    worst: dict[str, tuple[float, float, int]] = {}
    for phase in PHASES:
        print(f"... {phase}", file=sys.stderr, flush=True)
        for probe in probes:
            probe.latencies.clear()
            probe.failures.clear()
        peaks = dict.fromkeys(pids, 0.0)
        until = threading.Event()
        threads = [threading.Thread(target=p.run, args=(until,), daemon=True) for p in probes]
        threads.append(threading.Thread(target=watch_rss, args=(pids, peaks, until), daemon=True))
        for thread in threads:
            thread.start()
        attacker_pipe.send((phase, targets, seconds))
        tallies: dict[str, Tally] = attacker_pipe.recv()
        until.set()
        for thread in threads:
            thread.join()
        for probe in probes:
            ms = sorted(s * 1000 for s in probe.latencies)
            tally = tallies[probe.name]
            p99 = percentile(ms, 99) if ms else float("nan")
            w = worst.get(probe.name, (0.0, 0.0, 0))
            worst[probe.name] = (
                max(w[0], p99),
                max(w[1], peaks[probe.name]),
                max(w[2], tally.opened - tally.cut),
            )
            rows.append(
                [
                    phase,
                    probe.name,
                    len(ms),
                    len(probe.failures),
                    f"{percentile(ms, 50):.2f}" if ms else "-",
                    f"{p99:.2f}",
                    f"{ms[-1]:.2f}" if ms else "-",
                    f"{peaks[probe.name]:.0f}",
                    tally.opened,
                    tally.cut,
                    tally.refused_503,
                ]
            )
            for failure in probe.failures[:3]:
                print(f"    {phase} / {probe.name}: probe failed: {failure}", file=sys.stderr)
    attacker_pipe.send(None)
    extender_drops = dropped(extender_port)
    for pipe in (extender_pipe, webhook_pipe):
        pipe.send("stop")
    for process in (extender, webhook, attacker):
        process.join(timeout=30)

    print()
    print_table(
        [
            "phase",
            "server",
            "probes",
            "failed",
            "p50 ms",
            "p99 ms",
            "max ms",
            "peak RSS MiB",
            "attacker conns",
            "cut off",
            "503",
        ],
        rows,
    )
    print()
    print(f"The extender counted these callers dropped, all phases: {extender_drops}.")
    # The bound: memory at rest; the body budget twice (bodies are admitted against it
    # before they are read, and a parsed body's objects come on top); and an allowance per
    # connection held at once (asyncio's transport and stream, and for TLS its 32 KiB read
    # buffer and OpenSSL's state).
    bodies = 2 * limits.body_budget_bytes / MIB
    for target in targets:
        p99, peak, held = worst[target.name]
        per_connection = (PER_TLS_CONNECTION if target.tls else PER_CONNECTION) / MIB
        bound = baseline[target.name] + bodies + held * per_connection
        at_cap = baseline[target.name] + bodies + limits.max_connections * per_connection
        print(
            f"{target.name}: worst probe p99 {p99:.2f} ms (target <= {TARGET_P99_MS:.0f} ms: "
            f"{'met' if p99 <= TARGET_P99_MS else 'NOT met'}); peak RSS {peak:.0f} MiB "
            f"(bound: {baseline[target.name]:.0f} MiB at rest + {bodies:.0f} MiB of bodies + "
            f"{held} connections x {per_connection * 1024:.0f} KiB = {bound:.0f} MiB: "
            f"{'met' if peak <= bound else 'NOT met'}; at the cap of {limits.max_connections} "
            f"connections it would be {at_cap:.0f} MiB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

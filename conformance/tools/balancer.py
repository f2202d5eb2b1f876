#!/usr/bin/env python3
"""A layer-4 (TCP) balancer in front of the nodes of a Ferrohub cluster, for the cluster
conformance run (conformance/run --cluster).

usage: balancer.py --out FILE NAME=HOST:PORT,HOST:PORT,... [NAME=...]

For every NAME (https, mqtt, amqp) it listens on 127.0.0.1 on a free port and hands each new
connection to the next backend of its list, round robin, as a real TCP balancer does: no TLS
termination, no affinity, so a device and the service calls about it land on different nodes.
A backend that refuses the connection is skipped for that connection (the next one is tried).
Once every listener is bound it writes FILE, {"NAME": "127.0.0.1:PORT", ...}, atomically.
Each connection is logged to stdout: listener, client port, the backend chosen.
"""

import argparse
import asyncio
import json
import os
import signal
import sys

BUFFER = 64 * 1024


async def pipe(reader, writer):
    """Copies reader to writer until EOF, then half-closes writer. Returns False when either
    side failed (the connection is then torn down), True after a clean EOF."""
    try:
        while True:
            data = await reader.read(BUFFER)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        return True
    except (ConnectionError, OSError):
        return False


class Listener:
    def __init__(self, name, backends):
        self.name = name
        self.backends = backends
        self.next = 0
        self.server = None
        # The tasks serving connections: asyncio keeps only weak references to tasks, and a
        # connection's task waiting on its two pipes must not be collected.
        self.tasks = set()

    def pick(self):
        """The backends in the order to try for a new connection (round robin)."""
        start = self.next
        self.next = (self.next + 1) % len(self.backends)
        return [self.backends[(start + i) % len(self.backends)] for i in range(len(self.backends))]

    async def handle(self, client_reader, client_writer):
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await self.serve(client_reader, client_writer)
        finally:
            self.tasks.discard(task)

    async def serve(self, client_reader, client_writer):
        peer = client_writer.get_extra_info("peername")
        upstream = None
        for host, port in self.pick():
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            except (OSError, asyncio.TimeoutError) as e:
                print(f"{self.name}: {peer[1]} -> {host}:{port} failed: {e}", flush=True)
                continue
            print(f"{self.name}: {peer[1]} -> {host}:{port}", flush=True)
            break
        if upstream is None:
            client_writer.close()
            return
        up_reader, up_writer = upstream
        writers = (up_writer, client_writer)
        try:
            pipes = {
                asyncio.ensure_future(pipe(client_reader, up_writer)),
                asyncio.ensure_future(pipe(up_reader, client_writer)),
            }
            while pipes:
                done, pipes = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                if not all(t.result() for t in done):
                    # One side failed: close both, which ends the other direction too.
                    for w in writers:
                        w.close()
        finally:
            for w in writers:
                try:
                    w.close()
                    await w.wait_closed()
                except (ConnectionError, OSError):
                    pass


def parse_backends(spec):
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"balancer: bad listener spec {spec!r} (expected NAME=HOST:PORT,...)")
    backends = []
    for item in rest.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise SystemExit(f"balancer: bad backend {item!r} in {spec!r}")
        backends.append((host, int(port)))
    return name, backends


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="file to write the listening addresses to")
    parser.add_argument("listeners", nargs="+", metavar="NAME=HOST:PORT,...")
    args = parser.parse_args()

    listeners = [Listener(*parse_backends(spec)) for spec in args.listeners]
    addresses = {}
    for listener in listeners:
        listener.server = await asyncio.start_server(listener.handle, "127.0.0.1", 0, backlog=512)
        port = listener.server.sockets[0].getsockname()[1]
        addresses[listener.name] = f"127.0.0.1:{port}"
        print(f"{listener.name}: listening on 127.0.0.1:{port} for {listener.backends}", flush=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(addresses, f)
    os.replace(tmp, args.out)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for listener in listeners:
        listener.server.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)

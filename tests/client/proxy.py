"""A TCP proxy on 127.0.0.1 that drops connections on demand: `drop(n)` makes the next n
requests (on any connection) end with the connection closed before the server saw them;
`lose(n)` lets the server handle the next n requests but closes the connection before the
response reaches the client (the "timeout, then retry" case)."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class DroppingProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._to_drop = 0
        self._to_lose = 0
        self.dropped = 0
        self.lost = 0
        self.forwarded_connections = 0
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> DroppingProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        self._listener.close()

    def drop(self, count: int) -> None:
        with self._lock:
            self._to_drop = count

    def lose(self, count: int) -> None:
        with self._lock:
            self._to_lose = count

    def _take_lose(self) -> bool:
        with self._lock:
            if self._to_lose > 0:
                self._to_lose -= 1
                self.lost += 1
                return True
            return False

    def _lose_response(self, data: bytes) -> None:
        with socket.create_connection(self.target) as upstream:
            upstream.sendall(data)
            upstream.recv(65536)  # the server answered: the work is done; the answer is lost

    def _take_drop(self) -> bool:
        with self._lock:
            if self._to_drop > 0:
                self._to_drop -= 1
                self.dropped += 1
                return True
            return False

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    return
                # Drops are armed between calls, so these are the first bytes of a request;
                # even otherwise the server would only see a partial request and ignore it.
                if self._take_drop():
                    return
                if self._take_lose():
                    self._lose_response(data)
                    return
                if upstream is None:
                    upstream = socket.create_connection(self.target)
                    self.forwarded_connections += 1
                    threading.Thread(
                        target=self._pump, args=(upstream, client), daemon=True
                    ).start()
                upstream.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)

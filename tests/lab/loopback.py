"""A real TCP peer on a loopback address, for tests that need a server with one behaviour.

    class Hangup(LoopbackPeer):
        def handle(self, conn: socket.socket) -> None:
            conn.close()

    peer = Hangup()                    # listening on 127.0.0.1, any free port
    ... peer.port, peer.accepted ...
    peer.close()

The accept loop runs in a thread and counts what it accepts (`accepted`); each connection
goes to `handle`, in the accept thread or, with ``threaded=True``, in a thread of its own
(for handlers that wait, such as a TLS handshake). A socket error in a handler ends that
connection, never the loop.
"""

from __future__ import annotations

import socket
import threading


class LoopbackPeer:
    def __init__(self, address: str = "127.0.0.1", port: int = 0, *, backlog: int = 64, threaded: bool = False) -> None:
        self.sock = socket.create_server((address, port), backlog=backlog)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self.threaded = threaded
        threading.Thread(target=self._serve, daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            if self.threaded:
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
            else:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except OSError:
            conn.close()

    def close(self) -> None:
        self.sock.close()

"""A Unix-socket proxy in front of the signer that can lose its answers on the way back.

This is the fault that makes idempotency matter: the signer receives a SubmitOrder, places the
order, and the bot never hears back (DEADLINE_EXCEEDED). Requests always go through; in
`drop` mode every byte the signer sends back is discarded. `heal()` closes the broken
connections (gRPC reconnects) and lets answers through from then on.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path


class AnswerDroppingProxy:
    def __init__(self, listen: Path, target: Path) -> None:
        self.listen, self.target = listen, target
        self.drop = True
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(listen))
        self._server.listen(16)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"unix://{self.listen}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(str(self.target))
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        buf = b""
        try:
            while data := src.recv(65536):
                if not (answers and self.drop):
                    dst.sendall(data)
                    continue
                buf += data
                while len(buf) >= 9:  # HTTP/2 frame: 24-bit length, type, flags, stream id
                    size = 9 + int.from_bytes(buf[:3], "big")
                    if len(buf) < size:
                        break
                    frame, buf = buf[:size], buf[size:]
                    if int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF == 0:
                        dst.sendall(frame)  # connection-level: keep the connection alive
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def heal(self) -> None:
        """Break every connection that lost bytes; new ones pass everything."""
        with self._lock:
            self.drop = False
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()
        self.heal()

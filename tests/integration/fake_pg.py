"""A fake PostgreSQL server on loopback that asks every client for a cleartext password and records it:
the attacker's server of issue 14 (a worker must never send it a secret the caller chose)."""

from __future__ import annotations

import socket
import struct
import threading

SSL_REQUEST, GSS_REQUEST = 80877103, 80877104


class PasswordRecorder:
    """Speaks the PostgreSQL protocol up to the password message, then refuses the login."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.passwords: list[str] = []
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("client went away")
            data += chunk
        return data

    def _session(self, conn: socket.socket) -> None:
        try:
            with conn:
                while True:  # SSL / GSS requests come before the startup message: say no
                    length, code = struct.unpack("!ii", self._read(conn, 8))
                    self._read(conn, length - 8)
                    if code in (SSL_REQUEST, GSS_REQUEST):
                        conn.sendall(b"N")
                        continue
                    break
                conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
                kind = self._read(conn, 1)
                length = struct.unpack("!i", self._read(conn, 4))[0]
                body = self._read(conn, length - 4)
                if kind == b"p":
                    self.passwords.append(body.rstrip(b"\0").decode(errors="replace"))
                fields = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed (fake server)\0\0"
                conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)
        except (OSError, ConnectionError, struct.error):
            pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()

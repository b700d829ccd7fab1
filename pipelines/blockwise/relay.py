"""An authenticated relay between ``--worker-command`` workers and the
daisy scheduler.

daisy 2.0's scheduler authenticates nothing: any process that reaches its
port may take, fail, hold or release blocks. So the scheduler listens on
loopback only, and each worker slot's launcher listens on
``--scheduler-host`` with a :class:`Relay`. A worker connects to the relay
and both sides prove that they know the run's secret (an HMAC challenge in
each direction) before a single byte is passed on to daisy::

    worker host                                         scheduler host
    daisy.Client --> 127.0.0.1:F ==== network ====> HOST:R --> 127.0.0.1:S
                     (forwarder)    handshake first  (Relay)    (daisy)

A connection that fails the handshake is closed and logged; daisy never
sees it. After the handshake the bytes are passed on unchanged and
unencrypted.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import socket
import threading

logger = logging.getLogger(__name__)

HELLO = b"gp_hotdistance relay 1\n"
NONCE_BYTES = 32
HANDSHAKE_SECONDS = 30.0  # a peer silent for longer during the handshake is dropped


class RelayError(ConnectionError):
    """A peer that did not complete the handshake."""


def _proof(secret: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, role + first + second, hashlib.sha256).digest()


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise RelayError(f"the peer closed the connection after {len(data)} of {size} bytes")
        data += chunk
    return data


def prove_worker(sock: socket.socket, secret: bytes) -> None:
    """Worker side of the handshake on a connected ``sock``.

    Raises:
        RelayError: the peer is no relay of a run with this secret.
    """
    sock.settimeout(HANDSHAKE_SECONDS)
    hello = _recv_exact(sock, len(HELLO) + NONCE_BYTES)
    if not hello.startswith(HELLO):
        raise RelayError("the peer is not a gp_hotdistance scheduler relay")
    theirs, ours = hello[len(HELLO) :], secrets.token_bytes(NONCE_BYTES)
    sock.sendall(ours + _proof(secret, b"worker", theirs, ours))
    answer = _recv_exact(sock, hashlib.sha256().digest_size)
    if not hmac.compare_digest(answer, _proof(secret, b"scheduler", ours, theirs)):
        raise RelayError("the scheduler relay does not know this run's secret")
    sock.settimeout(None)


def _check_worker(sock: socket.socket, secret: bytes) -> None:
    """Relay side of the handshake; raises RelayError unless the peer proves the secret."""
    sock.settimeout(HANDSHAKE_SECONDS)
    ours = secrets.token_bytes(NONCE_BYTES)
    sock.sendall(HELLO + ours)
    reply = _recv_exact(sock, NONCE_BYTES + hashlib.sha256().digest_size)
    theirs, proof = reply[:NONCE_BYTES], reply[NONCE_BYTES:]
    if not hmac.compare_digest(proof, _proof(secret, b"worker", ours, theirs)):
        raise RelayError("wrong proof of the run's secret")
    sock.sendall(_proof(secret, b"scheduler", theirs, ours))
    sock.settimeout(None)


def keepalive(sock: socket.socket) -> None:
    """TCP keepalive, so a vanished peer host is noticed within minutes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def pipe(a: socket.socket, b: socket.socket) -> None:
    """Pass bytes both ways between ``a`` and ``b`` until both directions
    end; then close both."""

    def copy(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass

    other = threading.Thread(target=copy, args=(b, a), daemon=True)
    other.start()
    copy(a, b)
    other.join()
    a.close()
    b.close()


class Relay:
    """Listens on ``host`` (a free port) and passes each connection that
    proves ``secret`` on to ``target`` (the daisy scheduler).

    ``connected`` is set when a worker has proven the secret and reached
    the scheduler, ``finished`` when such a connection has ended;
    ``refused`` counts the connections dropped at the handshake.
    """

    def __init__(self, secret: bytes, host: str, target: tuple[str, int]) -> None:
        self.secret = secret
        self.target = target
        self.connected = threading.Event()
        self.finished = threading.Event()
        self.refused = 0
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._listener = socket.create_server((host, 0), family=family)
        except OSError as error:
            raise OSError(
                f"cannot listen on --scheduler-host {host!r}: {error.strerror or error} (it must "
                "be an address or name of this machine that the workers can reach)"
            ) from None
        self.address: tuple[str, int] = (host, self._listener.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self._listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._handle, args=(conn, peer), daemon=True).start()

    def _handle(self, conn: socket.socket, peer: tuple) -> None:
        try:
            _check_worker(conn, self.secret)
        except (OSError, RelayError) as error:
            self.refused += 1
            logger.warning(
                "refused a connection from %s: it did not prove this run's secret (%s)",
                peer[0],
                error,
            )
            conn.close()
            return
        try:
            upstream = socket.create_connection(self.target)
        except OSError as error:
            logger.warning("cannot reach the scheduler at %s: %s", self.target, error)
            conn.close()
            return
        keepalive(conn)
        self.connected.set()
        pipe(conn, upstream)
        self.finished.set()

    def close(self) -> None:
        self._listener.close()


def forward_once(upstream: socket.socket) -> int:
    """Listen on a free loopback port and pass the first connection from a
    process of this user through to ``upstream`` (an authenticated relay
    connection); returns the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            while True:
                conn, peer = listener.accept()
                owner = _loopback_owner(peer[1], port)
                if owner is None or owner == os.getuid():
                    break
                logger.warning("ignored a connection from uid %s to the worker's forwarder", owner)
                conn.close()
        pipe(conn, upstream)

    threading.Thread(target=serve, daemon=True).start()
    return port


def _loopback_owner(peer_port: int, port: int) -> int | None:
    """The uid owning the loopback TCP socket ``peer_port -> port`` (from
    ``/proc/net/tcp``), or None where that table is not available."""
    wanted = (f"0100007F:{peer_port:04X}", f"0100007F:{port:04X}")
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if (fields[1], fields[2]) == wanted:
                    return int(fields[7])
    except OSError:
        return None
    return None

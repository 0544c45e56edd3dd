"""Checks of `runtime.ray_address` that fail in seconds, naming the setting and the fix, where
`ray.init` would retry for minutes or end in a traceback: nothing listens, something that is
not Ray listens (a Ray head and a Ray Client server both speak gRPC, i.e. HTTP/2), or a
`ray://` address without the Ray Client extra installed.
"""

from __future__ import annotations

import importlib.util
import socket

from base.settings import SettingsError

PROBE_SECONDS = 3.0
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
SETTINGS_FRAME = 0x04
FIX = "start one with `ray start --head`, or use local for a private instance"


def check(address: str, setting: str) -> None:
    """SettingsError unless a Ray head (HOST:PORT) or Ray Client server (ray://HOST:PORT)
    could be listening at `address`."""
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        connection = socket.create_connection((host, int(port)), timeout=PROBE_SECONDS)
    except OSError as error:
        raise SettingsError(f"{setting}: no Ray cluster answers there ({error.strerror or error}); {FIX}") from None
    if client and importlib.util.find_spec("grpc") is None:
        connection.close()
        raise SettingsError(f"{setting}: a ray:// address needs the Ray Client, which is not installed: "
                            "pip install 'ray[client]' (the same Ray version on this machine and the cluster), "
                            "or run the build on a node of the cluster with auto or HOST:6379")
    with connection:
        try:
            connection.sendall(HTTP2_PREFACE)
            header = _read(connection, 9)
        except OSError:  # silent past the deadline, or reset: not a gRPC server
            header = b""
    if len(header) < 9 or header[3] != SETTINGS_FRAME:
        kind = "Ray Client server (usually port 10001)" if client else "Ray head node (usually port 6379)"
        raise SettingsError(f"{setting}: something listens there, but it is not a {kind}: it does not answer "
                            f"as Ray's gRPC server does within {PROBE_SECONDS:g} s; check the host and port, "
                            f"or {FIX}")


def _read(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data

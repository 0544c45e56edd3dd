"""A real HTTP server on 127.0.0.1 speaking the chat-completions protocol, replying from a
script, counting requests and recording the Authorization header each one carried. Used by
the planner tests in place of a hosted LLM."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

Script = Callable[[str, int], "tuple[int, str] | tuple[int, str, float]"]


def object_names(prompt: str) -> list[str]:
    found = re.findall(r"Caption: A realistic photo of (.*)\.", prompt)
    return found[-1].split(", ") if found else re.findall(r"^- (.+)$", prompt, re.MULTILINE)


def good_reply(prompt: str, reorder: bool = False) -> str:
    """A valid answer to any of the three prompts."""
    if "Which of these settings" in prompt:
        return json.dumps({"background": re.findall(r"^- (.+)$", prompt, re.MULTILINE)[-1]})
    names = object_names(prompt)
    if "real-world size" in prompt:
        return json.dumps({"sizes": {name: 1.0 - 0.2 * i for i, name in enumerate(names)}})
    objects = [{"name": name, "box": [40 + 150 * i, 250, 140, 180]} for i, name in enumerate(names)]
    return "Sure! Here is the layout:\n```json\n" + json.dumps({"objects": objects[::-1] if reorder else objects}) + "\n```"


class Loopback:
    """Serves `handler` on 127.0.0.1 inside a `with` block; `stop` is set when the block ends."""

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.stop = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class ChatServer(Loopback):
    def __init__(self, script: Script):
        self.script, self.requests, self.prompts, self.lock = script, 0, [], threading.Lock()
        self.authorizations: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    count = server.requests
                prompt = body["messages"][-1]["content"]
                server.prompts.append(prompt)
                server.authorizations.append(self.headers.get("Authorization"))
                status, text, *delay = server.script(prompt, count)
                if delay:
                    time.sleep(delay[0])
                payload = ({"id": f"r{count}", "object": "chat.completion", "created": 0, "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                           if status == 200 else {"error": {"message": text, "type": "server_error"}})
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    if 300 <= status < 400:  # a redirect: the text is where to
                        self.send_header("Location", text)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.serve(Handler)


Reply = "tuple[int, dict[str, str], bytes, float]"  # status, headers, body, seconds between bytes (0: at once)


class RawServer(Loopback):
    """A loopback HTTP server that answers every POST from `script(count)` byte for byte: any
    status, headers and body (compressed, HTML, invalid UTF-8), optionally one byte at a time.
    Dripping ends when the client hangs up, after `max_drip` bytes, or when the server stops."""

    def __init__(self, script: "Callable[[int], Reply]", max_drip: int = 200, reason: str = "X"):
        self.script, self.requests, self.lock = script, 0, threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with server.lock:
                    server.requests += 1
                    count = server.requests
                status, headers, body, drip = server.script(count)
                head = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
                head += [f"Content-Length: {len(body)}", "Connection: close"]
                data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
                try:
                    if not drip:
                        self.wfile.write(data)
                        return
                    for byte in data[:max_drip]:
                        if server.stop.wait(drip):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.serve(Handler)


def completion(text: str) -> bytes:
    """A chat-completions body whose reply is `text`."""
    return json.dumps({"id": "r", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}]}).encode()

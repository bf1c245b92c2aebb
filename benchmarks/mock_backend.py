"""A minimal, cheap Ollama look-alike for the benchmark (raw asyncio streams, no framework).

It answers just what the gateway's Ollama plugin and the load generator need, with precomputed bytes so it
costs as little CPU as possible on the shared 2-core box:

- ``GET /`` and ``GET /api/version``, ``GET /api/tags`` (the model list the gateway discovers);
- ``POST /api/chat`` with ``"stream": false`` (one JSON body) or streamed NDJSON (chunked transfer encoding);
- ``POST /_mock/config`` ``{"first_token_ms": 20, "chunk_ms": 5, "tokens": 16}`` switches the pacing live;
- ``GET /_mock/stats`` returns ``{"requests": n}``.

Pacing: the first NDJSON line (and the response head) leaves ``first_token_ms`` after the request arrived, line
``i`` leaves ``first_token_ms + i * chunk_ms`` after it (absolute deadlines, so no drift); a stream is
``tokens`` token lines plus the final ``done`` line. A JSON answer leaves when the stream's last line would.
With both delays at 0 ("fast") everything is written in one go.

Run: ``python benchmarks/mock_backend.py --port 0`` prints ``LISTENING <url>`` on stdout once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal

MODELS = ("llama3.2:3b", "smollm2:135m", "qwen2.5-coder:14b")
WORDS = ("Hello", " the", " local", " model", " answers", " your", " question", " with", " a", " short")


def _tag(name: str) -> dict[str, object]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2026-01-15T09:30:00.123456789+03:00",
        "size": 2_019_393_189,
        "digest": "0" * 64,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Mock:
    def __init__(self, first_token_ms: float, chunk_ms: float, tokens: int) -> None:
        self.requests = 0
        self.configure(first_token_ms, chunk_ms, tokens)
        self.static = {
            (b"GET", b"/"): _response("200 OK", "text/plain; charset=utf-8", b"Ollama is running"),
            (b"GET", b"/api/version"): _response("200 OK", "application/json", b'{"version":"0.14.3"}'),
            (b"GET", b"/api/tags"): _response(
                "200 OK", "application/json", json.dumps({"models": [_tag(m) for m in MODELS]}).encode()
            ),
        }

    def configure(self, first_token_ms: float, chunk_ms: float, tokens: int) -> None:
        self.first_s = first_token_ms / 1000
        self.chunk_s = chunk_ms / 1000
        self.tokens = max(1, int(tokens))
        words = [WORDS[i % len(WORDS)] for i in range(self.tokens)]
        final = {
            "model": "llama3.2:3b",
            "created_at": "2026-01-15T09:30:00.000000Z",
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "load_duration": 1_000,
            "prompt_eval_count": 6,
            "prompt_eval_duration": 1_000,
            "eval_count": self.tokens,
            "eval_duration": 1_000,
        }
        lines = [
            json.dumps(
                {
                    "model": "llama3.2:3b",
                    "created_at": "2026-01-15T09:30:00.000000Z",
                    "message": {"role": "assistant", "content": word},
                    "done": False,
                },
                separators=(",", ":"),
            ).encode()
            + b"\n"
            for word in words
        ]
        lines.append(
            json.dumps({**final, "message": {"role": "assistant", "content": ""}}, separators=(",", ":")).encode()
            + b"\n"
        )
        self.stream_head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.stream_chunks = [_chunk(line) for line in lines]
        self.stream_end = b"0\r\n\r\n"
        self.stream_all = self.stream_head + b"".join(self.stream_chunks) + self.stream_end
        whole = {**final, "message": {"role": "assistant", "content": "".join(words)}}
        self.json_reply = _response("200 OK", "application/json; charset=utf-8", json.dumps(whole).encode())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                arrived = loop.time()
                lines = head.split(b"\r\n")
                method, path, _ = lines[0].split(b" ", 2)
                length = 0
                chunked = close = False
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"transfer-encoding" and b"chunked" in value.lower():
                        chunked = True
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                body = await self._body(reader, length, chunked)
                await self.respond(writer, method, path.split(b"?", 1)[0], body, arrived, loop)
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _body(reader: asyncio.StreamReader, length: int, chunked: bool) -> bytes:
        if not chunked:
            return await reader.readexactly(length) if length else b""
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def respond(
        self,
        writer: asyncio.StreamWriter,
        method: bytes,
        path: bytes,
        body: bytes,
        arrived: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        static = self.static.get((method, path))
        if static is not None:
            writer.write(static)
            return
        if method == b"POST" and path == b"/api/chat":
            self.requests += 1
            stream = b'"stream":false' not in body.replace(b" ", b"")
            if not self.first_s and not self.chunk_s:
                writer.write(self.stream_all if stream else self.json_reply)
                await writer.drain()
                return
            if not stream:
                await _sleep_until(loop, arrived + self.first_s + self.chunk_s * (len(self.stream_chunks) - 1))
                writer.write(self.json_reply)
                await writer.drain()
                return
            chunks = self.stream_chunks
            for i, chunk in enumerate(chunks):
                await _sleep_until(loop, arrived + self.first_s + self.chunk_s * i)
                writer.write(self.stream_head + chunk if i == 0 else chunk)
            writer.write(self.stream_end)
            await writer.drain()
            return
        if method == b"POST" and path == b"/_mock/config":
            cfg = json.loads(body or b"{}")
            self.configure(
                float(cfg.get("first_token_ms", 0)), float(cfg.get("chunk_ms", 0)), int(cfg.get("tokens", 16))
            )
            self.requests = 0
            writer.write(_response("200 OK", "application/json", b'{"ok":true}'))
            return
        if method == b"GET" and path == b"/_mock/stats":
            writer.write(_response("200 OK", "application/json", json.dumps({"requests": self.requests}).encode()))
            return
        if method == b"POST" and path == b"/api/show":
            writer.write(_response("200 OK", "application/json", b'{"capabilities":["completion"],"model_info":{}}'))
            return
        writer.write(_response("404 Not Found", "application/json", b'{"error":"not found"}'))


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    delay = deadline - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def serve(host: str, port: int, first_token_ms: float, chunk_ms: float, tokens: int) -> None:
    mock = Mock(first_token_ms, chunk_ms, tokens)
    server = await asyncio.start_server(mock.handle, host, port, backlog=1024)
    actual = server.sockets[0].getsockname()[1]
    print(f"LISTENING http://{host}:{actual}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-token-ms", type=float, default=0.0)
    parser.add_argument("--chunk-ms", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.first_token_ms, args.chunk_ms, args.tokens))


if __name__ == "__main__":
    main()

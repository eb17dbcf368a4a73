"""Local fakes of two LLM HTTP APIs for the litellm tests (no internet here).

They follow the providers' documented shapes:
- OpenAI Chat Completions, POST /v1/chat/completions
  (https://platform.openai.com/docs/api-reference/chat/object and .../chat/streaming):
  `usage.prompt_tokens_details.cached_tokens`, `usage.completion_tokens_details.reasoning_tokens`,
  streaming as server-sent events of `chat.completion.chunk` objects, the usage in a last chunk
  with empty `choices` when `stream_options.include_usage` is set, then `data: [DONE]`;
  errors as `{"error": {"message", "type", "code"}}` with 429 / 500.
- Anthropic Messages, POST /v1/messages
  (https://docs.anthropic.com/en/api/messages): `usage.input_tokens` (uncached input only),
  `cache_creation_input_tokens`, `cache_read_input_tokens`, and `usage.cache_creation` split into
  `ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`.

What a request gets is scripted per model name: `script(model, [reply, ...])` queues replies
(the last one repeats). Every request is recorded in `requests`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer. status != 200 answers an error of that status."""

    status: int = 200
    prompt_tokens: int = 10  # OpenAI: total prompt tokens; Anthropic: input_tokens (uncached)
    completion_tokens: int = 5
    cached_tokens: int = 0  # cache reads
    cache_write_5m: int = 0  # Anthropic only
    cache_write_1h: int = 0  # Anthropic only
    reasoning_tokens: int = 0  # OpenAI only
    response_model: str = ""  # default: the requested model
    first_chunk_delay: float = 0.0  # streaming: seconds before the first content chunk
    text: str = "Hello from the fake."


@dataclass
class FakeLLM:
    """Both fake APIs on one ThreadingHTTPServer on 127.0.0.1, a free port."""

    scripts: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    def start(self) -> FakeLLM:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.handle(self, self.path, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, model: str, replies: list[Reply]) -> None:
        with self.lock:
            self.scripts[model] = list(replies)

    def _next(self, model: str) -> tuple[Reply, str]:
        with self.lock:
            queue = self.scripts.get(model) or [Reply()]
            reply = queue.pop(0) if len(queue) > 1 else queue[0]
            self.counter += 1
            return reply, f"{self.counter:06d}"

    def handle(self, h: BaseHTTPRequestHandler, path: str, body: dict[str, Any]) -> None:
        model = str(body.get("model", ""))
        reply, n = self._next(model)
        with self.lock:
            self.requests.append({"path": path, "model": model, "status": reply.status, "stream": body.get("stream")})
        if path.endswith("/chat/completions"):
            self._openai(h, body, reply, n)
        elif path.endswith("/messages"):
            self._anthropic(h, body, reply, n)
        else:
            self._json(h, 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    # -- OpenAI ---------------------------------------------------------------------

    def _openai(self, h: BaseHTTPRequestHandler, body: dict[str, Any], r: Reply, n: str) -> None:
        model = r.response_model or body["model"]
        if r.status == 429:
            self._json(h, 429, {"error": {"message": "Rate limit reached for requests", "type": "requests",
                                          "param": None, "code": "rate_limit_exceeded"}})
            return
        if r.status != 200:
            self._json(h, r.status, {"error": {"message": "The server had an error while processing your request.",
                                               "type": "server_error", "param": None, "code": None}})
            return
        usage = {
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": r.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": r.reasoning_tokens, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }
        rid = f"chatcmpl-fake{n}"
        created = int(time.time())
        if not body.get("stream"):
            self._json(h, 200, {
                "id": rid, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text, "refusal": None},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": usage,
            })
            return
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.end_headers()

        def chunk(delta: dict[str, Any], finish: str | None, with_usage: Any = None, choices: bool = True) -> None:
            obj: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                                   "system_fingerprint": "fp_fake",
                                   "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                "finish_reason": finish}] if choices else []}
            if body.get("stream_options", {}).get("include_usage"):
                obj["usage"] = with_usage
            h.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            h.wfile.flush()

        if r.first_chunk_delay:
            time.sleep(r.first_chunk_delay)
        chunk({"role": "assistant", "content": ""}, None)
        for word in r.text.split(" "):
            chunk({"content": word + " "}, None)
        chunk({}, "stop")
        if body.get("stream_options", {}).get("include_usage"):
            chunk({}, None, usage, choices=False)
        h.wfile.write(b"data: [DONE]\n\n")
        h.wfile.flush()
        h.close_connection = True

    # -- Anthropic ------------------------------------------------------------------

    def _anthropic(self, h: BaseHTTPRequestHandler, body: dict[str, Any], r: Reply, n: str) -> None:
        if r.status != 200:
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(r.status, "api_error")
            self._json(h, r.status, {"type": "error", "error": {"type": kind, "message": "fake " + kind}})
            return
        self._json(h, 200, {
            "id": f"msg_fake{n}", "type": "message", "role": "assistant",
            "model": r.response_model or body["model"],
            "content": [{"type": "text", "text": r.text}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {
                "input_tokens": r.prompt_tokens,
                "cache_creation_input_tokens": r.cache_write_5m + r.cache_write_1h,
                "cache_read_input_tokens": r.cached_tokens,
                "cache_creation": {"ephemeral_5m_input_tokens": r.cache_write_5m,
                                   "ephemeral_1h_input_tokens": r.cache_write_1h},
                "output_tokens": r.completion_tokens,
                "service_tier": "standard",
            },
        })

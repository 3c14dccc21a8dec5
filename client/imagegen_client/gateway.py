"""The CLI's way through an HTTP gateway: POST /v1/generations (202), poll
GET /v1/generations/{id} until terminal. aiohttp only (a base dependency); nothing of the
gateway package, so the client keeps its import contract.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from imagegen_api.messages import TERMINAL_STATES, GenerationRequest, GenerationResult

POLL_SECONDS = 0.2


class GatewayError(RuntimeError):
    """A refusal by the gateway, with a message naming the field."""


def request_body(req: GenerationRequest) -> dict[str, Any]:
    """A request message → the body of POST /v1/generations (pure)."""
    body: dict[str, Any] = {"prompt": req.prompt, "n": req.num_images,
                            "request_id": req.request_id}
    if req.width is not None or req.height is not None:
        w = req.width or req.height
        body["size"] = f"{w}x{req.height or w}"
    for name, value in (("model", req.model), ("negative_prompt", req.negative_prompt),
                        ("steps", req.steps), ("guidance", req.guidance),
                        ("sampler", req.sampler), ("seed", req.seed), ("tier", req.tier),
                        ("output_format", req.output_format), ("strength", req.strength)):
        if value is not None:
            body[name] = value
    if req.quality is not None and req.output_format in ("webp", "jpeg", "jpg"):
        body["output_compression"] = req.quality  # the gateway's name for the lossy quality
    for name, image in (("init_image", req.init_image), ("mask", req.mask)):
        if image is not None:
            body[name] = image.model_dump(exclude_none=True)
    if req.loras:
        body["loras"] = [lo.model_dump() for lo in req.loras]
    return body


def error_message(status: int, payload: Any) -> str:
    """OpenAI's error shape → one line naming the field (pure)."""
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        return f"gateway answered HTTP {status}: {str(payload)[:200]}"
    param = f" [{err['param']}]" if err.get("param") else ""
    return f"gateway answered HTTP {status}{param}: {err.get('message', '')}"


def result_from_view(view: dict[str, Any]) -> GenerationResult | None:
    """A terminal GET /v1/generations/{id} → the result the table prints; None while not
    terminal (pure)."""
    if view.get("state") not in TERMINAL_STATES:
        return None
    return GenerationResult.model_validate({
        "request_id": view["id"], "status": view["state"], "tier": view.get("tier"),
        "images": view.get("images", []), "error": view.get("error"),
        "cache_hit": view.get("cache_hit", False), "timings": view.get("timings", {}),
        "model": view.get("model"), "attempts": view.get("attempts", 1),
    })


class GatewayClient:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> GatewayClient:
        self.session = aiohttp.ClientSession(headers=self.headers)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None
                    ) -> tuple[int, Any]:
        assert self.session is not None
        async with self.session.request(method, self.url + path, json=body) as resp:
            try:
                payload = await resp.json(content_type=None)
            except ValueError:
                payload = await resp.text()
            return resp.status, payload

    async def submit(self, requests: list[GenerationRequest]) -> list[str]:
        ids = []
        for req in requests:
            status, payload = await self._call("POST", "/v1/generations", request_body(req))
            if status != 202:
                raise GatewayError(error_message(status, payload))
            ids.append(str(payload["id"]))
        return ids

    async def view(self, request_id: str) -> tuple[int, Any]:
        return await self._call("GET", f"/v1/generations/{request_id}")

    async def wait(self, ids: list[str], *, within: float,
                   progress: Callable[[dict[str, GenerationResult]], None] | None = None
                   ) -> dict[str, GenerationResult]:
        results: dict[str, GenerationResult] = {}
        end = time.monotonic() + within
        while len(results) < len(ids) and time.monotonic() < end:
            for rid in ids:
                if rid in results:
                    continue
                status, payload = await self.view(rid)
                if status == 200:
                    result = result_from_view(payload)
                    if result is not None:
                        results[rid] = result
                elif status != 404:  # 404: not yet visible; anything else is a refusal
                    raise GatewayError(error_message(status, payload))
            if progress is not None:
                progress(results)
            if len(results) < len(ids):
                await asyncio.sleep(POLL_SECONDS)
        return results

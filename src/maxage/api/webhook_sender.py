"""The HTTP side of webhook delivery (the decisions are ``maxage.service.webhooks``)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx


class HttpxSender:
    """POSTs with one pooled client; never follows redirects (a 3xx is a failure: a
    receiver cannot bounce a delivery to another target) and ignores proxy variables."""

    def __init__(self) -> None:
        self.client = httpx.AsyncClient(follow_redirects=False, trust_env=False)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        response = await self.client.post(url, content=body, headers=dict(headers), timeout=timeout)
        return response.status_code

    async def aclose(self) -> None:
        await self.client.aclose()

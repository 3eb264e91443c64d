"""Fetching WhatsApp media from Twilio: MediaUrlN needs the account's credentials (HTTP basic
auth with the account SID and auth token); Twilio may redirect to a short-lived storage URL,
and httpx drops the credentials when a redirect leaves Twilio's host."""

from __future__ import annotations

import httpx

from factorylm.photos.images import too_large


class MediaUnavailable(RuntimeError):
    """Twilio did not hand over the media; the message says why."""


async def fetch_media(url: str, account_sid: str, auth_token: str, max_bytes: int) -> bytes:
    async with (
        httpx.AsyncClient(
            auth=(account_sid, auth_token), follow_redirects=True, timeout=10
        ) as http,
        http.stream("GET", url) as response,
    ):
        if response.status_code != 200:
            raise MediaUnavailable(f"Twilio answered {response.status_code} for the media")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise too_large(int(declared), max_bytes)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise too_large(size, max_bytes)
            chunks.append(chunk)
        return b"".join(chunks)

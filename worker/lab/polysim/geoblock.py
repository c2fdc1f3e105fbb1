"""`GET /api/geoblock`: the venue's verdict on the caller's address, as polymarket.com serves it.

The real answer is `{"blocked": bool, "ip": str, "country": str, "region": str}` (tests/payloads/polymarket/
geoblock_response.json). Served on the CLOB port; `POST /_sim/geoblock {blocked, country?, region?}` sets the
verdict (default: not blocked, NL/NH), so a test can play a host in a blocked region.
"""
from __future__ import annotations

from aiohttp import web


class Geoblock:
    def __init__(self) -> None:
        self.blocked = False
        self.country = "NL"
        self.region = "NH"

    async def answer(self, request: web.Request) -> web.Response:
        return web.json_response({"blocked": self.blocked, "ip": request.remote or "",
                                  "country": self.country, "region": self.region})

    async def control(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "bad geoblock request: not JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("blocked"), bool):
            return web.json_response({"error": 'bad geoblock request: "blocked" must be true or false'}, status=400)
        for key in ("country", "region"):
            if not isinstance(body.get(key, ""), str):
                return web.json_response({"error": f"bad geoblock request: {key!r} must be a string"}, status=400)
        self.blocked = body["blocked"]
        self.country = body.get("country", self.country)
        self.region = body.get("region", self.region)
        return web.json_response({"blocked": self.blocked, "country": self.country, "region": self.region})


def geoblock_routes(app: web.Application, geoblock: Geoblock) -> None:
    app.router.add_get("/api/geoblock", geoblock.answer)
    app.router.add_post("/_sim/geoblock", geoblock.control)

"""Prometheus metrics of the API server: requests by verb/resource/code, latency, watchers."""

from __future__ import annotations

import asyncio
import bisect
import re
import time
from collections import defaultdict
from typing import Awaitable, Callable

from aiohttp import web

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def watched_resource(path: str) -> tuple[str, str]:
    """(group, plural) of a watch request's path, read before routing has parsed it; the
    names are checked so a hostile path cannot grow the label set without bound."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return ("", "-")
    if rest[:1] == ["watch"]:
        rest = rest[1:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0] if rest else "-"
    if not (_NAME.match(group or "a") and _NAME.match(resource)) or len(group) + len(resource) > 253:
        return ("", "-")
    return (group, resource)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.latency_sum: dict[str, float] = defaultdict(float)
        #: open watches by (group, resource), as upstream's apiserver_longrunning_requests
        self.watches: dict[tuple[str, str], int] = defaultdict(int)

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        watch = None
        if request.method == "GET" and request.query.get("watch") in ("true", "1", "True"):
            watch = watched_resource(request.path)
            self.watches[watch] += 1
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            # the client went away: a watch was served until then; anything else never finished
            # (nginx's 499), and neither is the server's fault
            status = 200 if watch is not None else 499
            raise
        except Exception as exc:
            status = getattr(exc, "code", 500)
            raise
        finally:
            if watch is not None:
                self.watches[watch] -= 1
                if not self.watches[watch]:
                    del self.watches[watch]
            verb = request.method
            if verb == "GET" and request.query.get("watch") in ("true", "1", "True"):
                verb = "WATCH"
            path = request.get("resource_path")
            resource = path.plural if path is not None else "-"
            self.requests[(verb, resource, int(status))] += 1
            if verb != "WATCH":
                elapsed = time.perf_counter() - started
                self.latency[verb][bisect.bisect_left(BUCKETS, elapsed)] += 1
                self.latency_sum[verb] += elapsed

    def render(self, *, objects: int, watchers: int, revision: int) -> str:
        lines = ["# HELP apiserver_request_total Requests by verb, resource and HTTP code.",
                 "# TYPE apiserver_request_total counter"]
        for (verb, resource, code), n in sorted(self.requests.items()):
            lines.append(f'apiserver_request_total{{verb="{verb}",resource="{resource}",'
                         f'code="{code}"}} {n}')
        lines += ["# HELP apiserver_request_duration_seconds Request latency by verb.",
                  "# TYPE apiserver_request_duration_seconds histogram"]
        for verb, counts in sorted(self.latency.items()):
            total = 0
            for bound, n in zip(BUCKETS, counts):
                total += n
                lines.append(f'apiserver_request_duration_seconds_bucket{{verb="{verb}",le="{bound}"}} {total}')
            total += counts[-1]
            lines.append(f'apiserver_request_duration_seconds_bucket{{verb="{verb}",le="+Inf"}} {total}')
            lines.append(f'apiserver_request_duration_seconds_sum{{verb="{verb}"}} {self.latency_sum[verb]:.6f}')
            lines.append(f'apiserver_request_duration_seconds_count{{verb="{verb}"}} {total}')
        lines += ["# HELP apiserver_storage_objects Objects in the watch cache.",
                  "# TYPE apiserver_storage_objects gauge", f"apiserver_storage_objects {objects}",
                  "# HELP apiserver_registered_watchers Open watches.",
                  "# TYPE apiserver_registered_watchers gauge",
                  f"apiserver_registered_watchers {watchers}",
                  "# HELP apiserver_longrunning_requests Open watches by group and resource.",
                  "# TYPE apiserver_longrunning_requests gauge"]
        for (group, resource), n in sorted(self.watches.items()):
            lines.append(f'apiserver_longrunning_requests{{verb="WATCH",group="{group}",'
                         f'resource="{resource}"}} {n}')
        lines += ["# HELP atoll_store_revision Current store revision.",
                  "# TYPE atoll_store_revision gauge", f"atoll_store_revision {revision}"]
        return "\n".join(lines) + "\n"

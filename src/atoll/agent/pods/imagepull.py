"""A pod worker's image pulls: kubelet's pull loop for each container, in the background.

``PullsImages`` is a part of ``PodWorker`` (it uses the worker's ``spec``, ``puller``,
``pulls``, ``waiting``, ``not_before``, ``_event``, ``_fetch``, ``_retry_delay``,
``_wake_later`` and ``wake``), kept apart because the pull states and events are their own
story: Pulling, Pulled (with time and size, or "already present"), Failed then BackOff, the
waiting reasons ErrImagePull / ImagePullBackOff / ErrImageNeverPull, and pull secrets read
from the API.  A pull never blocks the worker: a pod being pulled can still be deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from atoll.agent.images.puller import PullError
from atoll.agent.images.store import Image
from atoll.client.events import NORMAL, WARNING

log = logging.getLogger(__name__)


class PullsImages:
    """The image side of a pod worker (a mixin: see the module doc for what it uses)."""

    spec: dict[str, Any]
    puller: Any
    pulls: dict[str, tuple[str, asyncio.Task[Any]]]
    waiting: dict[str, tuple[str, str]]
    not_before: dict[str, float]
    key: str

    def _image_for(self, container: dict[str, Any]) -> Image | None:
        """The container's image per its imagePullPolicy, or None while it is being pulled
        (in the background: the worker stays free for deletes) or cannot be pulled (the
        container waits with kubelet's reason, retried with back-off)."""
        name = container["name"]
        ref = str(container.get("image") or "")
        pending = self.pulls.get(name)
        if pending is not None and pending[0] == ref and not pending[1].done():
            return None
        if pending is not None:
            del self.pulls[name]
            if pending[0] == ref and pending[1].done():
                return self._pulled(name, ref, pending[1])
        try:
            image = self.puller.present(ref, container.get("imagePullPolicy"))
        except PullError as e:
            self._pull_failed(name, ref, e)
            return None
        if image is not None:
            self._event(NORMAL, "Pulled", f'Container image "{ref}" already present on machine')
            self.puller.mark_used(image)
            return image
        self._event(NORMAL, "Pulling", f'Pulling image "{ref}"')
        task = asyncio.get_running_loop().create_task(self._pull(ref), name=f"pull-{name}")
        task.add_done_callback(lambda _: self.wake())
        self.pulls[name] = (ref, task)
        return None

    async def _pull(self, ref: str) -> Any:
        secrets = []
        for item in self.spec.get("imagePullSecrets") or []:
            secret_name = item.get("name") if isinstance(item, dict) else None
            if not secret_name:
                continue
            secret = await self._fetch("Secret", str(secret_name))
            if secret is None:
                self._event(WARNING, "FailedToRetrieveImagePullSecret",
                            f'Unable to retrieve some image pull secrets ({secret_name}); '
                            f'attempting to pull the image may not succeed.')
            else:
                secrets.append(secret)
        return await self.puller.pull(ref, secrets)

    def _pulled(self, name: str, ref: str, task: asyncio.Task[Any]) -> Image | None:
        if task.cancelled():
            return None
        error = task.exception()
        if error is not None:
            if not isinstance(error, PullError):
                log.error("pod %s: pulling %s failed: %r", self.key, ref, error)
                error = PullError("ErrImagePull", f"internal error: {type(error).__name__}")
            self._pull_failed(name, ref, error)
            return None
        result = task.result()
        self.not_before.pop(f"pull:{name}#n", None)
        self._event(NORMAL, "Pulled",
                    f'Successfully pulled image "{ref}" in {go_duration(result.pull_seconds)} '
                    f'({go_duration(result.total_seconds)} including waiting). Image size: '
                    f'{result.size} bytes.')
        self.puller.mark_used(result.image)
        return result.image

    def _pull_failed(self, name: str, ref: str, error: PullError) -> None:
        """ErrImagePull now, ImagePullBackOff while the back-off runs (as kubelet shows)."""
        if error.reason == "ErrImagePull":
            message = f'Failed to pull image "{ref}": {error.message}'
        else:
            message = error.message
        self.waiting[name] = (error.reason, message)
        self._event(WARNING, "Failed", message)
        self._event(WARNING, "Failed", f"Error: {error.reason}")
        delay = self._retry_delay(f"pull:{name}")
        self.not_before[name] = time.time() + delay
        self._wake_later(delay)
        if error.reason != "ErrImagePull":
            return

        def back_off() -> None:
            if self.waiting.get(name) == (error.reason, message) and name not in self.pulls:
                self.waiting[name] = ("ImagePullBackOff",
                                      f'Back-off pulling image "{ref}": ErrImagePull: '
                                      f'{error.message}')
                self._event(NORMAL, "BackOff", f'Back-off pulling image "{ref}"')
                self.wake()
        asyncio.get_running_loop().call_later(min(delay / 2, 2.0), back_off)


def go_duration(seconds: float) -> str:
    """A duration as Go prints one truncated to milliseconds (kubelet's Pulled event)."""
    ms = int(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    hours, minutes = divmod(minutes, 60)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs

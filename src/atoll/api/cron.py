"""Cron schedules as CronJobs use them: five fields or a descriptor, read by ``cronsim``
(Vixie cron semantics, as robfig/cron's standard parser that upstream uses); time zones from
the IANA database through ``zoneinfo``."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

#: upstream's descriptors, as robfig/cron's standard parser reads them
DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
               "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
               "@hourly": "0 * * * *"}


def expression(schedule: str) -> str:
    return DESCRIPTORS.get(schedule.strip(), schedule.strip())


def schedule_error(schedule: Any) -> str:
    """Why a schedule cannot work, or ""."""
    if not isinstance(schedule, str) or not schedule.strip():
        return "schedule is required"
    if "TZ=" in schedule:
        return "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
    try:
        CronSim(expression(schedule), dt.datetime(2026, 1, 1))
    except (CronSimError, ValueError) as exc:
        return f"unparseable schedule: {exc}"
    return ""


def zone(name: Any) -> dt.tzinfo | None:
    """The named IANA time zone, or None if there is no such zone."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return None


def times(schedule: str, after: dt.datetime) -> CronSim:
    """The scheduled times strictly after ``after`` (an aware datetime), in order."""
    return CronSim(expression(schedule), after)

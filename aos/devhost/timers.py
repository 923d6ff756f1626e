"""Timer triggers on the local host: NCRONTAB and TimeSpan schedules, fired like the Functions host.

Schedules are read the way the timer extension reads them (it uses the NCrontab library):

* NCRONTAB, six fields `{second} {minute} {hour} {day} {month} {day-of-week}`, or five without
  the seconds (then second 0), separated by spaces. Each field takes `*`, a value, a range `a-b`,
  a list `a,b,c` and steps `*/n`, `a-b/n` and `a/n` (from a to the field's maximum). Months and
  weekdays also take names, case-insensitive and matched by prefix as NCrontab does (`Jan`,
  `january`, `Mon`; a bare `J` is January). Day-of-week is 0-6 with Sunday 0: NCrontab, and so
  Azure, rejects 7, and so does this parser. A reversed range such as `Fri-Mon` is taken as
  `Mon-Fri`, as NCrontab does. When both day and day-of-week are restricted a time must match
  both (NCrontab's rule, not Unix cron's "either").
* TimeSpan, .NET `[d.]hh:mm[:ss[.fffffff]]`, `d:hh:mm:ss` or a whole number of days; `hh:mm:ss`
  with hh of 24 or more reads as `dd:hh:mm` (so "25:00:00" is every 25 days), as .NET does. The
  function runs every interval, counted from the start of the previous run.
* `%NAME%` in a schedule is replaced with the app setting NAME first.

Times are UTC only. Azure evaluates schedules in UTC unless the app sets WEBSITE_TIME_ZONE, and
`func start` uses the machine's time zone; this host always uses UTC and warns when
WEBSITE_TIME_ZONE names another zone.

Firing follows the extension's TimerListener: `runOnStartup` runs the function once at start;
after each run the next occurrence is computed from the time it fired, so occurrences missed
while the host was busy or asleep are not replayed one by one; one invocation of a function runs
at a time; a failing function is logged and its schedule continues (timers do not retry).
`useMonitor` is ignored: nothing is persisted, so occurrences missed while the host was stopped
are not run at the next start. The host only reports `past_due` for such missed occurrences; here
an invocation is past due when it starts more than `past_due_after` after its scheduled time (the
machine was suspended, the event loop was blocked), not counting delay caused by the function's
own previous run overrunning the interval. The TimerRequest carries the schedule status
(Last/Next/LastUpdated) whenever the host would, that is unless `useMonitor` is false or the
schedule fires more often than once a minute.
"""

from __future__ import annotations

import asyncio
import bisect
import calendar
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from azure.functions.timer import TimerRequest

from aos.devhost.app import AppFunction
from aos.devhost.servicebus import resolve
from aos.errors import ConfigurationError

logger = logging.getLogger(__name__)

TIMER_TRIGGER = "timerTrigger"
FIELDS_HELP = "{second} {minute} {hour} {day} {month} {day-of-week}"
MONTH_NAMES = (
    "January February March April May June July August September October November December"
).split()
DAY_NAMES = "Sunday Monday Tuesday Wednesday Thursday Friday Saturday".split()
# The host's ScheduleStatus.Last before a timer has ever fired: default(DateTimeOffset).
NEVER = "0001-01-01T00:00:00+00:00"
UTC_ZONES = {"UTC", "ETC/UTC", "COORDINATED UNIVERSAL TIME", "GMT", "ETC/GMT"}

_DIGITS = re.compile(r"[0-9]+")
_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d+):(\d+)(?::(\d+)(?:\.(\d{1,7}))?)?")
_TIMESPAN_DAYS_FIRST = re.compile(r"(\d+):(\d+):(\d+):(\d+)(?:\.(\d{1,7}))?")
_MAX_TIMESPAN_DAYS = 10_675_199  # TimeSpan.MaxValue
# The Gregorian calendar, weekdays included, repeats every 400 years: a schedule with no
# occurrence in 400 years has none at all (e.g. 30 February).
_SEARCH_MONTHS = 400 * 12 + 1


class ScheduleError(ValueError):
    """What is wrong with a schedule; parse_schedule turns it into a ConfigurationError."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, tuple(MONTH_NAMES)),
    _Field("day-of-week", 0, 6, tuple(DAY_NAMES)),
)


def _as_utc(moment: datetime) -> datetime:
    """UTC for an aware datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CronSchedule:
    """An NCRONTAB schedule: the sorted values each of the six fields allows."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 is Sunday

    adjust_for_dst = True  # what the host reports in TimerRequest.schedule for cron schedules

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        tokens = [token for token in expression.split(" ") if token]
        if len(tokens) == 5:  # the host accepts five fields and fires at second 0
            tokens.insert(0, "0")
        elif len(tokens) != 6:
            raise ScheduleError(
                f"it has {len(tokens)} field{'s' if len(tokens) != 1 else ''}; an NCRONTAB "
                f"expression has six, {FIELDS_HELP} (or five, without the seconds)"
            )
        values = [_parse_field(token, field) for token, field in zip(tokens, _FIELDS, strict=True)]
        return cls(expression, *values)

    @property
    def sub_minute(self) -> bool:
        """True when it fires more than once a minute (the host then turns useMonitor off)."""
        full = all(
            len(values) == field.high - field.low + 1
            for values, field in zip(self._fields()[1:], _FIELDS[1:], strict=True)
        )
        return full and len(self.seconds) > 1

    def _fields(self) -> tuple[tuple[int, ...], ...]:
        return (self.seconds, self.minutes, self.hours, self.days, self.months, self.weekdays)

    def next_after(self, after: datetime) -> datetime | None:
        """The first occurrence strictly after `after` (UTC; sub-seconds ignored, as NCrontab
        does), or None if the schedule never fires (e.g. `0 0 0 30 Feb *`)."""
        try:
            start = _as_utc(after).replace(microsecond=0) + timedelta(seconds=1)
        except OverflowError:
            return None
        year, month = start.year, start.month
        for _ in range(_SEARCH_MONTHS):
            if month in self.months:
                found = self._in_month(year, month, start)
                if found is not None:
                    return found
            month += 1
            if month > 12:
                month, year = 1, year + 1
                if year > 9999:
                    return None
        return None

    def _in_month(self, year: int, month: int, start: datetime) -> datetime | None:
        last_day = calendar.monthrange(year, month)[1]
        this_month = (year, month) == (start.year, start.month)
        first_day = start.day if this_month else 1
        for day in self.days[bisect.bisect_left(self.days, first_day) :]:
            if day > last_day:
                break
            if (date(year, month, day).weekday() + 1) % 7 not in self.weekdays:
                continue
            at = self._first_time(start.time() if this_month and day == start.day else None)
            if at is not None:
                return datetime(year, month, day, *at, tzinfo=UTC)
        return None

    def _first_time(self, floor: time | None) -> tuple[int, int, int] | None:
        """The earliest allowed time of day at or after `floor` (any time when None)."""
        if floor is None:
            return self.hours[0], self.minutes[0], self.seconds[0]
        for hour in self.hours[bisect.bisect_left(self.hours, floor.hour) :]:
            if hour > floor.hour:
                return hour, self.minutes[0], self.seconds[0]
            for minute in self.minutes[bisect.bisect_left(self.minutes, floor.minute) :]:
                if minute > floor.minute:
                    return hour, minute, self.seconds[0]
                index = bisect.bisect_left(self.seconds, floor.second)
                if index < len(self.seconds):
                    return hour, minute, self.seconds[index]
        return None


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule: every `interval`, counted from the previous run's start."""

    expression: str
    interval: timedelta

    adjust_for_dst = False  # ConstantSchedule.AdjustForDST

    @property
    def sub_minute(self) -> bool:
        return self.interval < timedelta(minutes=1)

    def next_after(self, after: datetime) -> datetime | None:
        return _as_utc(after) + self.interval


Schedule = CronSchedule | IntervalSchedule


def _parse_field(text: str, field: _Field) -> tuple[int, ...]:
    values: set[int] = set()
    for element in text.split(","):
        if not element:
            raise ScheduleError(f"the {field.name} field '{text}' has an empty list entry")
        base, slash, step_text = element.partition("/")
        step = 1
        if slash:
            if not base:
                raise ScheduleError(
                    f"the {field.name} field '{element}' has a step with nothing to step "
                    f"through: write */{step_text} or a-b/{step_text}"
                )
            if not _DIGITS.fullmatch(step_text):
                raise ScheduleError(
                    f"the step '{step_text}' in the {field.name} field '{element}' is not a "
                    f"whole number"
                )
            step = int(step_text)
            if step < 1:
                raise ScheduleError(
                    f"the step in the {field.name} field '{element}' must be 1 or more"
                )
        if base == "*":
            low, high = field.low, field.high
        elif "-" in base[1:]:
            first, _, last = base.partition("-")
            low, high = _value(first, field, element), _value(last, field, element)
            if low > high:  # NCrontab swaps a reversed range rather than rejecting it
                low, high = high, low
            _check_range(low, field)
            _check_range(high, field)
        else:
            low = _value(base, field, element)
            _check_range(low, field)
            high = field.high if slash else low
        values.update(range(low, high + 1, step))
    return tuple(sorted(values))


def _value(text: str, field: _Field, element: str) -> int:
    if not text:
        raise ScheduleError(f"the {field.name} field '{element}' is missing a value")
    if text[0].isascii() and text[0].isdigit():
        if not _DIGITS.fullmatch(text):
            raise ScheduleError(f"'{text}' in the {field.name} field is not a number")
        return int(text)
    if not field.names:
        raise ScheduleError(
            f"'{text}' is not a valid {field.name}: use a number from {field.low} to {field.high}"
        )
    for offset, name in enumerate(field.names):
        if name.lower().startswith(text.lower()):  # NCrontab matches names by prefix
            return field.low + offset
    short = ", ".join(name[:3] for name in field.names)
    raise ScheduleError(
        f"'{text}' is not a {field.name} name: use {short} (or {field.low}-{field.high})"
    )


def _check_range(value: int, field: _Field) -> None:
    if field.low <= value <= field.high:
        return
    side = "below the minimum" if value < field.low else "above the maximum"
    limit = field.low if value < field.low else field.high
    hint = ""
    if field.name == "day-of-week" and value == 7:
        hint = " (NCRONTAB numbers Sunday 0 only; write 0 or Sun)"
    raise ScheduleError(f"{value} is {side} {limit} for the {field.name} field{hint}")


def _parse_timespan(expression: str) -> IntervalSchedule:
    text = expression.strip()
    negative = text.startswith("-")
    body = text[1:] if negative else text
    days = hours = minutes = seconds = 0
    fraction = ""
    if _DIGITS.fullmatch(body):
        days = int(body)
    elif match := _TIMESPAN_DAYS_FIRST.fullmatch(body):
        days, hours, minutes, seconds = (int(part) for part in match.groups()[:4])
        fraction = match.group(5) or ""
    elif match := _TIMESPAN.fullmatch(body):
        day_part, hour_part, minute_part, second_part, fraction_part = match.groups()
        hours, minutes = int(hour_part), int(minute_part)
        seconds, fraction = int(second_part or 0), fraction_part or ""
        days = int(day_part or 0)
        if hours > 23 and day_part is None and second_part is not None and not fraction:
            # .NET reads "hh:mm:ss" with hh >= 24 as "d:hh:mm"
            days, hours, minutes = hours, minutes, seconds
            seconds = 0
    else:
        raise ScheduleError(
            f"it is neither an NCRONTAB expression ({FIELDS_HELP}, separated by spaces) nor a "
            f"TimeSpan (hh:mm:ss, e.g. 00:05:00)"
        )
    for value, limit, unit in ((hours, 23, "hours"), (minutes, 59, "minutes")):
        if value > limit:
            raise ScheduleError(f"the TimeSpan has {value} {unit}; the most is {limit}")
    if seconds > 59:
        raise ScheduleError(f"the TimeSpan has {seconds} seconds; the most is 59")
    if days > _MAX_TIMESPAN_DAYS:
        raise ScheduleError(f"the TimeSpan has {days} days; the most is {_MAX_TIMESPAN_DAYS}")
    interval = timedelta(
        days=days,
        hours=hours,
        minutes=minutes,
        seconds=seconds,
        microseconds=int(fraction.ljust(7, "0")) // 10 if fraction else 0,
    )
    if negative or interval <= timedelta(0):
        raise ScheduleError("a TimeSpan schedule must be longer than zero")
    return IntervalSchedule(expression, interval)


def parse_schedule(expression: str, function: str | None = None) -> Schedule:
    """Parse an NCRONTAB or TimeSpan schedule; ConfigurationError says what is wrong."""
    where = f"function '{function}'" if function else "a timer trigger"
    if not expression or not expression.strip():
        raise ConfigurationError(f"{where} has an empty timer schedule", field=function)
    try:
        if " " in expression.strip():
            return CronSchedule.parse(expression)
        return _parse_timespan(expression)
    except ScheduleError as exc:
        raise ConfigurationError(
            f"{where} has an invalid timer schedule '{expression}': {exc}", field=function
        ) from None


def schedule_for(function: AppFunction, get_setting: Callable[[str], str | None]) -> Schedule:
    """The parsed schedule of a timer function, `%NAME%` settings resolved first."""
    raw = function.trigger.get("schedule")
    if not raw:
        raise ConfigurationError(
            f"function '{function.name}' has a timer trigger without a schedule",
            field=function.name,
        )
    expression = resolve(raw, get_setting, f"the schedule of function '{function.name}'")
    assert expression is not None
    return parse_schedule(expression, function.name)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else NEVER


@dataclass
class _Timer:
    function: AppFunction
    schedule: Schedule
    run_on_startup: bool
    monitor: bool  # whether the host would pass the schedule status
    next_due: datetime | None = None
    last: datetime | None = None
    last_updated: datetime | None = None
    finished: datetime | None = None  # when the previous invocation ended
    startup_pending: bool = False


class TimerPump:
    """Fires every timer-triggered function on its schedule (UTC; see the module docstring).

    `call(function, arguments)` invokes a function (aos.devhost.http.invoke or the host's
    wrapper); `now()` is the clock, UTC. Use `run(stop)` in the host and `run_once(at)` in tests.
    """

    def __init__(
        self,
        functions: list[AppFunction],
        call: Callable[[AppFunction, Mapping[str, Any]], Awaitable[Any]],
        *,
        get_setting: Callable[[str], str | None],
        now: Callable[[], datetime] = _utcnow,
        past_due_after: timedelta = timedelta(seconds=1),
        max_sleep: float = 30.0,
    ) -> None:
        self._call = call
        self._now = now
        self.past_due_after = past_due_after
        self.max_sleep = max_sleep
        self._timers: dict[str, _Timer] = {}
        for function in functions:
            if function.trigger_type != TIMER_TRIGGER:
                continue
            schedule = schedule_for(function, get_setting)
            use_monitor = function.trigger.get("useMonitor")
            self._timers[function.name] = _Timer(
                function=function,
                schedule=schedule,
                run_on_startup=bool(function.trigger.get("runOnStartup")),
                monitor=use_monitor is not False and not schedule.sub_minute,
            )
        self._started = False
        zone = (get_setting("WEBSITE_TIME_ZONE") or "").strip()
        if self._timers and zone and zone.upper() not in UTC_ZONES:
            logger.warning(
                "WEBSITE_TIME_ZONE is '%s' but the local host runs timer schedules in UTC only",
                zone,
            )

    @property
    def schedules(self) -> dict[str, Schedule]:
        return {name: timer.schedule for name, timer in self._timers.items()}

    def next_due(self, name: str) -> datetime | None:
        """When function `name` fires next (None: never, or not started yet)."""
        return self._timers[name].next_due

    def start(self, at: datetime | None = None) -> None:
        """Compute every first occurrence from `at` and queue the runOnStartup invocations.
        Called by the first run_once()/run(); calling it again restarts the schedules."""
        at = _as_utc(at) if at is not None else self._now()
        for timer in self._timers.values():
            timer.next_due = timer.schedule.next_after(at)
            timer.last, timer.last_updated, timer.finished = None, at, None
            timer.startup_pending = timer.run_on_startup
            if timer.next_due is None:
                logger.warning(
                    "timer function '%s': schedule '%s' never fires",
                    timer.function.name,
                    timer.schedule.expression,
                )
            else:
                logger.info(
                    "timer function '%s': schedule '%s' (UTC), next occurrences %s",
                    timer.function.name,
                    timer.schedule.expression,
                    ", ".join(o.isoformat() for o in self._occurrences(timer.schedule, at, 5)),
                )
        self._started = True

    @staticmethod
    def _occurrences(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
        found: list[datetime] = []
        moment: datetime | None = after
        while len(found) < count and moment is not None:
            moment = schedule.next_after(moment)
            if moment is not None:
                found.append(moment)
        return found

    async def run_once(self, at: datetime | None = None) -> int:
        """Fire whatever is due at `at` (default now): the runOnStartup invocations on the first
        call, and each function whose next occurrence is at or before `at`, once each however
        many occurrences were missed. Returns the number of invocations."""
        at = _as_utc(at) if at is not None else self._now()
        if not self._started:
            self.start(at)
        due = [
            timer
            for timer in self._timers.values()
            if timer.startup_pending or (timer.next_due is not None and timer.next_due <= at)
        ]
        await asyncio.gather(*(self._fire(timer, at) for timer in due))
        return len(due)

    async def run(self, stop: asyncio.Event) -> None:
        """Fire on schedule until `stop` is set; waits for running invocations, then returns."""
        if not self._started:
            self.start(self._now())
        if not self._timers:
            await stop.wait()
            return
        await asyncio.gather(*(self._loop(timer, stop) for timer in self._timers.values()))

    async def _loop(self, timer: _Timer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = self._now()
            due = now if timer.startup_pending else timer.next_due
            if due is None:
                await stop.wait()
                return
            delay = (due - now).total_seconds()
            if delay > 0:
                # Short naps re-read the wall clock, so a suspended machine catches up.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(delay, self.max_sleep))
                continue
            await self._fire(timer, now)

    async def _fire(self, timer: _Timer, at: datetime) -> None:
        function = timer.function
        startup = timer.startup_pending
        timer.startup_pending = False
        scheduled = timer.next_due
        past_due = False
        if not startup and scheduled is not None:
            # Lateness caused by the previous run overrunning the interval is not "past due".
            baseline = max(scheduled, timer.finished) if timer.finished else scheduled
            past_due = at - baseline > self.past_due_after
        status = None
        if timer.monitor:
            status = {
                "Last": _iso(timer.last),
                "Next": _iso(scheduled),
                "LastUpdated": _iso(timer.last_updated),
            }
        request = TimerRequest(
            past_due=past_due,
            schedule_status=status,
            schedule={"AdjustForDST": timer.schedule.adjust_for_dst},
        )
        began = self._now()
        try:
            await self._call(function, {function.trigger["name"]: request})
        except Exception:
            logger.exception(
                "timer function '%s' failed (%s); its schedule continues",
                function.name,
                "run on startup" if startup else f"scheduled {_iso(scheduled)}",
            )
        timer.last = timer.last_updated = at
        timer.next_due = timer.schedule.next_after(at)
        timer.finished = at + max(self._now() - began, timedelta(0))

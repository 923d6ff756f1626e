"""Timer triggers: NCRONTAB/TimeSpan schedules read as the Functions host reads them, and the pump
that fires a real v2-model function on them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from aos.devhost.app import AppFunction, index
from aos.devhost.http import invoke
from aos.devhost.timers import (
    CronSchedule,
    IntervalSchedule,
    TimerPump,
    parse_schedule,
    schedule_for,
)
from aos.errors import ConfigurationError


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def cron(expression: str) -> CronSchedule:
    schedule = parse_schedule(expression, "fn")
    assert isinstance(schedule, CronSchedule)
    return schedule


def occurrences(expression: str, after: datetime, count: int) -> list[datetime]:
    schedule = parse_schedule(expression, "fn")
    found: list[datetime] = []
    for _ in range(count):
        nxt = schedule.next_after(after)
        assert nxt is not None
        found.append(nxt)
        after = nxt
    return found


# --- parsing -----------------------------------------------------------------------------------


def test_every_field_form() -> None:
    schedule = cron("5 1-3 */6 1,15,31 */5 1-5/2")
    assert schedule.seconds == (5,)
    assert schedule.minutes == (1, 2, 3)
    assert schedule.hours == (0, 6, 12, 18)
    assert schedule.days == (1, 15, 31)
    assert schedule.months == (1, 6, 11)
    assert schedule.weekdays == (1, 3, 5)


def test_star_and_single_value_steps() -> None:
    schedule = cron("*/15 10/20 * 2/10 * *")
    assert schedule.seconds == (0, 15, 30, 45)
    assert schedule.minutes == (10, 30, 50)  # a/n runs from a to the field's maximum
    assert schedule.hours == tuple(range(24))
    assert schedule.days == (2, 12, 22)
    assert schedule.weekdays == tuple(range(7))


def test_lists_of_ranges_and_steps() -> None:
    assert cron("0,10-12,50-59/3 * * * * *").seconds == (0, 10, 11, 12, 50, 53, 56, 59)


def test_month_and_weekday_names() -> None:
    schedule = cron("0 30 9 * Jan Mon")
    assert (schedule.months, schedule.weekdays) == ((1,), (1,))
    schedule = cron("0 0 0 * feb-APR,December sat,SUN")
    assert schedule.months == (2, 3, 4, 12)
    assert schedule.weekdays == (0, 6)
    schedule = cron("0 0 0 * Jan-Dec/3 Mon-Fri")
    assert (schedule.months, schedule.weekdays) == ((1, 4, 7, 10), (1, 2, 3, 4, 5))
    # NCrontab matches names by prefix, so full names and abbreviations both work.
    assert cron("0 0 0 * September Wednesday").months == (9,)
    assert cron("0 0 0 * Sept Wed").weekdays == (3,)


def test_sunday_is_zero_and_seven_is_refused_as_ncrontab_does() -> None:
    assert cron("0 0 0 * * 0").weekdays == (0,)
    assert cron("0 0 0 * * Sun").weekdays == (0,)
    with pytest.raises(ConfigurationError, match=r"7 is above the maximum 6.*write 0 or Sun"):
        parse_schedule("0 0 0 * * 7", "weekly")


def test_reversed_range_is_swapped_as_ncrontab_does() -> None:
    assert cron("0 0 0 * * Fri-Mon").weekdays == (1, 2, 3, 4, 5)
    assert cron("0 0 20-4 * * *").hours == tuple(range(4, 21))


def test_five_fields_mean_second_zero_like_the_host() -> None:
    schedule = cron("*/5 * * * *")
    assert schedule.seconds == (0,)
    assert schedule.minutes == (0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55)


def test_extra_spaces_between_fields_are_fine() -> None:
    assert cron("  0  30   9 * *  1-5 ").hours == (9,)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("* * * *", r"it has 4 fields; an NCRONTAB expression has six, \{second\} \{minute\}"),
        ("0 0 0 * * * *", "it has 7 fields"),
        ("60 * * * * *", "60 is above the maximum 59 for the second field"),
        ("0 60 * * * *", "60 is above the maximum 59 for the minute field"),
        ("0 0 24 * * *", "24 is above the maximum 23 for the hour field"),
        ("0 0 0 0 * *", "0 is below the minimum 1 for the day field"),
        ("0 0 0 32 * *", "32 is above the maximum 31 for the day field"),
        ("0 0 0 * 13 *", "13 is above the maximum 12 for the month field"),
        ("0 0 0 * 0 *", "0 is below the minimum 1 for the month field"),
        ("0 0 1-25 * * *", "25 is above the maximum 23 for the hour field"),
        ("0 0 0 * Foo *", "'Foo' is not a month name: use Jan, Feb, Mar"),
        ("0 0 0 * * Funday", "'Funday' is not a day-of-week name: use Sun, Mon"),
        ("0 abc * * * *", "'abc' is not a valid minute: use a number from 0 to 59"),
        ("0 5x * * * *", "'5x' in the minute field is not a number"),
        ("0 1,,2 * * * *", "the minute field '1,,2' has an empty list entry"),
        ("*/0 * * * * *", "the step in the second field '\\*/0' must be 1 or more"),
        ("*/x * * * * *", "the step 'x' in the second field '\\*/x' is not a whole number"),
        ("/5 * * * * *", "has a step with nothing to step through"),
        ("0 0 5- * * *", "the hour field '5-' is missing a value"),
        ("*/5", "neither an NCRONTAB expression .* nor a TimeSpan"),
        ("every day", "it has 2 fields"),
        ("00:60:00", "the TimeSpan has 60 minutes; the most is 59"),
        ("00:00:60", "the TimeSpan has 60 seconds; the most is 59"),
        ("1.24:00:00", "the TimeSpan has 24 hours; the most is 23"),
        ("00:00:00", "a TimeSpan schedule must be longer than zero"),
        ("-00:05:00", "a TimeSpan schedule must be longer than zero"),
        ("5 minutes", "it has 2 fields"),
        ("00:05:00:00:00", "neither an NCRONTAB expression"),
    ],
)
def test_invalid_schedules_name_the_function_and_the_problem(expression: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as caught:
        parse_schedule(expression, "nightly")
    message = str(caught.value)
    assert message.startswith(f"function 'nightly' has an invalid timer schedule '{expression}': ")
    assert caught.value.field == "nightly"


def test_empty_schedule_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="function 'nightly' has an empty timer schedule"):
        parse_schedule("  ", "nightly")


# --- TimeSpan schedules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "interval"),
    [
        ("00:00:05", timedelta(seconds=5)),
        ("00:01:00", timedelta(minutes=1)),
        ("01:00:00", timedelta(hours=1)),
        ("1.00:00:00", timedelta(days=1)),
        ("2.03:04:05", timedelta(days=2, hours=3, minutes=4, seconds=5)),
        ("00:30", timedelta(minutes=30)),
        ("00:00:00.5", timedelta(milliseconds=500)),
        ("25:00:00", timedelta(days=25)),  # hh >= 24 reads as dd:hh:mm, as the docs say
        ("25:00:00:00", timedelta(days=25)),
        ("24:06:30", timedelta(days=24, hours=6, minutes=30)),
        ("3", timedelta(days=3)),
    ],
)
def test_timespan_forms(expression: str, interval: timedelta) -> None:
    schedule = parse_schedule(expression, "fn")
    assert schedule == IntervalSchedule(expression, interval)


def test_timespan_runs_every_interval_from_the_given_time() -> None:
    schedule = parse_schedule("00:05:00", "fn")
    assert schedule.next_after(utc(2024, 1, 1, 23, 58, 30)) == utc(2024, 1, 2, 0, 3, 30)
    assert occurrences("01:30:00", utc(2024, 1, 1), 3) == [
        utc(2024, 1, 1, 1, 30),
        utc(2024, 1, 1, 3, 0),
        utc(2024, 1, 1, 4, 30),
    ]


# --- next occurrences --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # seconds and minute boundary
        ("*/5 * * * * *", utc(2024, 1, 1, 12, 0, 3), utc(2024, 1, 1, 12, 0, 5)),
        ("*/5 * * * * *", utc(2024, 1, 1, 12, 0, 5), utc(2024, 1, 1, 12, 0, 10)),
        ("*/5 * * * * *", utc(2024, 1, 1, 12, 0, 57), utc(2024, 1, 1, 12, 1, 0)),
        # hour boundary
        ("0 */15 * * * *", utc(2024, 1, 1, 12, 50), utc(2024, 1, 1, 13, 0)),
        ("30 59 * * * *", utc(2024, 1, 1, 12, 59, 31), utc(2024, 1, 1, 13, 59, 30)),
        # day boundary
        ("0 0 9-17 * * *", utc(2024, 1, 1, 17, 0, 1), utc(2024, 1, 2, 9, 0)),
        ("0 0 0 * * *", utc(2024, 1, 1, 0, 0, 0), utc(2024, 1, 2, 0, 0)),
        # month boundary, including short months
        ("0 0 0 1 * *", utc(2024, 1, 31, 23, 59, 59), utc(2024, 2, 1)),
        ("0 0 0 31 * *", utc(2024, 4, 1), utc(2024, 5, 31)),
        ("0 0 0 30 * *", utc(2024, 1, 31), utc(2024, 3, 30)),
        # year boundary and leap years
        ("0 0 0 * * *", utc(2024, 12, 31, 12), utc(2025, 1, 1)),
        ("0 0 12 29 Feb *", utc(2024, 3, 1), utc(2028, 2, 29, 12)),
        ("0 0 8 1 Jan *", utc(2024, 6, 1), utc(2025, 1, 1, 8)),
        # weekdays: Friday 2024-01-05 evening -> Monday 2024-01-08
        ("0 30 9 * * 1-5", utc(2024, 1, 5, 18, 0), utc(2024, 1, 8, 9, 30)),
        ("0 30 9 * * Mon-Fri", utc(2024, 1, 8, 9, 30), utc(2024, 1, 9, 9, 30)),
        ("0 0 6 * * 0", utc(2024, 1, 1), utc(2024, 1, 7, 6)),
        ("0 30 9 * Jan Mon", utc(2024, 1, 29, 10), utc(2025, 1, 6, 9, 30)),
        # day and day-of-week both restricted: NCrontab requires both (a Friday the 13th)
        ("0 0 0 13 * Fri", utc(2024, 1, 1), utc(2024, 9, 13)),
        # five fields: second 0
        ("*/5 * * * *", utc(2024, 1, 1, 12, 3, 10), utc(2024, 1, 1, 12, 5)),
    ],
)
def test_next_occurrence(expression: str, after: datetime, expected: datetime) -> None:
    assert parse_schedule(expression, "fn").next_after(after) == expected


def test_sub_seconds_are_ignored_like_ncrontab() -> None:
    schedule = cron("*/5 * * * * *")
    assert schedule.next_after(utc(2024, 1, 1, 12, 0, 4, 500_000)) == utc(2024, 1, 1, 12, 0, 5)
    assert schedule.next_after(utc(2024, 1, 1, 12, 0, 5, 999_999)) == utc(2024, 1, 1, 12, 0, 10)


def test_every_weekday_across_a_weekend() -> None:
    assert occurrences("0 30 9 * * 1-5", utc(2024, 1, 4, 12), 4) == [
        utc(2024, 1, 5, 9, 30),
        utc(2024, 1, 8, 9, 30),
        utc(2024, 1, 9, 9, 30),
        utc(2024, 1, 10, 9, 30),
    ]


def test_times_are_utc_naive_taken_as_utc_and_aware_converted() -> None:
    schedule = cron("0 0 9 * * *")
    assert schedule.next_after(datetime(2024, 1, 1, 8, 0)) == utc(2024, 1, 1, 9)
    tokyo = timezone(timedelta(hours=9))
    # 17:30 in Tokyo is 08:30 UTC, so 09:00 UTC comes next, the same day.
    assert schedule.next_after(datetime(2024, 1, 1, 17, 30, tzinfo=tokyo)) == utc(2024, 1, 1, 9)
    assert schedule.next_after(utc(2024, 1, 1)).tzinfo is UTC


def test_impossible_date_never_fires() -> None:
    assert cron("0 0 0 30 Feb *").next_after(utc(2024, 1, 1)) is None
    assert cron("0 0 0 31 Apr,Jun *").next_after(utc(2024, 1, 1)) is None


def test_rare_dates_are_found() -> None:
    # 29 February falling on a Monday
    assert cron("0 0 0 29 Feb Mon").next_after(utc(2024, 3, 1)) == utc(2044, 2, 29)


# --- settings ----------------------------------------------------------------------------------


def timer_function(schedule: str, name: str = "tick") -> AppFunction:
    trigger = {"direction": "IN", "type": "timerTrigger", "name": "timer", "schedule": schedule}
    return AppFunction(name=name, trigger=trigger, bindings=[trigger], callable=lambda timer: None)


def test_schedule_from_a_setting() -> None:
    settings = {"NIGHTLY_SCHEDULE": "0 0 2 * * *"}
    schedule = schedule_for(timer_function("%NIGHTLY_SCHEDULE%"), settings.get)
    assert schedule == cron("0 0 2 * * *")


def test_missing_setting_names_function_and_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"function 'tick'.*NIGHTLY_SCHEDULE") as caught:
        schedule_for(timer_function("%NIGHTLY_SCHEDULE%"), {}.get)
    assert caught.value.field == "NIGHTLY_SCHEDULE"


def test_invalid_resolved_setting_names_the_function() -> None:
    with pytest.raises(ConfigurationError, match="function 'tick' has an invalid timer schedule"):
        schedule_for(timer_function("%S%"), {"S": "0 0 25 * * *"}.get)


# --- the pump, with a real v2-model function ---------------------------------------------------


def v2_app(
    record: list[func.TimerRequest],
    *,
    schedule: str = "*/5 * * * * *",
    run_on_startup: bool = True,
    fail: Callable[[], bool] = lambda: False,
) -> list[AppFunction]:
    app = func.FunctionApp()

    @app.timer_trigger(schedule=schedule, arg_name="timer", run_on_startup=run_on_startup)
    def tick(timer: func.TimerRequest) -> None:
        record.append(timer)
        if fail():
            raise RuntimeError("boom")

    @app.route(route="hello")
    def hello(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("hi")

    return list(index(app.get_functions(), Path(".")).functions.values())


def pump_for(functions: list[AppFunction], **kwargs: Any) -> TimerPump:
    return TimerPump(functions, invoke, get_setting=kwargs.pop("settings", {}).get, **kwargs)


async def test_run_on_startup_then_each_occurrence() -> None:
    calls: list[func.TimerRequest] = []
    pump = pump_for(v2_app(calls))
    assert list(pump.schedules) == ["tick"]  # the HTTP function is not a timer
    start = utc(2024, 1, 1, 12, 0, 1)

    assert await pump.run_once(start) == 1  # runOnStartup
    assert len(calls) == 1
    assert isinstance(calls[0], func.TimerRequest)
    assert calls[0].past_due is False
    assert pump.next_due("tick") == utc(2024, 1, 1, 12, 0, 5)

    assert await pump.run_once(utc(2024, 1, 1, 12, 0, 4)) == 0
    assert await pump.run_once(utc(2024, 1, 1, 12, 0, 5)) == 1
    assert await pump.run_once(utc(2024, 1, 1, 12, 0, 5)) == 0  # not twice for one occurrence
    assert await pump.run_once(utc(2024, 1, 1, 12, 0, 10)) == 1
    assert [c.past_due for c in calls] == [False, False, False]
    assert pump.next_due("tick") == utc(2024, 1, 1, 12, 0, 15)


async def test_without_run_on_startup_nothing_fires_at_start() -> None:
    calls: list[func.TimerRequest] = []
    pump = pump_for(v2_app(calls, run_on_startup=False))
    assert await pump.run_once(utc(2024, 1, 1, 12, 0, 0)) == 0
    assert await pump.run_once(utc(2024, 1, 1, 12, 0, 5)) == 1
    assert calls[0].past_due is False


async def test_late_invocation_is_past_due_and_missed_occurrences_are_not_replayed() -> None:
    calls: list[func.TimerRequest] = []
    pump = pump_for(v2_app(calls, run_on_startup=False))
    await pump.run_once(utc(2024, 1, 1, 12, 0, 0))
    # Woken 18 s after the 12:00:05 occurrence (three missed): one past-due run, then on schedule.
    assert await pump.run_once(utc(2024, 1, 1, 12, 0, 23)) == 1
    assert calls[-1].past_due is True
    assert pump.next_due("tick") == utc(2024, 1, 1, 12, 0, 25)
    assert await pump.run_once(utc(2024, 1, 1, 12, 0, 25, 300_000)) == 1
    assert calls[-1].past_due is False  # within the threshold


async def test_past_due_threshold_is_configurable() -> None:
    calls: list[func.TimerRequest] = []
    pump = pump_for(v2_app(calls, run_on_startup=False), past_due_after=timedelta(minutes=1))
    await pump.run_once(utc(2024, 1, 1, 12, 0, 0))
    await pump.run_once(utc(2024, 1, 1, 12, 0, 50))
    assert calls[-1].past_due is False


async def test_overrunning_previous_run_does_not_make_the_next_past_due() -> None:
    clock = [utc(2024, 1, 1, 12, 0, 0)]
    calls: list[func.TimerRequest] = []

    async def slow_call(function: AppFunction, arguments: Mapping[str, Any]) -> None:
        await invoke(function, dict(arguments))
        clock[0] += timedelta(seconds=12)  # the function takes 12 s of a 5 s interval

    pump = TimerPump(
        v2_app(calls, run_on_startup=False), slow_call, get_setting={}.get, now=lambda: clock[0]
    )
    pump.start(clock[0])
    clock[0] = utc(2024, 1, 1, 12, 0, 5)
    assert await pump.run_once(clock[0]) == 1  # runs 12:00:05 - 12:00:17
    assert pump.next_due("tick") == utc(2024, 1, 1, 12, 0, 10)
    assert await pump.run_once(clock[0]) == 1  # fires at once, as the host does
    assert [c.past_due for c in calls] == [False, False]


async def test_failing_function_is_logged_and_the_schedule_continues(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[func.TimerRequest] = []
    failing = [True]
    pump = pump_for(v2_app(calls, fail=lambda: failing[0]))
    with caplog.at_level(logging.ERROR, logger="aos.devhost.timers"):
        assert await pump.run_once(utc(2024, 1, 1, 12, 0, 0)) == 1
        assert await pump.run_once(utc(2024, 1, 1, 12, 0, 5)) == 1
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert "timer function 'tick' failed (run on startup)" in failures[0].getMessage()
    assert "scheduled 2024-01-01T12:00:05+00:00" in failures[1].getMessage()
    assert failures[1].exc_info is not None and "boom" in str(failures[1].exc_info[1])
    failing[0] = False
    assert await pump.run_once(utc(2024, 1, 1, 12, 0, 10)) == 1
    assert len(calls) == 3
    assert pump.next_due("tick") == utc(2024, 1, 1, 12, 0, 15)


async def test_schedule_status_like_the_host_when_it_monitors() -> None:
    calls: list[func.TimerRequest] = []
    pump = pump_for(v2_app(calls, schedule="0 */5 * * * *"))
    await pump.run_once(utc(2024, 1, 1, 12, 1, 0))
    await pump.run_once(utc(2024, 1, 1, 12, 5, 0))
    startup, scheduled = calls
    assert startup.schedule_status == {
        "Last": "0001-01-01T00:00:00+00:00",
        "Next": "2024-01-01T12:05:00+00:00",
        "LastUpdated": "2024-01-01T12:01:00+00:00",
    }
    assert scheduled.schedule_status == {
        "Last": "2024-01-01T12:01:00+00:00",
        "Next": "2024-01-01T12:05:00+00:00",
        "LastUpdated": "2024-01-01T12:01:00+00:00",
    }
    assert scheduled.schedule == {"AdjustForDST": True}


async def test_no_schedule_status_for_sub_minute_schedules_or_without_monitor() -> None:
    calls: list[func.TimerRequest] = []
    pump = pump_for(v2_app(calls))  # every 5 seconds: the host turns useMonitor off
    await pump.run_once(utc(2024, 1, 1))
    assert calls[-1].schedule_status == {}

    function = timer_function("0 0 * * * *")
    function.trigger["useMonitor"] = False
    function.trigger["runOnStartup"] = True
    seen: list[func.TimerRequest] = []

    async def call(fn: AppFunction, arguments: Mapping[str, Any]) -> None:
        seen.append(arguments["timer"])

    pump = TimerPump([function], call, get_setting={}.get)
    await pump.run_once(utc(2024, 1, 1))
    assert seen[0].schedule_status == {}
    assert pump_for([timer_function("00:00:30")]).schedules["tick"] == IntervalSchedule(
        "00:00:30", timedelta(seconds=30)
    )


async def test_timespan_schedule_in_the_pump() -> None:
    calls: list[func.TimerRequest] = []
    pump = pump_for(v2_app(calls, schedule="00:10:00", run_on_startup=False))
    await pump.run_once(utc(2024, 1, 1, 12, 3, 7))
    assert pump.next_due("tick") == utc(2024, 1, 1, 12, 13, 7)
    assert await pump.run_once(utc(2024, 1, 1, 12, 13, 7)) == 1
    assert pump.next_due("tick") == utc(2024, 1, 1, 12, 23, 7)
    assert calls[0].schedule == {"AdjustForDST": False}


async def test_pump_resolves_settings_and_refuses_bad_schedules() -> None:
    calls: list[func.TimerRequest] = []
    functions = v2_app(calls, schedule="%TICK%", run_on_startup=False)
    pump = pump_for(functions, settings={"TICK": "0 0 * * * *"})
    await pump.run_once(utc(2024, 1, 1, 12, 30))
    assert pump.next_due("tick") == utc(2024, 1, 1, 13, 0)
    with pytest.raises(ConfigurationError, match=r"function 'tick'.*setting TICK is not set"):
        pump_for(functions)
    with pytest.raises(ConfigurationError, match="function 'tick' has an invalid timer schedule"):
        pump_for(functions, settings={"TICK": "0 0 * * * Someday"})


def test_pump_warns_about_other_time_zones(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="aos.devhost.timers"):
        pump_for([timer_function("0 0 * * * *")], settings={"WEBSITE_TIME_ZONE": "UTC"})
        assert not caplog.records
        pump_for(
            [timer_function("0 0 * * * *")],
            settings={"WEBSITE_TIME_ZONE": "Eastern Standard Time"},
        )
    assert "runs timer schedules in UTC only" in caplog.records[0].getMessage()


async def test_schedule_that_never_fires_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    pump = pump_for([timer_function("0 0 0 30 Feb *")])
    with caplog.at_level(logging.WARNING, logger="aos.devhost.timers"):
        assert await pump.run_once(utc(2024, 1, 1)) == 0
    assert pump.next_due("tick") is None
    assert "never fires" in caplog.records[0].getMessage()


async def test_run_fires_on_a_real_clock_and_stops() -> None:
    calls: list[func.TimerRequest] = []
    stop = asyncio.Event()

    async def call(function: AppFunction, arguments: Mapping[str, Any]) -> None:
        await invoke(function, dict(arguments))
        if len(calls) >= 3:
            stop.set()

    # A 50 ms TimeSpan so the test does not wait for a cron second; stop after three runs.
    pump = TimerPump(v2_app(calls, schedule="00:00:00.05"), call, get_setting={}.get)
    await asyncio.wait_for(pump.run(stop), timeout=10)
    assert len(calls) >= 3
    assert calls[0].past_due is False  # the runOnStartup run
    count = len(calls)
    await asyncio.sleep(0.15)
    assert len(calls) == count  # nothing fires after run() returned


async def test_run_returns_promptly_when_stopped_while_waiting() -> None:
    stop = asyncio.Event()
    pump = pump_for([timer_function("0 0 0 1 Jan *")])  # next run is months away
    task = asyncio.create_task(pump.run(stop))
    await asyncio.sleep(0.05)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, timeout=5)

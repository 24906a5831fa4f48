"""The agent's timings: spec defaults, Fleet's FLEETD_ENROLL_RETRY_INTERVAL, and the ORBIT_DEV_* test knobs."""

from __future__ import annotations

import pytest

from orbit.timings import Timings, timings_from_env


def test_defaults_are_the_specs() -> None:
    timings = timings_from_env({})
    assert timings == Timings()
    assert (timings.config_interval, timings.config_max_backoff, timings.config_cache_ttl) == (30.0, 300.0, 3.0)
    assert (timings.enroll_retry_interval, timings.enroll_attempts, timings.reenroll_debounce) == (10.0, 6, 45.0)
    assert (timings.token_local_check, timings.token_remote_check) == (30.0, 300.0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1m30s", 90.0), ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), (" 1h ", 3600.0), ("1.5s", 1.5)],
)
def test_the_enroll_retry_interval_takes_a_go_duration(value: str, seconds: float) -> None:
    assert timings_from_env({"FLEETD_ENROLL_RETRY_INTERVAL": value}).enroll_retry_interval == seconds


@pytest.mark.parametrize("value", ["", "   ", "90", "ten seconds", "1x", "s", "-10s"])
def test_a_bad_enroll_retry_interval_is_ignored(value: str) -> None:
    assert timings_from_env({"FLEETD_ENROLL_RETRY_INTERVAL": value}).enroll_retry_interval == 10.0


def test_dev_overrides_replace_single_fields() -> None:
    timings = timings_from_env(
        {
            "ORBIT_DEV_CONFIG_INTERVAL": "0.5",
            "ORBIT_DEV_REENROLL_DEBOUNCE": "2",
            "ORBIT_DEV_ENROLL_ATTEMPTS": "3",
            "ORBIT_DEV_TRIAL_DEADLINE": " 12 ",
        }
    )
    assert timings.config_interval == 0.5 and timings.reenroll_debounce == 2.0 and timings.trial_deadline == 12.0
    assert timings.enroll_attempts == 3 and isinstance(timings.enroll_attempts, int)
    assert timings.config_max_backoff == 300.0  # the others keep their defaults


def test_an_int_field_given_a_fraction_stays_an_int() -> None:
    attempts = timings_from_env({"ORBIT_DEV_ENROLL_ATTEMPTS": "2.7"}).enroll_attempts
    assert attempts == 2 and isinstance(attempts, int)


@pytest.mark.parametrize("value", ["", "abc", "0", "-5", "nan", "inf", "1e400", "-inf"])
def test_bad_dev_values_are_ignored(value: str) -> None:
    timings = timings_from_env({"ORBIT_DEV_CONFIG_INTERVAL": value, "ORBIT_DEV_ENROLL_ATTEMPTS": value})
    assert timings.config_interval == 30.0 and timings.enroll_attempts == 6


def test_a_fraction_below_one_for_an_int_field_is_ignored() -> None:
    timings = timings_from_env({"ORBIT_DEV_ENROLL_ATTEMPTS": "0.5", "ORBIT_DEV_CONFIG_INTERVAL": "0.5"})
    assert timings.enroll_attempts == 6  # 0 attempts would never enroll
    assert timings.config_interval == 0.5


def test_a_dev_override_beats_fleets_variable() -> None:
    env = {"FLEETD_ENROLL_RETRY_INTERVAL": "1m", "ORBIT_DEV_ENROLL_RETRY_INTERVAL": "0.1"}
    assert timings_from_env(env).enroll_retry_interval == 0.1


def test_unrelated_variables_are_ignored() -> None:
    assert timings_from_env({"ORBIT_DEV_NOT_A_FIELD": "1", "CONFIG_INTERVAL": "1"}) == Timings()

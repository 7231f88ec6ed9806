"""`switchboard send` and `switchboard api-key` as a person runs them."""

from __future__ import annotations

import json
from typing import Any

from tests.support.messaging import ACCOUNT, TOKEN, twilio_served

LESSON = [
    "--set",
    "lesson.title=Violin",
    "--set",
    "lesson.starts=tomorrow",
    "--set",
    "lesson.room=",
]


def connect(run: Any, url: str) -> None:
    added = run(
        "connection", "add", "twilio", "--name", "Twilio",
        "--set", f"account_sid={ACCOUNT}", "--set", "from_number=+15005550006",
        "--set", f"api_url={url}", "--secret", "auth_token=env:TWILIO_TOKEN",
        env={**run.environment, "TWILIO_TOKEN": TOKEN},
    )  # fmt: skip
    assert added.returncode == 0, added.stderr


def test_a_message_to_one_number_is_sent_and_reported(run: Any) -> None:
    with twilio_served() as (twilio, url):
        connect(run, url)
        sent = run(
            "send", "--template", "Lesson reminder", "--to", "+263771000001",
            "--set", "student.first_name=Rudo", *LESSON, "--json",
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        summary = json.loads(sent.stdout)
        assert summary["status"] == "done"
        assert summary["counts"] == {"queued": 1}
        assert twilio.received == {"+263771000001": 1}
        [message] = twilio.messages.values()
        assert message.body.startswith("Reminder: Rudo has Violin tomorrow")


def test_a_template_the_data_does_not_fill_sends_nothing_and_says_why(run: Any) -> None:
    with twilio_served() as (twilio, url):
        connect(run, url)
        sent = run("send", "--template", "Lesson reminder", "--to", "+263771000001")
        assert sent.returncode == 1
        assert "Nothing can be sent" in sent.stderr
        assert "'student' is undefined" in sent.stdout  # the reason, per person
        assert not twilio.messages


def test_bad_usage_exits_2(run: Any) -> None:
    assert run("send", "--to", "+263771000001").returncode == 2
    missing = run("send", "--template", "Nope", "--to", "+263771000001")
    assert missing.returncode == 1
    assert "no message template 'Nope'" in missing.stderr


def test_an_api_key_is_shown_once_listed_without_its_value_and_revoked(run: Any) -> None:
    made = run("api-key", "create", "Zapier", "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["key"].startswith("sbk_")
    listed = json.loads(run("api-key", "list", "--json").stdout)
    assert key["key"] not in json.dumps(listed)
    assert [item["name"] for item in listed["keys"]] == ["Zapier"]
    revoked = json.loads(run("api-key", "revoke", str(key["id"]), "--json").stdout)
    assert revoked["revoked_at"] is not None

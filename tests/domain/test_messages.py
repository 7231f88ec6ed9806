"""SMS length as carriers count it, addresses written as providers accept them, replies that
opt out, and statuses that only move forward."""

from __future__ import annotations

import pytest

from app.domain.messages import (
    AddressError,
    Channel,
    Encoding,
    MessageStatus,
    address_for,
    advances,
    e164,
    email_address,
    region_of_locale,
    reply_intent,
    sms_length,
)


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("", Encoding.GSM7, 0),
        ("a" * 160, Encoding.GSM7, 1),
        ("a" * 161, Encoding.GSM7, 2),
        ("a" * 306, Encoding.GSM7, 2),
        ("a" * 307, Encoding.GSM7, 3),
        ("€" * 80, Encoding.GSM7, 1),  # an escape and itself: two septets each
        ("€" * 81, Encoding.GSM7, 2),
        ("ü" * 70, Encoding.GSM7, 1),  # ü is in the GSM alphabet
        ("ş" * 70, Encoding.UCS2, 1),  # ş is not: the whole text is UCS-2
        ("ş" * 71, Encoding.UCS2, 2),
        ("ş" * 134, Encoding.UCS2, 2),
        ("ş" * 135, Encoding.UCS2, 3),
    ],
)
def test_sms_length_counts_parts_as_carriers_do(
    text: str, encoding: Encoding, segments: int
) -> None:
    length = sms_length(text)
    assert (length.encoding, length.segments) == (encoding, segments)


def test_an_escape_pair_is_never_split_across_parts() -> None:
    # 152 plain characters then "€": 154 septets, and the pair does not fit the first part's
    # last septet, so it starts the second part.
    length = sms_length("a" * 152 + "€" + "a" * 10)
    assert length.units == 164
    assert length.segments == 2
    assert length.remaining == 153 - 12


def test_an_emoji_is_two_units_and_never_split() -> None:
    length = sms_length("a" * 66 + "🎻" + "a")
    assert length.encoding is Encoding.UCS2
    assert length.units == 69
    assert length.segments == 1
    split = sms_length("a" * 66 + "🎻" + "a" * 10)
    assert split.segments == 2
    assert split.unicode_characters == ("🎻",)


def test_numbers_without_a_country_code_are_read_as_the_schools_country() -> None:
    assert e164("077 123 4567", "ZW") == "+263771234567"
    assert e164("+44 7911 123456") == "+447911123456"
    assert e164("00263 77 123 4567", "ZW") == "+263771234567"
    with pytest.raises(AddressError, match="country code"):
        e164("077 123 4567")
    with pytest.raises(AddressError, match="not a valid phone number"):
        e164("+263 12", "ZW")
    with pytest.raises(AddressError, match="no phone number"):
        e164("  ", "ZW")


def test_addresses_are_written_the_way_each_channel_needs() -> None:
    assert region_of_locale("en_ZW") == "ZW"
    assert region_of_locale("en") == ""
    assert email_address(" Tendai@Example.ORG ") == "Tendai@example.org"
    with pytest.raises(AddressError):
        email_address("not an address")
    assert address_for(Channel.WHATSAPP, "0771234567", "ZW") == "+263771234567"
    assert address_for(Channel.PUSH, " device-token ") == "device-token"


@pytest.mark.parametrize(
    ("reply", "intent"),
    [("STOP", "stop"), (" stop. ", "stop"), ("Unsubscribe", "stop"), ("START", "start"),
     ("stop sending me these please", ""), ("Thanks!", "")],
)  # fmt: skip
def test_a_reply_of_one_opt_out_word_stops_messages(reply: str, intent: str) -> None:
    assert reply_intent(reply) == intent


def test_a_late_report_never_moves_a_message_back() -> None:
    assert advances(MessageStatus.QUEUED, MessageStatus.SENT)
    assert advances(MessageStatus.SENT, MessageStatus.DELIVERED)
    assert not advances(MessageStatus.DELIVERED, MessageStatus.SENT)
    assert not advances(MessageStatus.FAILED, MessageStatus.DELIVERED)
    assert advances(MessageStatus.DELIVERED, MessageStatus.BOUNCED)  # e-mail bounces late
    assert advances(MessageStatus.UNKNOWN, MessageStatus.DELIVERED)  # found after all
    assert not advances(MessageStatus.SENT, MessageStatus.SENT)

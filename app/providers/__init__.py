"""Providers: one module per external provider, the spec every provider kind declares, and the
resilient HTTP layer every call goes through. `KINDS` lists every kind Switchboard knows."""

from __future__ import annotations

from app.domain.errors import SwitchboardError
from app.providers.caldav import CALDAV
from app.providers.dwolla import DWOLLA
from app.providers.fcm import FCM
from app.providers.google_calendar import GOOGLE_CALENDAR
from app.providers.http_sms import HTTP_SMS
from app.providers.paynow import PAYNOW
from app.providers.paypal import PAYPAL
from app.providers.paysafe import PAYSAFE
from app.providers.rates import ECB, OPEN_EXCHANGE_RATES
from app.providers.sandbox import SANDBOX_PAYMENTS
from app.providers.sandbox_sms import SANDBOX_SMS
from app.providers.sendgrid import SENDGRID
from app.providers.smtp import SMTP
from app.providers.spec import ProviderSpec
from app.providers.stripe import STRIPE
from app.providers.twilio import TWILIO
from app.providers.whatsapp import WHATSAPP

KINDS: dict[str, ProviderSpec] = {
    spec.key: spec
    for spec in (
        SANDBOX_PAYMENTS,
        STRIPE,
        PAYPAL,
        DWOLLA,
        PAYNOW,
        PAYSAFE,
        ECB,
        OPEN_EXCHANGE_RATES,
        GOOGLE_CALENDAR,
        CALDAV,
        SANDBOX_SMS,
        TWILIO,
        HTTP_SMS,
        SMTP,
        SENDGRID,
        WHATSAPP,
        FCM,
    )
}


def kind(key: str) -> ProviderSpec:
    try:
        return KINDS[key]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise SwitchboardError(
            f"There is no provider kind {key!r}; the kinds are: {known}."
        ) from None

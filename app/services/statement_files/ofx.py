"""Bank statements as OFX (and Quicken's QFX, which is OFX with an extra tag): 1.x SGML and 2.x XML.

OFX 1.x is SGML: a `KEY:VALUE` header, then tags whose end tags are optional for elements that
hold a value (`<TRNAMT>-12.50` ends where the next tag starts). OFX 2.x is XML with an `<?OFX
...?>` processing instruction. Both are read by one small tokenizer that treats a tag followed
by text as a value and a tag followed by another tag as an aggregate closed by its end tag, so
no XML parser ever sees the file: nothing is expanded or fetched. A file that declares a
document type or entities is refused outright, since a bank's statement never needs one.

Read from each STMTRS (bank account) and CCSTMTRS (card account): CURDEF, the BANKTRANLIST's
DTSTART/DTEND (the period), and each STMTTRN's TRNTYPE, DTPOSTED, TRNAMT (signed from the
account holder's side: positive is money in), FITID, NAME or PAYEE/NAME, MEMO, REFNUM,
CHECKNUM and CURRENCY/CURSYM (the transaction's currency when it is not CURDEF). A record's
external id is the FITID; its reference the REFNUM or CHECKNUM; its description the MEMO.

Dates are `YYYYMMDD[HHMMSS[.XXX]][[+-]H[.MM]:TZ]`; the offset in brackets is honoured. A date
without a time, or with midnight and no offset (what banks write for "this day"), is noon UTC of
that day; a time without an offset is GMT, as the specification says. Amounts may use a comma
as the decimal mark (the specification allows either), never digit grouping.

Sources (read 2026): Open Financial Exchange Specification 2.1.1, sections 3.2.8 (dates and
time zones), 3.2.9 (amounts), 11.4.2 (STMTRS, STMTTRN), as quoted in the field notes of
https://hackage.haskell.org/package/ofx ; Exact Online's OFX import notes (exactsoftware.com)
for the 1.02 SGML header; https://mnybank.sourceforge.net/Specs_Ofc.html for the transaction
tags' meaning.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone

from app.domain.reconciliation import Kind, ParsedFile, Record, RowError, Side
from app.services.statement_files.records import Draft, settle_ids
from app.services.statement_files.text import reject, rejected
from app.services.statement_files.values import (
    ValueProblem,
    read_amount,
    read_currency,
    shown,
)

_TOKEN = re.compile(r"<(/?)([A-Za-z0-9_.]+)(?:\s[^>]*)?>([^<]*)", re.S)
_DATE = re.compile(
    r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})"
    r"(?:(?P<H>\d{2})(?P<M>\d{2})(?:(?P<S>\d{2})(?:\.\d{1,6})?)?)?"
    r"\s*(?:\[\s*(?P<off>[+-]?\d{1,2}(?:[.:]\d{1,2})?)\s*(?::\s*(?P<tz>[A-Za-z_/+-]*))?\s*\])?"
)
_ENTITY = re.compile(r"&(amp|lt|gt|quot|apos|nbsp|#\d{1,7}|#x[0-9a-fA-F]{1,6});")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'", "nbsp": "\u00a0"}
# Elements that hold a value: never aggregates, even when a bank leaves them empty.
_VALUES = {
    "TRNTYPE", "DTPOSTED", "DTUSER", "DTAVAIL", "TRNAMT", "FITID", "CORRECTFITID",
    "CORRECTACTION", "SRVRTID", "CHECKNUM", "REFNUM", "SIC", "PAYEEID", "NAME", "EXTDNAME",
    "MEMO", "INV401KSOURCE", "CURSYM", "CURRATE", "CURDEF", "DTSTART", "DTEND", "BALAMT",
    "DTASOF", "BANKID", "BRANCHID", "ACCTID", "ACCTTYPE", "ACCTKEY", "CODE", "SEVERITY",
    "MESSAGE", "DTSERVER", "LANGUAGE", "TRNUID", "ORG", "FID", "DTPROFUP", "DTACCTUP",
}  # fmt: skip


@dataclass
class Node:
    tag: str
    text: str = ""
    children: list[Node] = field(default_factory=list)

    def all(self, tag: str) -> list[Node]:
        """Every descendant with this tag, in file order."""
        found: list[Node] = []
        pending = list(reversed(self.children))  # a loop, not recursion: nesting is untrusted
        while pending:
            node = pending.pop()
            if node.tag == tag:
                found.append(node)
            pending.extend(reversed(node.children))
        return found

    def value(self, *path: str) -> str:
        """The text of the first descendant along `path` ("" when absent)."""
        nodes = [self]
        for tag in path:
            nodes = [found for node in nodes for found in node.all(tag)]
            if not nodes:
                return ""
        return nodes[0].text


def looks_like(head: str) -> bool:
    start = head.lstrip("\ufeff \t\r\n")
    return start.upper().startswith("OFXHEADER") or "<OFX>" in head.upper()


def read_ofx(name: str, data: bytes, *, source: str, currency: str = "") -> ParsedFile:
    text = _decode(data)
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise reject(
            name,
            "the file declares XML entities or a document type, which a bank statement never "
            "needs; Switchboard does not read such files, for safety",
        )
    start = upper.find("<OFX>")
    if start < 0:
        raise reject(name, "this is not an OFX statement (it has no <OFX> element)")
    body = re.sub(r"<\?.*?\?>|<!--.*?-->", "", text[start:], flags=re.S)
    root = _tree(body)
    statements = root.all("STMTRS") + root.all("CCSTMTRS")
    if not statements:
        message = root.value("STATUS", "MESSAGE")
        reason = "the file holds no bank or card statement"
        raise reject(name, f"{reason} ({message})" if message else reason)

    drafts: list[Draft] = []
    errors: list[RowError] = []
    starts: list[datetime] = []
    ends: list[datetime] = []
    currencies: set[str] = set()
    number = 0
    for statement in statements:
        default = statement.value("CURDEF") or currency
        for bound, into in (("DTSTART", starts), ("DTEND", ends)):
            written = statement.value("BANKTRANLIST", bound)
            if written:
                try:
                    into.append(read_ofx_date(written))
                except ValueProblem as error:
                    errors.append(RowError(1, bound, str(error)))
        for transaction in statement.all("STMTTRN"):
            number += 1
            draft = _transaction(number, transaction, default, source, errors)
            if draft is not None:
                drafts.append(draft)
                currencies.add(draft.record.currency)
    records = settle_ids(drafts)
    if errors:
        raise rejected(name, errors)
    period = (min(starts), max(ends)) if starts and ends else None
    return ParsedFile(
        format="ofx",
        records=records,
        currency=currencies.pop() if len(currencies) == 1 else "",
        period=period,
    )


def _transaction(
    number: int, node: Node, default: str, source: str, errors: list[RowError]
) -> Draft | None:
    problems: list[RowError] = []
    code = ""
    written_code = node.value("CURRENCY", "CURSYM") or default
    if not written_code:
        problems.append(
            RowError(number, "CURDEF", "the statement does not say its currency; choose it")
        )
    else:
        try:
            code = read_currency(written_code)
        except ValueProblem as error:
            problems.append(RowError(number, "CURDEF", str(error)))
    at = None
    try:
        at = read_ofx_date(node.value("DTPOSTED") or node.value("DTUSER"))
    except ValueProblem as error:
        problems.append(RowError(number, "DTPOSTED", str(error)))
    amount = None
    if code:
        written = node.value("TRNAMT")
        try:
            comma = "," in written and "." not in written
            amount = read_amount(written, code, decimal_comma=comma)
        except ValueProblem as error:
            problems.append(RowError(number, "TRNAMT", str(error)))
    if problems or at is None or amount is None:
        errors.extend(problems)
        return None
    record = Record(
        side=Side.BANK,
        source=source,
        external_id="",
        kind=Kind.CREDIT if amount >= 0 else Kind.DEBIT,
        amount_minor=amount,
        currency=code,
        at=at,
        reference=node.value("REFNUM") or node.value("CHECKNUM"),
        description=node.value("MEMO") or node.value("TRNTYPE"),
        counterparty=node.value("NAME"),
    )
    return Draft(number, record, own_id=node.value("FITID"))


def read_ofx_date(text: str) -> datetime:
    """An OFX date-time, honouring a `[offset:TZ]` suffix."""
    raw = text.strip()
    if not raw:
        raise ValueProblem("the date is empty")
    match = _DATE.fullmatch(raw)
    wrong = ValueProblem(f"the date {shown(raw)} is not an OFX date (such as 20260131120000)")
    if not match:
        raise wrong
    try:
        day = date(int(match["y"]), int(match["m"]), int(match["d"]))
        clock = time(int(match["H"]), int(match["M"]), int(match["S"] or 0)) if match["H"] else None
    except ValueError:
        raise wrong from None
    if match["off"]:
        hours_text = match["off"].replace(":", ".")
        sign = -1 if hours_text.startswith("-") else 1
        whole, _, fraction = hours_text.lstrip("+-").partition(".")
        # "[-3.30:NST]" is three and a half hours: OFX writes the fraction as minutes or tenths
        minutes = int(fraction) if len(fraction) == 2 else int(fraction or 0) * 6
        offset = sign * timedelta(hours=int(whole), minutes=minutes)
        if offset > timedelta(hours=14) or offset < -timedelta(hours=14):
            raise wrong
        zone = timezone(offset) if offset else UTC
        return datetime.combine(day, clock or time(0), zone).astimezone(UTC)
    if clock is None or clock == time(0):
        return datetime.combine(day, time(12), UTC)
    return datetime.combine(day, clock, UTC)


def _decode(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace")
    head = data[:2048].decode("ascii", errors="replace").upper()
    declared = re.search(r"ENCODING\s*=\s*[\"']([A-Z0-9_.-]+)", head)
    charset = re.search(r"^CHARSET:\s*([A-Z0-9_.-]+)", head, re.M)
    encoding = ""
    if declared:
        encoding = declared[1]
    elif "ENCODING:UTF-8" in head.replace(" ", ""):
        encoding = "utf-8"
    elif charset and charset[1] in ("1252", "WINDOWS-1252", "CP1252"):
        encoding = "cp1252"
    elif charset and "8859" in charset[1]:
        encoding = "latin-1"
    if encoding:
        try:
            return data.decode(encoding, errors="replace")
        except LookupError:
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        entity = match[1]
        if entity.startswith("#x"):
            return chr(int(entity[2:], 16)) if int(entity[2:], 16) <= 0x10FFFF else ""
        if entity.startswith("#"):
            return chr(int(entity[1:])) if int(entity[1:]) <= 0x10FFFF else ""
        return _NAMED[entity]

    return _ENTITY.sub(one, text)


def _tree(body: str) -> Node:
    root = Node("")
    stack = [root]
    for match in _TOKEN.finditer(body):
        closing, tag, text = match[1], match[2].upper(), match[3].strip()
        if closing:
            for depth in range(len(stack) - 1, 0, -1):
                if stack[depth].tag == tag:
                    del stack[depth:]
                    break
            continue  # the end of a value element, or a stray end tag
        node = Node(tag, _unescape(" ".join(text.split())))
        stack[-1].children.append(node)
        if not text and tag not in _VALUES:
            stack.append(node)
    return root

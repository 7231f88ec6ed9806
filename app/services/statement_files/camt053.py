"""Bank statements as ISO 20022 CAMT.053 XML (BankToCustomerStatement, camt.053.001.02 to .13).

Each Stmt's Ntry (entry) is one line on the bank statement and becomes one Record, even when it
carries several TxDtls (a batch of transfers booked as one amount): the bank booked one amount,
and that is what the other sides must add up to. Read per entry:

- Amt and its Ccy attribute (unsigned), CdtDbtInd (CRDT is money in, DBIT money out);
- Sts: BOOK entries only; PDNG (pending) and INFO entries are not on the balance and are left
  out. Version .02 writes `<Sts>BOOK</Sts>`, later ones `<Sts><Cd>BOOK</Cd></Sts>`;
- BookgDt, else ValDt, each a Dt (a day: noon UTC) or a DtTm (exact when it has an offset,
  else its day at noon UTC, since the bank's zone is not stated);
- the id: AcctSvcrRef, else NtryRef, else the single TxDtls' Refs/AcctSvcrRef or TxId
  ("NONREF" and "NOTPROVIDED" are not ids);
- the reference: every TxDtls' Refs/EndToEndId and RmtInf/Strd/CdtrRefInf/Ref, joined;
- the description: RmtInf/Ustrd lines, then AddtlTxInf and AddtlNtryInf;
- the counterparty: RltdPties/Dbtr (or UltmtDbtr) on a credit, Cdtr (or UltmtCdtr) on a debit,
  as `Dbtr/Nm` (.02) or `Dbtr/Pty/Nm` (.08 and later).

The statement's Acct/Ccy and FrToDt give the file's currency and period. A row number in an
error is the entry's position in the file (the first Ntry is 1).

The XML is parsed with defusedxml with document types forbidden, so an entity bomb or an
external entity is refused before anything is expanded or fetched.

Sources (read 2026): ISO 20022 message definitions for camt.053/camt.054 as browsable at
https://www.mx-message.com/m/camt-054-001-11/BkToCstmrDbtCdtNtfctn/Ntfctn/Ntry/AmtDtls/CntrValAmt/Amt
(Ntry: NtryRef, Amt, CdtDbtInd, RvslInd, Sts, BookgDt, ValDt, AcctSvcrRef, NtryDtls/TxDtls:
Refs, RltdPties, RmtInf) and https://mx-message.com/m/camt-054-001-11/BkToCstmrDbtCdtNtfctn/Ntfctn/Intrst/Rate/VldtyRg/CdtDbtInd
(CRDT: increase, DBIT: decrease).
"""

from __future__ import annotations

import re
from datetime import datetime
from xml.etree.ElementTree import Element, ParseError

import defusedxml
from defusedxml.ElementTree import fromstring

from app.domain.reconciliation import Kind, ParsedFile, Record, RowError, Side
from app.services.statement_files.records import Draft, settle_ids
from app.services.statement_files.text import reject, rejected
from app.services.statement_files.values import (
    DateOrder,
    ValueProblem,
    read_amount,
    read_currency,
    read_date,
    shown,
)

_NAMESPACE = re.compile(r"urn:iso:std:iso:20022:tech:xsd:(camt\.\d{3})\.001\.(\d{2})")
_NOT_IDS = {"", "NONREF", "NOTPROVIDED", "NOT PROVIDED"}
_SKIPPED_STATUSES = {"PDNG", "INFO", "FUTR"}


def looks_like(head: str) -> bool:
    return "urn:iso:std:iso:20022:tech:xsd:camt.053." in head


class _Paths:
    """ElementTree paths in the file's namespace: `self("Ntry/Amt")`."""

    def __init__(self, namespace: str) -> None:
        self.prefix = f"{{{namespace}}}" if namespace else ""

    def __call__(self, path: str) -> str:
        return "/".join(
            part if part in (".", "..", "") or part.startswith(".") else self.prefix + part
            for part in path.split("/")
        )


def read_camt053(name: str, data: bytes, *, source: str) -> ParsedFile:
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException:
        raise reject(
            name,
            "the file declares XML entities or a document type, which a bank statement never "
            "needs; Switchboard does not read such files, for safety",
        ) from None
    except ParseError as error:
        line = error.position[0] if error.position else 1
        raise reject(
            name,
            f"the file is not well-formed XML (line {line}); download the statement again",
            row=max(1, line),
        ) from None
    namespace = root.tag[1:].partition("}")[0] if root.tag.startswith("{") else ""
    match = _NAMESPACE.fullmatch(namespace)
    if namespace and (match is None or match[1] != "camt.053"):
        kind = match[1] if match else namespace
        raise reject(
            name, f"this is a {kind} message, not a camt.053 bank statement; download the statement"
        )
    q = _Paths(namespace)
    statements = root.findall(q("BkToCstmrStmt/Stmt"))
    if not statements:
        raise reject(name, "the file holds no statement (no BkToCstmrStmt/Stmt element)")

    drafts: list[Draft] = []
    errors: list[RowError] = []
    currencies: set[str] = set()
    starts: list[datetime] = []
    ends: list[datetime] = []
    number = 0
    for statement in statements:
        account_currency = (statement.findtext(q("Acct/Ccy")) or "").strip()
        if account_currency:
            currencies.add(account_currency.upper())
        for bound, into in (("FrToDt/FrDtTm", starts), ("FrToDt/ToDtTm", ends)):
            written = (statement.findtext(q(bound)) or "").strip()
            if written:
                try:
                    into.append(read_date(written, DateOrder.YMD).instant())
                except ValueProblem as error:
                    errors.append(RowError(1, bound, str(error)))
        for entry in statement.findall(q("Ntry")):
            number += 1
            draft = _entry(number, entry, q, source, errors)
            if draft is not None:
                drafts.append(draft)
                currencies.add(draft.record.currency)
    records = settle_ids(drafts)
    if errors:
        raise rejected(name, errors)
    return ParsedFile(
        format="camt053",
        records=records,
        currency=currencies.pop() if len(currencies) == 1 else "",
        period=(min(starts), max(ends)) if starts and ends else None,
    )


def _text(element: Element | None) -> str:
    return " ".join((element.text or "").split()) if element is not None else ""


def _entry(
    number: int, entry: Element, q: _Paths, source: str, errors: list[RowError]
) -> Draft | None:
    status = _text(entry.find(q("Sts/Cd"))) or _text(entry.find(q("Sts")))
    if status.upper() in _SKIPPED_STATUSES:
        return None
    problems: list[RowError] = []
    amount_element = entry.find(q("Amt"))
    code = ""
    try:
        code = read_currency(amount_element.get("Ccy", "") if amount_element is not None else "")
    except ValueProblem as error:
        problems.append(RowError(number, "Amt/@Ccy", str(error)))
    amount = None
    written = _text(amount_element)
    if code:
        try:
            amount = read_amount(written, code)
            if amount < 0 or written.startswith("-"):
                raise ValueProblem(
                    f"the amount {shown(written)} is negative; a CAMT amount is unsigned and "
                    "CdtDbtInd gives its direction"
                )
        except ValueProblem as error:
            problems.append(RowError(number, "Amt", str(error)))
            amount = None
    direction = _text(entry.find(q("CdtDbtInd"))).upper()
    if direction not in ("CRDT", "DBIT"):
        problems.append(
            RowError(number, "CdtDbtInd", f"{shown(direction)} is neither CRDT nor DBIT")
        )
    at = None
    when = ""
    for path in ("BookgDt/DtTm", "BookgDt/Dt", "ValDt/DtTm", "ValDt/Dt"):
        when = _text(entry.find(q(path)))
        if when:
            try:
                at = read_date(when, DateOrder.YMD).instant()
            except ValueProblem as error:
                problems.append(RowError(number, path, str(error)))
            break
    if not when:
        problems.append(RowError(number, "BookgDt", "the entry has no booking or value date"))
    if problems or amount is None or at is None:
        errors.extend(problems)
        return None
    credit = direction == "CRDT"
    details = entry.findall(q("NtryDtls/TxDtls"))
    references: list[str] = []
    texts: list[str] = []
    names: list[str] = []
    party, ultimate = ("Dbtr", "UltmtDbtr") if credit else ("Cdtr", "UltmtCdtr")
    for detail in details:
        for path in ("Refs/EndToEndId", "RmtInf/Strd/CdtrRefInf/Ref"):
            for found in detail.findall(q(path)):
                _add(references, _text(found))
        for found in detail.findall(q("RmtInf/Ustrd")):
            _add(texts, _text(found))
        _add(texts, _text(detail.find(q("AddtlTxInf"))))
        for who in (party, ultimate):
            name = _text(detail.find(q(f"RltdPties/{who}/Pty/Nm"))) or _text(
                detail.find(q(f"RltdPties/{who}/Nm"))
            )
            if name:
                _add(names, name)
                break
    _add(texts, _text(entry.find(q("AddtlNtryInf"))))
    own_id = ""
    candidates = [_text(entry.find(q("AcctSvcrRef"))), _text(entry.find(q("NtryRef")))]
    if len(details) == 1:
        candidates += [
            _text(details[0].find(q("Refs/AcctSvcrRef"))),
            _text(details[0].find(q("Refs/TxId"))),
        ]
    own_id = next((found for found in candidates if found.upper() not in _NOT_IDS), "")
    record = Record(
        side=Side.BANK,
        source=source,
        external_id="",
        kind=Kind.CREDIT if credit else Kind.DEBIT,
        amount_minor=amount if credit else -amount,
        currency=code,
        at=at,
        reference=" ".join(references),
        description=" ".join(texts),
        counterparty=", ".join(names),
    )
    return Draft(number, record, own_id=own_id)


def _add(into: list[str], value: str) -> None:
    if value and value.upper() not in _NOT_IDS and value not in into:
        into.append(value)

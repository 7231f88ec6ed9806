"""Books of known truth for reconciliation: a school's ledger with its gateways' records, their
payouts and the bank's lines, generated from a seed with a known share of every kind of
exception, and beside them what every record's status must be and which links are true.

Three gateways (two in US dollars, one in euros) take card payments priced from a tuition list,
so amounts repeat as they do in a school; each gateway pays out daily what became available two
days before, payouts batch hundreds of charges on large books, and the bank receives them a day
later, booked on its own calendar day. Exceptions are made on purpose: payments the gateway
never took (missing, or expected when recent), charges the ledger does not know (unexpected),
amounts a cent over or under, duplicates on either side, a charge in the wrong currency,
payments captured in parts (one-to-many), gateway records that lost their reference (paired by
unique amount and date, or ambiguous and left alone), partial refunds, payouts that disagree with
their charges, bank lines short of the payout, missing, duplicated, naming two payouts
(many-to-one) or naming none, unexpected bank credits, and payments by bank transfer that went
through no gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl

from app.domain.reconciliation import Kind, MatchRules, Status
from app.services.reconciliation.matching import (
    BANK_SCHEMA,
    DAY,
    GATEWAY_SCHEMA,
    LEDGER_SCHEMA,
    PAYOUT_SCHEMA,
    Books,
)

PRICES = np.array([2_500, 4_000, 5_000, 7_500, 9_900, 12_000, 15_000, 25_000, 32_000, 45_000])
SOURCES = ("connection:1", "connection:2", "connection:3")
CURRENCIES = ("USD", "USD", "EUR")
START = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
RULES = MatchRules(amount_drift_minor=0, date_window_days=3, settlement_days=7)

# The payment cases and their shares among payments when the exception share is 1.
CASES = (
    "missing",
    "cent_over",
    "cent_under",
    "dup_gateway",
    "dup_ledger",
    "currency",
    "split",
    "noref_unique",
    "noref_ambiguous",
)


@dataclass(frozen=True)
class Truth:
    statuses: pl.DataFrame  # id, status
    links: pl.DataFrame  # up, down: every link the engine must make, and no other


@dataclass(frozen=True)
class Dataset:
    books: Books
    truth: Truth
    as_of: int
    rules: MatchRules


class _Ids:
    def __init__(self) -> None:
        self.next = 1

    def take(self, n: int) -> np.ndarray:
        ids = np.arange(self.next, self.next + n, dtype=np.int64)
        self.next += n
        return ids


def generate(rows: int, *, seed: int = 7, exceptions: float = 0.05) -> Dataset:
    """About `rows` ledger records with their counterparts; `exceptions` of the payments are
    made wrong on purpose, spread over every kind."""
    rng = np.random.default_rng(seed)
    ids = _Ids()
    n = max(rows, 200)
    days = max(30, n // 2_000)
    as_of = START + days * DAY + DAY // 2
    settle = RULES.settlement_days * DAY

    # payments
    source = rng.integers(0, len(SOURCES), n)
    amount = rng.choice(PRICES, n).astype(np.int64)
    at = START + rng.integers(0, days * DAY, n)
    share = exceptions / len(CASES)
    case = rng.choice(
        len(CASES) + 1, n, p=[1 - exceptions, *([share] * len(CASES))]
    )  # 0 = as it should be, k = CASES[k-1]

    def cases(name: str) -> np.ndarray:
        chosen: np.ndarray = case == CASES.index(name) + 1
        return chosen

    unique = cases("noref_unique")
    amount[unique] = 900_003 + 10 * np.arange(int(unique.sum()))
    ambiguous = np.flatnonzero(cases("noref_ambiguous"))
    ambiguous = ambiguous[: len(ambiguous) // 2 * 2]
    case[np.flatnonzero(cases("noref_ambiguous"))[len(ambiguous) :]] = 0
    pair_of = ambiguous[0::2], ambiguous[1::2]
    amount[pair_of[0]] = 800_007 + 10 * np.arange(len(pair_of[0]))
    amount[pair_of[1]] = amount[pair_of[0]]
    source[pair_of[1]] = source[pair_of[0]]
    at[pair_of[1]] = at[pair_of[0]] + 600
    pay_id = ids.take(n)
    currency = np.array(CURRENCIES)[source]
    ref = np.char.add("ch_", np.arange(n).astype(str))

    ledger = {
        "id": pay_id,
        "source": np.array(SOURCES)[source],
        "ref": ref,
        "kind": np.full(n, Kind.PAYMENT.value),
        "amount": amount,
        "currency": currency,
        "at": at,
    }
    ledger_status = np.full(n, Status.MATCHED.value, dtype=object)
    recent = at + settle > as_of
    missing = cases("missing")
    ledger_status[missing] = np.where(recent[missing], Status.EXPECTED.value, "missing")
    ledger_status[cases("cent_over")] = Status.AMOUNT_OVER.value
    ledger_status[cases("cent_under")] = Status.AMOUNT_UNDER.value
    ledger_status[cases("currency")] = Status.CURRENCY_MISMATCH.value
    amb = np.zeros(n, dtype=bool)
    amb[ambiguous] = True
    ledger_status[amb] = np.where(recent[amb], Status.EXPECTED.value, Status.MISSING.value)

    # the gateway's records of them: one each, two for duplicates and parts, none if missing
    one = ~missing & ~cases("dup_gateway") & ~cases("split")
    g_parts: list[dict[str, np.ndarray]] = []
    links: list[tuple[np.ndarray, np.ndarray]] = []
    statuses: list[tuple[np.ndarray, np.ndarray]] = [(pay_id, ledger_status)]

    def gateway_rows(
        which: np.ndarray,
        g_amount: np.ndarray,
        g_ref: np.ndarray,
        g_currency: np.ndarray,
        delay: int,
        status: np.ndarray,
        linked: bool,
    ) -> np.ndarray:
        gid = ids.take(len(which))
        g_parts.append(
            {
                "id": gid,
                "source": np.array(SOURCES)[source[which]],
                "ref": g_ref,
                "kind": np.full(len(which), Kind.PAYMENT.value),
                "amount": g_amount,
                "currency": g_currency,
                "at": at[which] + delay,
            }
        )
        statuses.append((gid, status))
        if linked:
            links.append((pay_id[which], gid))
        return gid

    w = np.flatnonzero(one)
    g_amount = amount[w].copy()
    g_amount[cases("cent_over")[w]] += 1
    g_amount[cases("cent_under")[w]] -= 1
    g_currency = currency[w].copy()
    wrong = cases("currency")[w]
    g_currency[wrong] = np.where(g_currency[wrong] == "USD", "EUR", "USD")
    noref = cases("noref_unique")[w] | cases("noref_ambiguous")[w]
    g_ref = np.where(noref, "", ref[w])
    g_status = ledger_status[w].copy()
    g_status[cases("noref_ambiguous")[w]] = Status.UNEXPECTED.value
    gid_one = gateway_rows(w, g_amount, g_ref, g_currency, 30, g_status, False)
    linked = ~cases("noref_ambiguous")[w]
    links.append((pay_id[w][linked], gid_one[linked]))

    w = np.flatnonzero(cases("dup_gateway"))
    matched = np.full(len(w), Status.MATCHED.value, dtype=object)
    gateway_rows(w, amount[w], ref[w], currency[w], 30, matched, True)
    dupes = np.full(len(w), Status.DUPLICATE.value, dtype=object)
    gateway_rows(w, amount[w], ref[w], currency[w], 90, dupes, True)

    w = np.flatnonzero(cases("split"))
    first_part = amount[w] // 3
    matched = np.full(len(w), Status.MATCHED.value, dtype=object)
    gateway_rows(w, first_part, ref[w], currency[w], 30, matched, True)
    rest = amount[w] - first_part
    gateway_rows(w, rest, ref[w], currency[w], 3_600, matched.copy(), True)

    # the ledger's duplicates (recorded twice, taken once)
    w = np.flatnonzero(cases("dup_ledger"))
    dup_id = ids.take(len(w))
    ledger_extra = [
        {
            "id": dup_id,
            "source": ledger["source"][w],
            "ref": ref[w],
            "kind": ledger["kind"][w],
            "amount": amount[w],
            "currency": currency[w],
            "at": at[w] + 120,
        }
    ]
    statuses.append((dup_id, np.full(len(w), Status.DUPLICATE.value, dtype=object)))

    # partial and whole refunds of payments that went through
    normal = np.flatnonzero(case == 0)
    w = normal[rng.random(len(normal)) < 0.04]
    w = w[at[w] + 10 * DAY < as_of - DAY]
    back = np.where(rng.random(len(w)) < 0.5, amount[w] // 2, amount[w])
    when = at[w] + rng.integers(DAY, 10 * DAY, len(w))
    r_ref = np.char.add("re_", np.arange(len(w)).astype(str))
    r_led = ids.take(len(w))
    ledger_extra.append(
        {
            "id": r_led,
            "source": ledger["source"][w],
            "ref": r_ref,
            "kind": np.full(len(w), Kind.REFUND.value),
            "amount": -back,
            "currency": currency[w],
            "at": when,
        }
    )
    statuses.append((r_led, np.full(len(w), Status.MATCHED.value, dtype=object)))
    r_gw = ids.take(len(w))
    g_parts.append(
        {
            "id": r_gw,
            "source": ledger["source"][w],
            "ref": r_ref,
            "kind": np.full(len(w), Kind.REFUND.value),
            "amount": -back,
            "currency": currency[w],
            "at": when + 5,
        }
    )
    statuses.append((r_gw, np.full(len(w), Status.MATCHED.value, dtype=object)))
    links.append((r_led, r_gw))

    # charges the ledger never recorded
    k = max(2, int(n * exceptions / 10))
    u_src = rng.integers(0, len(SOURCES), k)
    u_id = ids.take(k)
    g_parts.append(
        {
            "id": u_id,
            "source": np.array(SOURCES)[u_src],
            "ref": np.char.add("ch_u", np.arange(k).astype(str)),
            "kind": np.full(k, Kind.PAYMENT.value),
            # amounts no open payment has, so that the truth needs no judgement
            "amount": 600_009 + 10 * np.arange(k, dtype=np.int64),
            "currency": np.array(CURRENCIES)[u_src],
            "at": START + rng.integers(0, days * DAY, k),
        }
    )
    statuses.append((u_id, np.full(k, Status.UNEXPECTED.value, dtype=object)))

    # the gateways' monthly fees
    months = np.arange(0, days, 30)
    f_src = np.repeat(np.arange(len(SOURCES)), len(months))
    f_id = ids.take(len(f_src))
    g_parts.append(
        {
            "id": f_id,
            "source": np.array(SOURCES)[f_src],
            "ref": np.char.add("fee_", f_id.astype(str)),
            "kind": np.full(len(f_src), Kind.FEE.value),
            "amount": np.full(len(f_src), -2_000, dtype=np.int64),
            "currency": np.array(CURRENCIES)[f_src],
            "at": START + np.tile(months, len(SOURCES)) * DAY + 3_600,
        }
    )
    fee_ids = f_id

    gateway = pl.DataFrame(
        {key: np.concatenate([part[key] for part in g_parts]) for key in g_parts[0]}
    )
    gateway = _paid_out(gateway, as_of)
    gateway_truth = pl.DataFrame(
        {
            "id": np.concatenate([s[0] for s in statuses]),
            "status": np.concatenate([s[1] for s in statuses]).astype(str),
        }
    )
    fee_status = gateway.filter(pl.col("id").is_in(fee_ids.tolist())).select(
        "id",
        status=pl.when(pl.col("payout") != "")
        .then(pl.lit(Status.MATCHED.value))
        .otherwise(pl.lit(Status.EXPECTED.value)),
    )

    payouts, bank, bank_truth, bank_links = _payouts_and_bank(gateway, rng, ids, as_of)
    direct, direct_bank, direct_truth, direct_links = _direct(rng, ids, n, days, as_of)

    ledger_frame = pl.concat(
        [pl.DataFrame(ledger), *(pl.DataFrame(part) for part in ledger_extra), direct],
        how="vertical_relaxed",
    )
    truth_links = pl.concat(
        [
            pl.DataFrame(
                {
                    "up": np.concatenate([pair[0] for pair in links]),
                    "down": np.concatenate([pair[1] for pair in links]),
                }
            ),
            gateway.filter(pl.col("payout") != "")
            .join(payouts.select(payout="ref", down="id", source="source"), on=["source", "payout"])
            .select(up="id", down="down"),
            bank_links,
            direct_links,
        ]
    )
    books = Books(
        ledger=ledger_frame.cast(LEDGER_SCHEMA).select(list(LEDGER_SCHEMA)),
        gateway=gateway.cast(GATEWAY_SCHEMA).select(list(GATEWAY_SCHEMA)),
        payouts=payouts.cast(PAYOUT_SCHEMA).select(list(PAYOUT_SCHEMA)),
        bank=pl.concat([bank, direct_bank]).cast(BANK_SCHEMA).select(list(BANK_SCHEMA)),
    )
    truth = Truth(
        statuses=pl.concat(
            [
                gateway_truth.filter(~pl.col("id").is_in(fee_ids.tolist())),
                fee_status,
                bank_truth,
                direct_truth,
            ]
        ),
        links=truth_links.cast(pl.Int64),
    )
    return Dataset(books, truth, as_of, RULES)


def _paid_out(gateway: pl.DataFrame, as_of: int) -> pl.DataFrame:
    """Each gateway pays out daily what became available two days before; records in the wrong
    currency for their gateway stay on its balance."""
    home = pl.DataFrame({"source": list(SOURCES), "home": list(CURRENCIES)})
    day = (pl.col("at") - START) // DAY + 2
    return (
        gateway.join(home, on="source")
        .with_columns(
            fee=pl.when(pl.col("kind") == Kind.PAYMENT.value)
            .then(pl.col("amount") * 29 // 1_000 + 30)
            .otherwise(0),
            payout=pl.when((pl.col("currency") == pl.col("home")) & (START + day * DAY <= as_of))
            .then(pl.format("po_{}_{}", pl.col("source").str.slice(11), day))
            .otherwise(pl.lit("")),
        )
        .drop("home")
    )


def _payouts_and_bank(
    gateway: pl.DataFrame, rng: np.random.Generator, ids: _Ids, as_of: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    payouts = (
        gateway.filter(pl.col("payout") != "")
        .group_by("source", "payout")
        .agg(amount=(pl.col("amount") - pl.col("fee")).sum(), currency=pl.col("currency").first())
        .sort("source", "payout")
        .rename({"payout": "ref"})
    )
    p = payouts.height
    day = payouts["ref"].str.split("_").list.get(2).cast(pl.Int64).to_numpy()
    arrival = START + (day + 1) * DAY
    pid = ids.take(p)
    roll = rng.random(p)
    off_batch = roll < 0.005  # the payout disagrees with its charges
    amount = payouts["amount"].to_numpy().copy()
    amount[off_batch] += 50
    payouts = payouts.with_columns(
        id=pl.Series(pid), amount=pl.Series(amount), at=pl.Series(arrival)
    )
    arrived = arrival <= as_of
    no_line = arrived & (roll >= 0.005) & (roll < 0.015)
    short = arrived & (roll >= 0.015) & (roll < 0.02)
    dup = arrived & (roll >= 0.02) & (roll < 0.025)
    unnamed = arrived & (roll >= 0.025) & (roll < 0.125)
    # ... unless another payout or line in its currency has that amount
    amounts = pl.DataFrame({"amount": amount, "currency": payouts["currency"]})
    repeated = amounts.select(pl.len().over("amount", "currency") > 1).to_series().to_numpy()
    unnamed &= ~repeated
    pairs = np.flatnonzero(arrived & (roll >= 0.125) & (roll < 0.13))
    pairs = pairs[pairs + 1 < p]
    pairs = pairs[
        (payouts["source"].to_numpy()[pairs] == payouts["source"].to_numpy()[pairs + 1])
        & arrived[pairs + 1]
        & (roll[pairs + 1] >= 0.13)
    ]
    paired = np.zeros(p, dtype=bool)
    paired[pairs] = paired[pairs + 1] = True
    single = arrived & ~no_line & ~paired
    booked = START + ((arrival - START) // DAY + rng.integers(0, 2, p)) * DAY + DAY // 2
    refs = payouts["ref"].to_numpy()

    b_ids, b_text, b_amount, b_currency, b_at = [], [], [], [], []
    truth_ids, truth_status, link_up, link_down = [], [], [], []
    currency = payouts["currency"].to_numpy()
    w = np.flatnonzero(single)
    line = ids.take(len(w))
    b_ids.append(line)
    b_text.append(
        np.where(unnamed[w], "PAYMENT SERVICES TRANSFER", np.char.add("PAYOUT ", refs[w]))
    )
    b_amount.append(amount[w] - np.where(short[w], 100, 0))
    b_currency.append(currency[w])
    b_at.append(booked[w])
    status = np.where(short[w], Status.AMOUNT_UNDER.value, Status.MATCHED.value)
    truth_ids.append(line)
    truth_status.append(status)
    link_up.append(pid[w])
    link_down.append(line)
    payout_status = np.where(
        off_batch, Status.AMOUNT_OVER.value, np.full(p, Status.MATCHED.value, dtype=object)
    )
    payout_status[w] = np.where(
        off_batch[w],
        Status.AMOUNT_OVER.value,
        np.where(short[w], Status.AMOUNT_UNDER.value, "matched"),
    )
    late = ~arrived | no_line
    payout_status[late & ~off_batch] = np.where(
        arrival[late & ~off_batch] + RULES.date_window_days * DAY > as_of,
        Status.EXPECTED.value,
        Status.MISSING.value,
    )
    # a second line for the same payout
    d = np.flatnonzero(single & dup & ~unnamed)
    extra = ids.take(len(d))
    b_ids.append(extra)
    b_text.append(np.char.add("PAYOUT ", refs[d]))
    b_amount.append(amount[d] - np.where(short[d], 100, 0))
    b_currency.append(currency[d])
    b_at.append(booked[d] + DAY)
    dup_ok = ~short[d]  # a repeat of a short line is not the payout's amount: left unexpected
    truth_ids.append(extra)
    truth_status.append(np.where(dup_ok, Status.DUPLICATE.value, Status.UNEXPECTED.value))
    link_up.append(pid[d][dup_ok])
    link_down.append(extra[dup_ok])
    # one line for two payouts
    both = ids.take(len(pairs))
    b_ids.append(both)
    b_text.append(
        np.char.add(np.char.add("PAYOUTS ", refs[pairs]), np.char.add(" ", refs[pairs + 1]))
    )
    b_amount.append(amount[pairs] + amount[pairs + 1])
    b_currency.append(currency[pairs])
    b_at.append(booked[pairs + 1])
    truth_ids.append(both)
    truth_status.append(np.full(len(pairs), Status.MATCHED.value))
    link_up.extend([pid[pairs], pid[pairs + 1]])
    link_down.extend([both, both])
    for q in (pairs, pairs + 1):
        payout_status[q] = np.where(off_batch[q], Status.AMOUNT_OVER.value, "matched")
    # credits nobody expected
    k = max(2, p // 50)
    odd = ids.take(k)
    b_ids.append(odd)
    b_text.append(np.full(k, "INTEREST"))
    b_amount.append(10**9 + np.arange(k, dtype=np.int64) * 7)
    b_currency.append(np.full(k, "USD"))
    b_at.append(START + rng.integers(0, (as_of - START) // DAY, k) * DAY + DAY // 2)
    truth_ids.append(odd)
    truth_status.append(np.full(k, Status.UNEXPECTED.value))

    bank = pl.DataFrame(
        {
            "id": np.concatenate(b_ids),
            "ref": np.full(sum(len(x) for x in b_ids), ""),
            "text": np.concatenate(b_text),
            "amount": np.concatenate(b_amount).astype(np.int64),
            "currency": np.concatenate(b_currency),
            "at": np.concatenate(b_at).astype(np.int64),
        }
    )
    truth = pl.DataFrame(
        {
            "id": np.concatenate([pid, *truth_ids]),
            "status": np.concatenate([payout_status, *truth_status]).astype(str),
        }
    )
    links = pl.DataFrame({"up": np.concatenate(link_up), "down": np.concatenate(link_down)})
    return payouts, bank, truth, links


def _direct(
    rng: np.random.Generator, ids: _Ids, n: int, days: int, as_of: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Payments by bank transfer: our reference in the bank line, or only a unique amount, or
    not arrived."""
    k = max(20, n // 200)
    lid = ids.take(k)
    at = START + rng.integers(0, days * DAY, k)
    amount = rng.choice(PRICES, k).astype(np.int64)
    roll = rng.random(k)
    unnamed = roll < 0.1
    amount[unnamed] = 700_001 + 10 * np.arange(int(unnamed.sum()))
    absent = (roll >= 0.1) & (roll < 0.15)
    booked = (at // DAY + 1) * DAY + DAY // 2
    arrived = ~absent & (booked <= as_of)
    ref = np.char.add("SB-", lid.astype(str))
    ledger = pl.DataFrame(
        {
            "id": lid,
            "source": np.full(k, ""),
            "ref": ref,
            "kind": np.full(k, Kind.PAYMENT.value),
            "amount": amount,
            "currency": np.full(k, "USD"),
            "at": at,
        }
    )
    w = np.flatnonzero(arrived)
    line = ids.take(len(w))
    bank = pl.DataFrame(
        {
            "id": line,
            "ref": np.where(unnamed[w], "", ref[w]),
            "text": np.where(unnamed[w], "TRANSFER FROM A PARENT", "TUITION"),
            "amount": amount[w],
            "currency": np.full(len(w), "USD"),
            "at": booked[w],
        }
    )
    status = np.where(
        at + RULES.settlement_days * DAY > as_of, Status.EXPECTED.value, Status.MISSING.value
    ).astype(object)
    status[arrived] = Status.MATCHED.value
    truth = pl.DataFrame(
        {
            "id": np.concatenate([lid, line]),
            "status": np.concatenate([status, np.full(len(w), "matched", dtype=object)]).astype(
                str
            ),
        }
    )
    links = pl.DataFrame({"up": lid[w], "down": line})
    return ledger, bank, truth, links

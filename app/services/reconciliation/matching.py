"""The matching engine: our ledger, each gateway's records, its payouts and the bank's lines,
matched three ways in columns (polars), with every record given a status.

The chain is ledger → gateway → payout → bank. Each link is tried in the order a bursar would:

1. **Ledger ↔ gateway by reference** (the gateway's id for the charge or refund, which we
   recorded when we took it). One ledger record and one gateway record: one-to-one. One ledger
   record and several gateway records whose sum agrees: one-to-many (a payment captured in
   parts). Several gateway records each for the whole amount: the first is matched, the others
   are duplicates; several ledger records with one reference: the first counts, the others are
   duplicates. A reference match is decisive whatever the dates; its amounts must agree within
   the allowed drift (else amount over/under) and its currencies exactly.
2. **Ledger ↔ gateway without a reference** (a record whose reference found nothing): same
   gateway, same currency, the exact amount, within the date window, and only when each side
   has exactly one such candidate — an ambiguous pair is left for a person, never guessed.
3. **Gateway → payout**, many-to-one: the records a gateway says it paid out together must add
   up, net of its fees and refunds, to the payout.
4. **Payout → bank**: the payout's id in the bank line's reference or text, else the unique
   exact amount within the date window. A bank line naming several payouts is many-to-one.
5. **Ledger → bank** for records that went to no gateway (a bank transfer, a cheque): our
   reference in the bank line, else the unique exact amount within the window.

What is left: a ledger record is *expected* until its settlement window has passed, then
*missing*; a gateway record or bank line the ledger does not know is *unexpected*; a payout not
in the bank is expected, then missing. Upstream is the side nearer the ledger: "amount over"
means the downstream record is for more.

Decisions people made are inputs: records matched by hand keep their manual match and are left
out of automatic matching, records someone unmatched are held out of it, and exceptions written
off are *resolved* (a record that has since matched by itself is matched).

Every frame is keyed by `id` (int64, unique across the run) and times are epoch seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from app.domain.reconciliation import How, Kind, MatchRules, Side, Status, Strategy

DAY = 86_400
# An amount shared by more than this many pairs (both sides multiplied) in one gateway and
# currency is too ambiguous to pair by amount and date; it waits for a reference or a person.
AMBIGUOUS_PAIRS = 4_096

LEDGER_SCHEMA = pl.Schema(
    {
        "id": pl.Int64(),
        "source": pl.String(),  # the gateway it went through ("" for none)
        "ref": pl.String(),
        "kind": pl.String(),
        "amount": pl.Int64(),
        "currency": pl.String(),
        "at": pl.Int64(),
    }
)
GATEWAY_SCHEMA = pl.Schema(
    {
        "id": pl.Int64(),
        "source": pl.String(),
        "ref": pl.String(),
        "kind": pl.String(),
        "amount": pl.Int64(),  # gross
        "fee": pl.Int64(),
        "currency": pl.String(),
        "at": pl.Int64(),
        "payout": pl.String(),
    }
)
PAYOUT_SCHEMA = pl.Schema(
    {
        "id": pl.Int64(),
        "source": pl.String(),
        "ref": pl.String(),
        "amount": pl.Int64(),  # positive: sent to the bank
        "currency": pl.String(),
        "at": pl.Int64(),  # when it should arrive
    }
)
BANK_SCHEMA = pl.Schema(
    {
        "id": pl.Int64(),
        "ref": pl.String(),
        "text": pl.String(),
        "amount": pl.Int64(),
        "currency": pl.String(),
        "at": pl.Int64(),
    }
)
RESULT_SCHEMA = pl.Schema(
    {
        "id": pl.Int64(),
        "side": pl.String(),
        "status": pl.String(),
        "how": pl.String(),
        "strategy": pl.String(),
        "diff": pl.Int64(),  # downstream minus upstream, for amount over/under
        "fee": pl.Int64(),  # what the gateway kept, on ledger and gateway records
        "stage": pl.Int8(),  # ledger: 0 none, 1 gateway agrees, 2 paid out, 3 in the bank
    }
)
LINK_SCHEMA = pl.Schema(
    {
        "up": pl.Int64(),
        "down": pl.Int64(),
        "strategy": pl.String(),
        "how": pl.String(),
    }
)
SETTLING = (Kind.PAYMENT.value, Kind.REFUND.value, Kind.ADJUSTMENT.value)


def frame(rows: Iterable[dict[str, object]] | None, schema: pl.Schema) -> pl.DataFrame:
    return pl.DataFrame(list(rows or []), schema=schema, orient="row")


@dataclass(frozen=True)
class Books:
    """The records of one run, one frame per kind of record."""

    ledger: pl.DataFrame
    gateway: pl.DataFrame
    payouts: pl.DataFrame
    bank: pl.DataFrame

    @classmethod
    def empty(cls) -> Books:
        return cls(
            frame(None, LEDGER_SCHEMA),
            frame(None, GATEWAY_SCHEMA),
            frame(None, PAYOUT_SCHEMA),
            frame(None, BANK_SCHEMA),
        )

    def size(self) -> int:
        return self.ledger.height + self.gateway.height + self.payouts.height + self.bank.height


@dataclass(frozen=True)
class Decisions:
    """What people decided: groups matched by hand (each a tuple of record ids), records held
    out of automatic matching, and exceptions written off."""

    manual: tuple[tuple[int, ...], ...] = ()
    held: frozenset[int] = frozenset()
    resolved: frozenset[int] = frozenset()


@dataclass
class Outcome:
    """Every record's status, and the links between records (upstream → downstream)."""

    records: pl.DataFrame
    links: pl.DataFrame

    def status_of(self, record_id: int) -> str:
        found = self.records.filter(pl.col("id") == record_id)["status"]
        return str(found[0]) if found.len() else ""


def reconcile(
    books: Books,
    rules: MatchRules | None = None,
    decisions: Decisions | None = None,
    *,
    as_of: int,
) -> Outcome:
    """Match the books and give every record its status as of `as_of` (epoch seconds)."""
    rules = rules or MatchRules()
    decisions = decisions or Decisions()
    kept_out = set(decisions.held)
    for group in decisions.manual:
        kept_out.update(group)
    out = pl.Series("id", sorted(kept_out), dtype=pl.Int64)

    def auto(df: pl.DataFrame) -> pl.DataFrame:
        return df.filter(~pl.col("id").is_in(out.implode())) if out.len() else df

    ledger, gateway = auto(books.ledger), auto(books.gateway)
    payouts, bank = auto(books.payouts), auto(books.bank)
    drift, window = rules.amount_drift_minor, rules.date_window_days * DAY
    settling = gateway.filter(pl.col("kind").is_in(SETTLING))

    # 1. ledger ↔ gateway by reference
    joined = _join_by_reference(ledger, settling)
    by_ref = _by_reference(joined, ledger, settling, drift)
    # 2. ... and without one, for what the reference did not settle
    l_open = joined.filter(pl.col("gid").is_null()).select(
        "id", "source", "ref", "amount", "currency", "at"
    )
    g_open = pl.concat(
        [
            joined.filter(pl.col("id").is_null()).select(
                id="gid", source="g_source", amount="g_amount", currency="g_currency", at="g_at"
            ),
            settling.filter(pl.col("ref") == "").select("id", "source", "amount", "currency", "at"),
        ]
    )
    loose = _unique_pairs(
        l_open.filter(pl.col("source") != "").select("id", "source", "currency", "amount", "at"),
        g_open,
        ["source", "currency"],
        window,
    )
    # 3. gateway → payout: what a gateway paid out together is a fact, whatever people decided
    paid_out = _payouts(books.gateway, books.payouts, drift)
    # 4. payout → bank, and 5. ledger → bank for what went through no gateway
    upstream = pl.concat(
        [
            payouts.select("id", "ref", "amount", "currency", "at"),
            l_open.filter(pl.col("source") == "").select("id", "ref", "amount", "currency", "at"),
        ]
    )
    banked = _to_bank(upstream, bank, drift, window)

    found = _Found(by_ref, loose, paid_out, banked)
    records = _statuses(books, out, l_open, g_open, gateway, found, rules, as_of)
    links = pl.concat(
        [by_ref.links, _loose_links(loose), paid_out.links, banked.links],
        how="vertical",
    )
    records, links = _offsetting(records, links, gateway)
    records, links = _apply_decisions(records, links, books, decisions)
    return Outcome(
        records.select(pl.col(name).cast(kind) for name, kind in RESULT_SCHEMA.items()),
        links.select(pl.col(name).cast(kind) for name, kind in LINK_SCHEMA.items()),
    )


# --- 1. by reference ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settled:
    """Statuses found for some records on each side, and the links made."""

    ledger: pl.DataFrame  # id, status, strategy, diff, fee
    gateway: pl.DataFrame  # id, status, strategy, diff, fee
    links: pl.DataFrame


def _join_by_reference(ledger: pl.DataFrame, gateway: pl.DataFrame) -> pl.DataFrame:
    """Every ledger record beside the gateway records of its reference: a full join, so the
    records on either side that found none are there too (with the other side's columns null)."""
    return ledger.select("id", "source", "ref", "amount", "currency", "at").join(
        gateway.filter(pl.col("ref") != "").select(
            "source",
            "ref",
            gid="id",
            g_source="source",
            g_amount="amount",
            g_fee="fee",
            g_currency="currency",
            g_at="at",
            g_payout="payout",
        ),
        on=["source", "ref"],
        how="full",
        coalesce=False,
    )


def _by_reference(
    joined: pl.DataFrame, ledger: pl.DataFrame, gateway: pl.DataFrame, drift: int
) -> _Settled:
    """Most references join one record to one record; those are settled in one pass over the
    join, and the few that tie several records together by the rules for them."""
    pairs = joined.filter(pl.col("id").is_not_null() & pl.col("gid").is_not_null())
    alone = (pl.len().over("id") == 1) & (pl.len().over("gid") == 1)
    pairs = pairs.with_columns(alone=alone)
    simple = pairs.filter("alone")
    tangled = pairs.filter(~pl.col("alone"))
    wrong_currency = pl.col("g_currency") != pl.col("currency")
    simple = simple.select(
        "id",
        "gid",
        "g_source",
        "g_payout",
        status=pl.when(wrong_currency)
        .then(pl.lit(Status.CURRENCY_MISMATCH.value))
        .otherwise(_amount_status(pl.col("amount"), pl.col("g_amount"), drift)),
        strategy=pl.lit(Strategy.ONE_TO_ONE.value),
        diff=pl.when(wrong_currency | ((pl.col("g_amount") - pl.col("amount")).abs() <= drift))
        .then(pl.lit(0, pl.Int64))
        .otherwise(pl.col("g_amount") - pl.col("amount")),
        fee="g_fee",
    )
    if tangled.is_empty():
        rest = _Settled(*(pl.DataFrame(schema=s) for s in (_SETTLED, _SETTLED, LINK_SCHEMA)))
    else:
        rest = _tangled(
            ledger.join(tangled.select("id"), on="id", how="semi"),
            gateway.join(tangled.select(id="gid"), on="id", how="semi"),
            drift,
        )
    return _Settled(
        pl.concat(
            [
                simple.select("id", "status", "strategy", "diff", "fee", "g_source", "g_payout"),
                rest.ledger,
            ],
            how="diagonal_relaxed",
        ),
        pl.concat([simple.select(pl.col("gid").alias("id"), *_SETTLED_COLUMNS), rest.gateway]),
        pl.concat(
            [
                simple.select(up="id", down="gid", strategy="strategy", how=pl.lit(How.AUTO.value)),
                rest.links,
            ]
        ),
    )


_SETTLED = pl.Schema(
    {
        "id": pl.Int64(),
        "status": pl.String(),
        "strategy": pl.String(),
        "diff": pl.Int64(),
        "fee": pl.Int64(),
    }
)
_SETTLED_COLUMNS = ("status", "strategy", "diff", "fee")


def _tangled(ledger: pl.DataFrame, gateway: pl.DataFrame, drift: int) -> _Settled:
    """References shared by several records: a payment captured in parts, a charge the gateway
    recorded twice, a payment the ledger recorded twice."""
    keys = ["source", "ref"]
    led = (
        ledger.filter(pl.col("ref") != "")
        .sort("at", "id")
        .with_columns(rank=pl.int_range(pl.len()).over(keys))
    )
    gw = gateway.filter(pl.col("ref") != "").sort("at", "id")
    totals = gw.group_by(keys).agg(
        n=pl.len(),
        total=pl.col("amount").sum(),
        low=pl.col("amount").min(),
        high=pl.col("amount").max(),
        currencies=pl.col("currency").n_unique(),
        g_currency=pl.col("currency").first(),
        g_fee=pl.col("fee").sum(),
    )
    first = led.filter(pl.col("rank") == 0).drop("rank")
    pairs = first.join(totals, on=keys, how="inner")
    whole = (pl.col("total") - pl.col("amount")).abs() <= drift
    each = (pl.col("n") > 1) & ((pl.col("high") - pl.col("low")) == 0)
    each &= (pl.col("low") - pl.col("amount")).abs() <= drift
    wrong_currency = (pl.col("currencies") > 1) | (pl.col("g_currency") != pl.col("currency"))
    pairs = pairs.with_columns(
        status=pl.when(wrong_currency)
        .then(pl.lit(Status.CURRENCY_MISMATCH.value))
        .when(whole | each)
        .then(pl.lit(Status.MATCHED.value))
        .when(pl.col("total") > pl.col("amount"))
        .then(pl.lit(Status.AMOUNT_OVER.value))
        .otherwise(pl.lit(Status.AMOUNT_UNDER.value)),
        strategy=pl.when((pl.col("n") > 1) & ~(each & ~whole))
        .then(pl.lit(Strategy.ONE_TO_MANY.value))
        .otherwise(pl.lit(Strategy.ONE_TO_ONE.value)),
        dupes=each & ~whole & ~wrong_currency,
        diff=pl.when(wrong_currency | whole | each)
        .then(pl.lit(0, pl.Int64))
        .otherwise(pl.col("total") - pl.col("amount")),
        fee=pl.when(each & ~whole).then(pl.col("g_fee") // pl.col("n")).otherwise("g_fee"),
    )
    ledger_side = pl.concat(
        [
            pairs.select("id", "status", "strategy", "diff", "fee"),
            led.filter(pl.col("rank") > 0)
            .join(totals.select(keys), on=keys, how="semi")
            .select(
                "id",
                status=pl.lit(Status.DUPLICATE.value),
                strategy=pl.lit(Strategy.ONE_TO_ONE.value),
                diff=pl.lit(0, pl.Int64),
                fee=pl.lit(0, pl.Int64),
            ),
        ]
    )
    matched_g = gw.join(
        pairs.select(
            *keys,
            lid="id",
            k_status="status",
            strategy="strategy",
            dupes="dupes",
            k_diff="diff",
        ),
        on=keys,
        how="inner",
    ).with_columns(rank=pl.int_range(pl.len()).over(keys))
    duplicate = pl.col("dupes") & (pl.col("rank") > 0)
    gateway_side = matched_g.select(
        "id",
        status=pl.when(duplicate).then(pl.lit(Status.DUPLICATE.value)).otherwise("k_status"),
        strategy="strategy",
        diff=pl.when(duplicate).then(pl.lit(0, pl.Int64)).otherwise("k_diff"),
        fee="fee",
    )
    links = matched_g.select(
        up="lid",
        down="id",
        strategy="strategy",
        how=pl.lit(How.AUTO.value),
    )
    return _Settled(ledger_side, gateway_side, links)


# --- 2. without a reference -----------------------------------------------------------------


def _unique_pairs(
    up: pl.DataFrame, down: pl.DataFrame, keys: list[str], window: int
) -> pl.DataFrame:
    """Pairs (up, down) that agree on `keys` and the exact amount, at most `window` seconds
    apart, where neither record has any other such candidate."""
    on = [*keys, "amount"]
    counts = (
        up.group_by(on)
        .len("n_up")
        .join(down.group_by(on).len("n_down"), on=on, how="inner")
        .filter(pl.col("n_up") * pl.col("n_down") <= AMBIGUOUS_PAIRS)
        .select(on)
    )
    if counts.is_empty():
        return pl.DataFrame(schema={"up": pl.Int64(), "down": pl.Int64()})
    pairs = (
        up.join(counts, on=on, how="semi")
        .select(*on, up="id", up_at="at")
        .join(down.join(counts, on=on, how="semi").select(*on, down="id", down_at="at"), on=on)
        .filter((pl.col("up_at") - pl.col("down_at")).abs() <= window)
    )
    return pairs.filter((pl.len().over("up") == 1) & (pl.len().over("down") == 1)).select(
        "up", "down"
    )


def _loose_links(loose: pl.DataFrame) -> pl.DataFrame:
    return loose.select(
        "up",
        "down",
        strategy=pl.lit(Strategy.ONE_TO_ONE.value),
        how=pl.lit(How.AUTO.value),
    )


# --- 3. gateway → payout --------------------------------------------------------------------


@dataclass(frozen=True)
class _Batched:
    """What was found for upstream and downstream records of a many-to-one link."""

    up: pl.DataFrame  # id, status, diff (upstream records that were considered)
    down: pl.DataFrame  # id, status, diff, strategy
    links: pl.DataFrame


def _payouts(gateway: pl.DataFrame, payouts: pl.DataFrame, drift: int) -> _Batched:
    members = (
        gateway.filter(pl.col("payout") != "")
        .select("id", "source", "payout", net=pl.col("amount") - pl.col("fee"))
        .join(payouts.select("source", payout="ref", pid="id"), on=["source", "payout"])
    )
    sums = members.group_by("pid").agg(net=pl.col("net").sum(), n=pl.len())
    checked = payouts.join(sums, left_on="id", right_on="pid", how="inner").select(
        "id",
        status=_amount_status(pl.col("net"), pl.col("amount"), drift),
        diff=pl.col("amount") - pl.col("net"),
        strategy=pl.lit(Strategy.MANY_TO_ONE.value),
    )
    links = members.select(
        up="id", down="pid", strategy=pl.lit(Strategy.MANY_TO_ONE.value), how=pl.lit("auto")
    )
    return _Batched(members.select("id", pid="pid"), checked, links)


def _amount_status(up: pl.Expr, down: pl.Expr, drift: int) -> pl.Expr:
    return (
        pl.when((down - up).abs() <= drift)
        .then(pl.lit(Status.MATCHED.value))
        .when(down > up)
        .then(pl.lit(Status.AMOUNT_OVER.value))
        .otherwise(pl.lit(Status.AMOUNT_UNDER.value))
    )


# --- 4 and 5. → bank ------------------------------------------------------------------------

WORD = r"[\w.\-]{4,}"


def _to_bank(up: pl.DataFrame, bank: pl.DataFrame, drift: int, window: int) -> _Batched:
    """Payouts and direct ledger records against bank lines: by reference (the upstream's
    reference among the words of the bank line), then by unique exact amount and date."""
    # Banks write references as they please, upper case most often: words match in any case.
    refs = up.filter(pl.col("ref").str.len_chars() >= 4).select(
        tok=pl.col("ref").str.to_lowercase(), up="id"
    )
    words = (
        bank.select(
            "id",
            "at",
            tok=pl.concat_str([pl.col("ref"), pl.col("text")], separator=" ")
            .str.to_lowercase()
            .str.extract_all(WORD),
        )
        .explode("tok")
        .join(refs, on="tok", how="inner")
        .unique(["id", "up"])
        .sort("at", "id")
    )
    # An upstream record named by several bank lines belongs to the first; a later line for the
    # same amount is a duplicate, any other is left to the steps below.
    named = words.with_columns(rank=pl.int_range(pl.len()).over("up")).join(
        up.select(up="id", up_amount="amount", up_currency="currency"), on="up"
    )
    first = named.filter(pl.col("rank") == 0)
    sums = first.group_by("id").agg(
        total=pl.col("up_amount").sum(),
        n=pl.len(),
        currencies=pl.col("up_currency").n_unique(),
        up_currency=pl.col("up_currency").first(),
    )
    lines = bank.join(sums, on="id", how="inner")
    wrong_currency = (pl.col("currencies") > 1) | (pl.col("up_currency") != pl.col("currency"))
    by_ref = lines.select(
        "id",
        status=pl.when(wrong_currency)
        .then(pl.lit(Status.CURRENCY_MISMATCH.value))
        .otherwise(_amount_status(pl.col("total"), pl.col("amount"), drift)),
        diff=pl.when(wrong_currency)
        .then(pl.lit(0, pl.Int64))
        .otherwise(pl.col("amount") - pl.col("total")),
        strategy=pl.when(pl.col("n") > 1)
        .then(pl.lit(Strategy.MANY_TO_ONE.value))
        .otherwise(pl.lit(Strategy.ONE_TO_ONE.value)),
    )
    bank_amounts = bank.select(id="id", b_amount="amount")
    dupes = (
        named.filter(pl.col("rank") > 0)
        .join(bank_amounts, on="id")
        .filter(pl.col("b_amount") == pl.col("up_amount"))
        .join(by_ref.select("id"), on="id", how="anti")
        .unique("id")
    )
    up_status = first.join(by_ref.select("id", "status", "diff"), on="id").select(
        id="up", status="status", diff="diff"
    )
    loose = _unique_pairs(
        up.join(first.select(id="up"), on="id", how="anti").select(
            "id", "currency", "amount", "at"
        ),
        bank.join(by_ref.select("id"), on="id", how="anti")
        .join(dupes.select("id"), on="id", how="anti")
        .select("id", "currency", "amount", "at"),
        ["currency"],
        window,
    )
    matched = pl.lit(Status.MATCHED.value)
    zero = pl.lit(0, pl.Int64)
    one = pl.lit(Strategy.ONE_TO_ONE.value)
    down = pl.concat(
        [
            by_ref,
            dupes.select("id", status=pl.lit(Status.DUPLICATE.value), diff=zero, strategy=one),
            loose.select(id="down", status=matched, diff=zero, strategy=one),
        ]
    )
    up_all = pl.concat([up_status, loose.select(id="up", status=matched, diff=zero)])
    links = pl.concat(
        [
            first.select(up="up", down="id"),
            dupes.select(up="up", down="id"),
            loose.select("up", "down"),
        ]
    ).join(down.select(down="id", strategy="strategy"), on="down", how="left")
    return _Batched(up_all, down, links.with_columns(how=pl.lit(How.AUTO.value)))


# --- statuses -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    by_ref: _Settled
    loose: pl.DataFrame  # up, down
    paid_out: _Batched
    banked: _Batched


def _statuses(
    books: Books,
    out: pl.Series,
    l_open: pl.DataFrame,
    g_open: pl.DataFrame,
    gateway: pl.DataFrame,
    found: _Found,
    rules: MatchRules,
    as_of: int,
) -> pl.DataFrame:
    """Every record's status: what the steps found, else what its age and kind make it. The
    steps' findings are disjoint (each step took only what the ones before left), so the parts
    are put side by side rather than joined to the books, and the plan is collected once so
    that its branches run in parallel."""
    by_ref, loose, paid_out, banked = found.by_ref, found.loose, found.paid_out, found.banked
    matched, zero = pl.lit(Status.MATCHED.value), pl.lit(0, pl.Int64)
    one, no_stage = pl.lit(Strategy.ONE_TO_ONE.value), pl.lit(0, pl.Int8)
    kept_out = pl.col("id").is_in(out.implode())
    due = rules.settlement_days * DAY

    # How far a payout has taken its records: 2 paid out, 3 in the bank.
    reach = (
        books.payouts.lazy()
        .select("id", g_source="source", g_payout="ref")
        .join(
            banked.up.lazy().filter(pl.col("status") == Status.MATCHED.value).select("id"),
            on="id",
            how="left",
            coalesce=False,
        )
        .select(
            "g_source",
            "g_payout",
            reach=pl.when(pl.col("id_right").is_not_null()).then(3).otherwise(2).cast(pl.Int8),
        )
    )
    paths = books.gateway.lazy().select(down="id", g_source="source", g_payout="payout")
    fees = books.gateway.lazy().select(down="id", fee="fee")

    # ledger: the one-to-one pairs, the rest of the reference matches, pairs without a
    # reference, records that went straight to the bank, and what is left by its age
    simple = (
        by_ref.ledger.lazy()
        .filter(pl.col("g_source").is_not_null())
        .join(reach, on=["g_source", "g_payout"], how="left")
        .select(
            "id",
            "status",
            "strategy",
            "diff",
            "fee",
            stage=pl.when(pl.col("status") == Status.MATCHED.value)
            .then(pl.col("reach").fill_null(1))
            .otherwise(no_stage),
        )
    )
    tangled = by_ref.ledger.lazy().filter(pl.col("g_source").is_null())
    travelled = (
        pl.concat(
            [
                by_ref.links.lazy().join(tangled.select(up="id"), on="up", how="semi"),
                loose.lazy().select("up", "down"),
            ],
            how="diagonal_relaxed",
        )
        .join(paths, on="down", how="left")
        .join(reach, on=["g_source", "g_payout"], how="left")
        .group_by("up")
        .agg(travelled=pl.col("reach").fill_null(1).min())
        .rename({"up": "id"})
    )
    others = (
        pl.concat(
            [
                tangled.select("id", "status", "strategy", "diff", "fee"),
                loose.lazy()
                .join(fees, on="down", how="left")
                .select(id="up", status=matched, strategy=one, diff=zero, fee="fee"),
            ]
        )
        .join(travelled, on="id", how="left")
        .with_columns(
            stage=pl.when(pl.col("status") == Status.MATCHED.value)
            .then(pl.col("travelled").fill_null(1))
            .otherwise(no_stage)
        )
        .drop("travelled")
    )
    direct = (
        banked.up.lazy()
        .join(l_open.lazy().select("id"), on="id", how="semi")
        .select(
            "id",
            "status",
            strategy=one,
            diff="diff",
            fee=zero,
            stage=pl.when(pl.col("status") == Status.MATCHED.value)
            .then(pl.lit(3, pl.Int8))
            .otherwise(no_stage),
        )
    )
    by_age = pl.when(pl.col("at") + due > as_of).then(pl.lit(Status.EXPECTED.value))
    left = pl.concat(
        [
            l_open.lazy()
            .select("id", "at")
            .join(loose.lazy().select(id="up"), on="id", how="anti")
            .join(direct.select("id"), on="id", how="anti"),
            books.ledger.lazy().filter(kept_out).select("id", "at"),
        ]
    ).select(
        "id",
        status=by_age.otherwise(pl.lit(Status.MISSING.value)),
        strategy=pl.lit(None, pl.String),
        diff=zero,
        fee=pl.lit(None, pl.Int64),
        stage=no_stage,
    )
    ledger_rows = pl.concat([simple, others, direct, left], how="diagonal_relaxed").with_columns(
        side=pl.lit(Side.LEDGER.value)
    )

    # gateway: the reference matches, pairs without a reference, what the ledger does not
    # have, and fees and the like, settled when paid out
    not_settling = gateway.lazy().filter(~pl.col("kind").is_in(SETTLING))
    unsettled = pl.concat(
        [
            g_open.lazy().select("id").join(loose.lazy().select(id="down"), on="id", how="anti"),
            not_settling.select("id"),
            books.gateway.lazy().filter(kept_out).select("id"),
        ]
    )
    rest = (
        books.gateway.lazy()
        .join(unsettled, on="id", how="semi")
        .join(
            reach.rename({"g_source": "source", "g_payout": "payout"}),
            on=["source", "payout"],
            how="left",
        )
        .select(
            "id",
            status=pl.when(~pl.col("kind").is_in(SETTLING) & pl.col("reach").is_not_null())
            .then(matched)
            .when(pl.col("kind").is_in(SETTLING))
            .then(pl.lit(Status.UNEXPECTED.value))
            .otherwise(pl.lit(Status.EXPECTED.value)),
            strategy=pl.lit(None, pl.String),
            diff=zero,
            fee="fee",
        )
    )
    gateway_rows = pl.concat(
        [
            by_ref.gateway.lazy(),
            loose.lazy()
            .join(fees, on="down", how="left")
            .select(id="down", status=matched, strategy=one, diff=zero, fee="fee"),
            rest,
        ],
        how="diagonal_relaxed",
    ).with_columns(side=pl.lit(Side.GATEWAY.value), stage=no_stage)

    batch = paid_out.down.lazy().rename(
        {"status": "b_status", "diff": "b_diff", "strategy": "b_how"}
    )
    off_batch = pl.col("b_status").is_not_null() & (pl.col("b_status") != Status.MATCHED.value)
    payout_rows = (
        books.payouts.lazy()
        .select("id", "at")
        .join(batch, on="id", how="left")
        .join(banked.up.lazy(), on="id", how="left")
        .select(
            "id",
            side=pl.lit(Side.GATEWAY.value),
            status=pl.when(off_batch)
            .then("b_status")
            .when(pl.col("status").is_not_null())
            .then("status")
            .when(pl.col("at") + rules.date_window_days * DAY > as_of)
            .then(pl.lit(Status.EXPECTED.value))
            .otherwise(pl.lit(Status.MISSING.value)),
            strategy=pl.coalesce("b_how", one),
            diff=pl.when(off_batch).then("b_diff").otherwise("diff"),
            fee=zero,
            stage=no_stage,
        )
    )
    bank_rows = (
        books.bank.lazy()
        .select("id")
        .join(banked.down.lazy(), on="id", how="left")
        .select(
            "id",
            side=pl.lit(Side.BANK.value),
            status=pl.coalesce("status", pl.lit(Status.UNEXPECTED.value)),
            strategy="strategy",
            diff="diff",
            fee=zero,
            stage=no_stage,
        )
    )
    return (
        pl.concat([ledger_rows, gateway_rows, payout_rows, bank_rows], how="diagonal_relaxed")
        .with_columns(how=pl.lit(How.AUTO.value), diff=pl.col("diff").fill_null(0))
        .collect()
    )


def _offsetting(
    records: pl.DataFrame, links: pl.DataFrame, gateway: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A gateway's adjustments that cancel out (a hold and its release, a chargeback and its
    reversal: the same reference, the same currency, nothing left over) are matched with each
    other, the first with the rest; the ledger never had them and needs nothing."""
    adjustments = gateway.filter(
        (pl.col("kind") == Kind.ADJUSTMENT.value) & (pl.col("ref") != "")
    ).join(
        records.filter(pl.col("status") == Status.UNEXPECTED.value).select("id"),
        on="id",
        how="semi",
    )
    if adjustments.is_empty():
        return records, links
    groups = (
        adjustments.sort("at", "id")
        .group_by("source", "ref", "currency", maintain_order=True)
        .agg(pl.col("id"), total=pl.col("amount").sum(), n=pl.len())
        .filter((pl.col("n") >= 2) & (pl.col("total") == 0))
        .select(first=pl.col("id").list.first(), id=pl.col("id"))
        .explode("id")
    )
    if groups.is_empty():
        return records, links
    records = records.join(groups.select("id", offset=pl.lit(True)), on="id", how="left").select(
        pl.exclude("offset", "status", "strategy"),
        status=pl.when(pl.col("offset")).then(pl.lit(Status.MATCHED.value)).otherwise("status"),
        strategy=pl.when(pl.col("offset"))
        .then(pl.lit(Strategy.ONE_TO_ONE.value))
        .otherwise("strategy"),
    )
    offsets = groups.filter(pl.col("first") != pl.col("id")).select(
        up="first", down="id", strategy=pl.lit(Strategy.ONE_TO_ONE.value), how=pl.lit("auto")
    )
    return records, pl.concat([links, offsets], how="diagonal_relaxed")


def _apply_decisions(
    records: pl.DataFrame, links: pl.DataFrame, books: Books, decisions: Decisions
) -> tuple[pl.DataFrame, pl.DataFrame]:
    if decisions.manual:
        members = pl.DataFrame(
            [(group[0], member) for group in decisions.manual for member in group],
            schema={"group": pl.Int64(), "id": pl.Int64()},
            orient="row",
        )
        manual = members.select(
            "id",
            m_status=pl.lit(Status.MATCHED.value),
            m_strategy=pl.when(pl.len().over("group") > 2)
            .then(pl.lit(Strategy.MANY_TO_ONE.value))
            .otherwise(pl.lit(Strategy.ONE_TO_ONE.value)),
        )
        records = (
            records.join(manual, on="id", how="left")
            .with_columns(
                status=pl.coalesce("m_status", "status"),
                strategy=pl.coalesce("m_strategy", "strategy"),
                how=pl.when(pl.col("m_status").is_not_null())
                .then(pl.lit(How.MANUAL.value))
                .otherwise("how"),
                diff=pl.when(pl.col("m_status").is_not_null()).then(0).otherwise("diff"),
            )
            .drop("m_status", "m_strategy")
        )
        links = pl.concat(
            [
                links,
                members.filter(pl.col("group") != pl.col("id")).select(
                    up="group",
                    down="id",
                    strategy=pl.lit(Strategy.ONE_TO_ONE.value),
                    how=pl.lit(How.MANUAL.value),
                ),
            ]
        )
    if decisions.resolved:
        written_off = pl.col("id").is_in(
            pl.Series(sorted(decisions.resolved), dtype=pl.Int64).implode()
        )
        exception = ~pl.col("status").is_in(
            [Status.MATCHED.value, Status.EXPECTED.value, Status.RESOLVED.value]
        )
        records = records.with_columns(
            status=pl.when(written_off & exception)
            .then(pl.lit(Status.RESOLVED.value))
            .otherwise("status"),
            how=pl.when(written_off & exception).then(pl.lit(How.MANUAL.value)).otherwise("how"),
        )
    return records, links

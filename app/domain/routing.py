"""Which gateway should take this payment: the administrator's rules first, then the gateway
most likely to succeed at the lowest cost, learned from how each one has done lately.

For one payment the router:

1. keeps the gateways that can take it (method, currency, payer's country) and, where a rule
   matches (by currency, method, country, amount band), only those the rule allows, in its
   order of preference;
2. eliminates gateways that are down (their circuit breaker open, or health down), that failed
   technically several times in the last minutes, or that answer slower than the latency
   threshold, unless that would leave none;
3. scores the rest by expected value: the chance of success, learned per (gateway, method,
   currency) over a sliding window of recent attempts, times what the school keeps
   (amount − fee). A gateway with little history starts from a neutral estimate, and a small
   share of payments goes to a gateway other than the best, so a gateway that recovered is
   noticed;
4. explains the decision in a sentence ("chose B: 97.1 % over the last 200, fee 2.1 %;
   A eliminated: 5 timeouts in 2 min"), which is stored with the attempt.

Everything here is pure and synchronous; the time is given by the caller. A decision costs a few
microseconds per gateway: the window's counts are kept as attempts are recorded.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from app.domain.money import Money
from app.domain.payments import FeeSchedule

WINDOW = 200  # attempts per (gateway, method, currency) the success rate is learned over
EXPLORATION = 0.03  # share of payments sent to another gateway than the best, to keep learning
TECHNICAL_LIMIT = 3  # technical failures within TECHNICAL_SECONDS that eliminate a gateway
TECHNICAL_SECONDS = 120.0
PRIOR_SUCCESSES = 9.0  # a gateway without history is believed to succeed 90 % of the time,
PRIOR_ATTEMPTS = 10.0  # with the weight of ten attempts
LATENCY_THRESHOLD_MS = 8000.0
LATENCY_SECONDS = 600.0  # answer times are judged over the last ten minutes
MAX_AGE_SECONDS = 6 * 3600.0  # outcomes older than this say little about a gateway today


@dataclass(frozen=True)
class Gateway:
    """A gateway as the router sees it."""

    key: str  # a stable name: the connection's id or name
    name: str
    fees: FeeSchedule
    methods: frozenset[str] = frozenset()  # empty: any
    currencies: frozenset[str] = frozenset()
    countries: frozenset[str] = frozenset()  # payers' countries it takes; empty: any
    priority: int = 0  # the administrator's static order, lowest first

    def takes(self, payment: PaymentAsk) -> bool:
        return (
            (not self.methods or payment.method in self.methods)
            and (not self.currencies or payment.amount.currency in self.currencies)
            and (not self.countries or payment.country in self.countries)
        )


@dataclass(frozen=True)
class Rule:
    """An administrator's rule: payments matching every condition given may go only to
    `gateways`, tried in that order of preference when scores are close."""

    gateways: tuple[str, ...]
    currency: str = ""
    method: str = ""
    country: str = ""
    min_minor: int | None = None
    max_minor: int | None = None

    def matches(self, payment: PaymentAsk) -> bool:
        minor = payment.amount.minor
        return (
            self.currency in ("", payment.amount.currency)
            and self.method in ("", payment.method)
            and self.country in ("", payment.country)
            and (self.min_minor is None or minor >= self.min_minor)
            and (self.max_minor is None or minor <= self.max_minor)
        )


@dataclass(frozen=True)
class PaymentAsk:
    amount: Money
    method: str
    country: str = ""  # the payer's (card issuer's) country
    home_country: str = ""  # the school's: a payer from elsewhere costs a cross-border fee

    @property
    def cross_border(self) -> bool:
        return bool(self.country and self.home_country and self.country != self.home_country)


@dataclass(frozen=True)
class Score:
    key: str
    success_rate: float  # the estimate: the window's rate, pulled towards 90 % while it is short
    observed_rate: float  # the window's own rate (0 without history)
    attempts: int  # in the window
    fee: Money
    expected_minor: float  # success_rate × (amount − fee)
    fee_percent: float  # the fee as a share of the amount


@dataclass(frozen=True)
class Decision:
    order: tuple[str, ...]  # gateways to try, best first
    explanation: str
    scores: tuple[Score, ...] = ()
    eliminated: dict[str, str] = field(default_factory=dict)  # key -> why
    explored: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "order": list(self.order),
            "explanation": self.explanation,
            "explored": self.explored,
            "eliminated": dict(self.eliminated),
            "scores": [
                {
                    "gateway": score.key,
                    "success_rate": round(score.success_rate, 4),
                    "attempts": score.attempts,
                    "fee_minor": score.fee.minor,
                }
                for score in self.scores
            ],
        }


class _Window:
    """The last `size` outcomes of one (gateway, method, currency), no older than `max_age`
    seconds, with running counts."""

    __slots__ = ("max_age", "outcomes", "size", "successes")

    def __init__(self, size: int, max_age: float) -> None:
        self.size = size
        self.max_age = max_age
        self.outcomes: deque[tuple[float, bool]] = deque()
        self.successes = 0

    def add(self, success: bool, now: float) -> None:
        self.outcomes.append((now, success))
        self.successes += success
        if len(self.outcomes) > self.size:
            self.successes -= self.outcomes.popleft()[1]

    def age(self, now: float) -> None:
        while self.outcomes and now - self.outcomes[0][0] > self.max_age:
            self.successes -= self.outcomes.popleft()[1]

    def rate(self) -> float:
        return (self.successes + PRIOR_SUCCESSES) / (len(self.outcomes) + PRIOR_ATTEMPTS)


class Router:
    def __init__(
        self,
        gateways: Iterable[Gateway],
        rules: Sequence[Rule] = (),
        *,
        window: int = WINDOW,
        max_age: float = MAX_AGE_SECONDS,
        exploration: float = EXPLORATION,
        latency_threshold_ms: float = LATENCY_THRESHOLD_MS,
        down: Callable[[str], str | None] = lambda _key: None,
        rng: random.Random | None = None,
    ) -> None:
        """`down(key)`: why a gateway cannot be used now (its breaker is open, health says
        down), or None."""
        self.gateways = {gateway.key: gateway for gateway in gateways}
        self.rules = tuple(rules)
        self._window = window
        self._max_age = max_age
        self.exploration = exploration
        self._latency_threshold = latency_threshold_ms
        self._down = down
        self._rng = rng or random.Random()
        self._windows: dict[tuple[str, str, str], _Window] = {}
        self._technical: dict[str, deque[tuple[float, str]]] = {}
        self._latency: dict[str, deque[tuple[float, float]]] = {}

    # --- learning -------------------------------------------------------------------------------

    def record(
        self,
        key: str,
        method: str,
        currency: str,
        *,
        success: bool,
        technical: str = "",
        latency_ms: float | None = None,
        now: float,
    ) -> None:
        """One attempt's outcome. `technical`: what went wrong when it was the gateway's fault
        ("timeout", "http_503", …); a technical failure is not counted against the success
        rate (it says nothing about approvals) but may eliminate the gateway for a while."""
        if technical:
            failures = self._technical.setdefault(key, deque())
            failures.append((now, technical))
            while failures and now - failures[0][0] > TECHNICAL_SECONDS:
                failures.popleft()
        else:
            window = self._windows.get((key, method, currency))
            if window is None:
                window = _Window(self._window, self._max_age)
                self._windows[(key, method, currency)] = window
            window.add(success, now)
        if latency_ms is not None:
            latencies = self._latency.setdefault(key, deque(maxlen=50))
            latencies.append((now, latency_ms))

    # --- deciding -------------------------------------------------------------------------------

    def set_gateways(self, gateways: Iterable[Gateway]) -> None:
        """The connected gateways changed; what was learned about each is kept."""
        self.gateways = {gateway.key: gateway for gateway in gateways}

    def decide(
        self, payment: PaymentAsk, now: float, only: Collection[str] | None = None
    ) -> Decision:
        """The order to try gateways in for this payment; `only`: the gateways that can take
        it at all (those holding the payer's saved method)."""
        eligible = [
            gateway
            for gateway in self.gateways.values()
            if gateway.takes(payment) and (only is None or gateway.key in only)
        ]
        rule = next((rule for rule in self.rules if rule.matches(payment)), None)
        if rule is not None:
            allowed = {key: place for place, key in enumerate(rule.gateways)}
            eligible = [gateway for gateway in eligible if gateway.key in allowed]
            preference = allowed
        else:
            preference = {gateway.key: gateway.priority for gateway in eligible}
        if not eligible:
            return Decision((), _nothing(payment, rule))
        eliminated: dict[str, str] = {}
        usable = []
        for gateway in eligible:
            why = self._unusable(gateway.key, now)
            if why:
                eliminated[gateway.key] = why
            else:
                usable.append(gateway)
        if not usable:  # all failing: better to try them than to refuse the payment
            usable, eliminated = eligible, {}
        scores = [self._score(gateway, payment, now) for gateway in usable]
        scores.sort(key=lambda score: (-score.expected_minor, preference[score.key]))
        explored = False
        if len(scores) > 1 and self._rng.random() < self.exploration:
            pick = self._rng.randrange(1, len(scores))
            scores.insert(0, scores.pop(pick))
            explored = True
        order = tuple(score.key for score in scores) + tuple(
            key for key in sorted(eliminated, key=lambda key: preference[key])
        )
        return Decision(
            order,
            self._explain(scores, eliminated, explored, rule),
            tuple(scores),
            eliminated,
            explored,
        )

    def _unusable(self, key: str, now: float) -> str:
        down = self._down(key)
        if down:
            return down
        failures = self._technical.get(key)
        if failures:
            while failures and now - failures[0][0] > TECHNICAL_SECONDS:
                failures.popleft()
            if len(failures) >= TECHNICAL_LIMIT:
                kinds = {kind for _, kind in failures}
                what = "timeouts" if kinds == {"timeout"} else "technical failures"
                return f"{len(failures)} {what} in {TECHNICAL_SECONDS / 60:g} min"
        latencies = self._latency.get(key)
        if latencies:
            while latencies and now - latencies[0][0] > LATENCY_SECONDS:
                latencies.popleft()
        if latencies and len(latencies) >= 10:
            slow = sorted(ms for _, ms in latencies)[int(len(latencies) * 0.95) - 1]
            if slow > self._latency_threshold:
                return f"slow: 95 % of answers within {slow / 1000:.1f} s"
        return ""

    def _score(self, gateway: Gateway, payment: PaymentAsk, now: float) -> Score:
        window = self._windows.get((gateway.key, payment.method, payment.amount.currency))
        if window is not None:
            window.age(now)
        rate = window.rate() if window else PRIOR_SUCCESSES / PRIOR_ATTEMPTS
        attempts = len(window.outcomes) if window else 0
        observed = window.successes / attempts if window and attempts else 0.0
        fee = gateway.fees.fee(payment.amount, payment.method, cross_border=payment.cross_border)
        amount = payment.amount.minor
        return Score(
            gateway.key,
            rate,
            observed,
            attempts,
            fee,
            rate * (amount - fee.minor),
            100 * fee.minor / amount,
        )

    def _explain(
        self,
        scores: Sequence[Score],
        eliminated: dict[str, str],
        explored: bool,
        rule: Rule | None,
    ) -> str:
        best = scores[0]
        parts = [f"chose {self._name(best.key)}: {_evidence(best)}"]
        if explored:
            parts[0] += " (tried to keep its figures fresh)"
        for score in scores[1:3]:
            parts.append(f"{self._name(score.key)}: {_evidence(score)}")
        for key, why in eliminated.items():
            parts.append(f"{self._name(key)} eliminated: {why}")
        if rule is not None:
            parts.append("by the rule for " + _rule_text(rule))
        return "; ".join(parts)

    def _name(self, key: str) -> str:
        return self.gateways[key].name


def _evidence(score: Score) -> str:
    if score.attempts == 0:
        history = "no history yet"
    else:
        history = f"{score.observed_rate * 100:.1f} % over the last {score.attempts}"
    return f"{history}, fee {score.fee_percent:.1f} %"


def _rule_text(rule: Rule) -> str:
    conditions = [
        text
        for text in (
            rule.currency,
            rule.method,
            rule.country and f"payers in {rule.country}",
            rule.min_minor is not None and f"from {_amount(rule.min_minor, rule.currency)}",
            rule.max_minor is not None and f"up to {_amount(rule.max_minor, rule.currency)}",
        )
        if text
    ]
    return ", ".join(str(condition) for condition in conditions) or "every payment"


def _amount(minor: int, currency: str) -> str:
    return str(Money(minor, currency)) if currency else f"{minor} minor units"


def _nothing(payment: PaymentAsk, rule: Rule | None) -> str:
    what = f"{payment.amount.currency} {payment.method} payments"
    if rule is not None:
        return f"No gateway allowed by the rule for {_rule_text(rule)} takes {what}."
    return f"No connected gateway takes {what}."

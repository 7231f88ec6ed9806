"""`switchboard bench routing --scenario FILE`: the router against simpler strategies, replayed
on one simulated day of payments.

A scenario (JSON, documented in the README) describes gateways whose approval rates drift over
time, their outage windows, fee schedules and technical failure rates, and the mix of payments.
Every strategy meets exactly the same payments and the same luck: each payment draws one number
that decides approval at any gateway (approved where it is below that gateway's rate at that
moment), and one per gateway that decides a technical failure. So differences between
strategies are the strategies', not chance's.

Strategies: the router; static priority (the administrator's order); round-robin; cheapest
first; and the hindsight oracle, which knows every gateway's true rate and outages at every
moment and picks the best expected value. A technical failure (an outage's timeout, a 5xx) moves
on to the next gateway in the strategy's order, as payments do; a decline is final. At most three
attempts.
"""

from __future__ import annotations

import bisect
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.domain.errors import SwitchboardError
from app.domain.money import Money, MoneyError
from app.domain.payments import FeeRule, FeeSchedule
from app.domain.routing import Gateway, PaymentAsk, Router

MAX_ATTEMPTS = 3
# For the shipped drifting scenario: the router at least 1.2 points above static priority and
# within 1 point of the oracle, fees at most 5 % above cheapest-first's, decisions under 1 ms.
TARGETS = {
    "static_priority_points": 1.2,
    "oracle_points": -1.0,
    "cheapest_first_fees_ratio": 1.05,
    "decision_p99_us": 1000.0,
}
SCENARIOS = Path(__file__).with_name("scenarios")


class ScenarioError(SwitchboardError):
    """A scenario file that cannot be read."""


@dataclass(frozen=True)
class SimGateway:
    gateway: Gateway
    rates: tuple[tuple[float, float], ...]  # (minute, approval rate), rising minutes
    technical_rate: float
    latency_median_ms: float
    outages: tuple[tuple[float, float], ...]  # [start, end) minutes

    def rate_at(self, minute: float) -> float:
        """Linear between the given points, flat beyond them."""
        minutes = [point[0] for point in self.rates]
        place = bisect.bisect_right(minutes, minute)
        if place == 0:
            return self.rates[0][1]
        if place == len(self.rates):
            return self.rates[-1][1]
        (m0, r0), (m1, r1) = self.rates[place - 1], self.rates[place]
        return r0 + (r1 - r0) * (minute - m0) / (m1 - m0)

    def down_at(self, minute: float) -> bool:
        return any(start <= minute < end for start, end in self.outages)


@dataclass(frozen=True)
class SimPayment:
    minute: float
    ask: PaymentAsk
    approval_draw: float
    technical_draws: dict[str, float]


@dataclass(frozen=True)
class Scenario:
    name: str
    gateways: tuple[SimGateway, ...]
    payments: tuple[SimPayment, ...]
    minutes: float


# --- reading a scenario ------------------------------------------------------------------------


def load(path: Path) -> Scenario:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"There is no scenario file {path}.") from None
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"{path} is not a readable JSON scenario ({exc}).") from None
    try:
        return parse(data, path.stem)
    except KeyError as exc:
        raise ScenarioError(
            f"{path} is not a valid scenario: {exc.args[0]!r} is missing (see the README's "
            "Benchmarks section for the format)."
        ) from None
    except (TypeError, ValueError, MoneyError) as exc:
        raise ScenarioError(f"{path} is not a valid scenario: {exc}") from None


def parse(data: dict[str, Any], default_name: str = "scenario") -> Scenario:
    rng = random.Random(int(data.get("seed", 1)))
    currency = str(data["currency"])
    home = str(data.get("home_country", ""))
    minutes = float(data.get("minutes", 1440))
    gateways = tuple(_gateway(item, currency) for item in data["gateways"])
    if not gateways:
        raise ValueError("it has no gateways")
    mix = data["mix"]
    shares = [float(item["share"]) for item in mix]
    count = int(data["payments"])
    if count <= 0:
        raise ValueError("payments must be a positive number")
    arrivals = sorted(rng.uniform(0, minutes) for _ in range(count))
    payments = []
    for minute in arrivals:
        kind = rng.choices(mix, weights=shares)[0]
        low, high = (int(value) for value in kind["amount_minor"])
        foreign = rng.random() < float(kind.get("foreign_share", 0.0))
        payments.append(
            SimPayment(
                minute,
                PaymentAsk(
                    Money(rng.randint(low, high), currency),
                    str(kind.get("method", "card")),
                    country=str(kind.get("foreign_country", "ZZ")) if foreign else home,
                    home_country=home,
                ),
                rng.random(),
                {sim.gateway.key: rng.random() for sim in gateways},
            )
        )
    return Scenario(str(data.get("name", default_name)), gateways, tuple(payments), minutes)


def _gateway(item: dict[str, Any], currency: str) -> SimGateway:
    key = str(item["name"])
    rules = tuple(
        FeeRule(
            Decimal(str(fee.get("percent", 0))),
            int(fee.get("fixed_minor", 0)),
            method=str(fee.get("method", "")),
            cross_border_percent=Decimal(str(fee.get("cross_border_percent", 0))),
        )
        for fee in item.get("fees", [])
    )
    rates = tuple((float(minute), float(rate)) for minute, rate in item["approval"])
    if not rates or any(not 0 <= rate <= 1 for _, rate in rates):
        raise ValueError(f"gateway {key}: approval rates are between 0 and 1")
    return SimGateway(
        Gateway(
            key=key,
            name=key,
            fees=FeeSchedule(rules),
            methods=frozenset(item.get("methods", [])),
            currencies=frozenset(item.get("currencies", [currency])),
            priority=int(item.get("priority", 0)),
        ),
        tuple(sorted(rates)),
        float(item.get("technical_rate", 0.0)),
        float(item.get("latency_median_ms", 400)),
        tuple((float(start), float(end)) for start, end in item.get("outages", [])),
    )


# --- strategies -----------------------------------------------------------------------------------


class Strategy:
    name = ""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.sims = {sim.gateway.key: sim for sim in scenario.gateways}

    def eligible(self, payment: SimPayment) -> list[Gateway]:
        return [sim.gateway for sim in self.scenario.gateways if sim.gateway.takes(payment.ask)]

    def order(self, payment: SimPayment) -> Sequence[str]:
        raise NotImplementedError

    def learn(
        self, key: str, payment: SimPayment, success: bool, technical: str, ms: float | None
    ) -> None:
        """What happened at a gateway (only the router learns)."""


class StaticPriority(Strategy):
    name = "static_priority"

    def order(self, payment: SimPayment) -> Sequence[str]:
        return [gateway.key for gateway in sorted(self.eligible(payment), key=_priority)]


class RoundRobin(Strategy):
    name = "round_robin"

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        self._turn = 0

    def order(self, payment: SimPayment) -> Sequence[str]:
        keys = [gateway.key for gateway in sorted(self.eligible(payment), key=_priority)]
        self._turn += 1
        start = self._turn % len(keys) if keys else 0
        return keys[start:] + keys[:start]


class CheapestFirst(Strategy):
    name = "cheapest_first"

    def order(self, payment: SimPayment) -> Sequence[str]:
        ask = payment.ask
        return [
            gateway.key
            for gateway in sorted(
                self.eligible(payment),
                key=lambda gateway: (
                    gateway.fees.fee(ask.amount, ask.method, cross_border=ask.cross_border).minor,
                    gateway.priority,
                ),
            )
        ]


class Oracle(Strategy):
    name = "oracle"

    def order(self, payment: SimPayment) -> Sequence[str]:
        ask = payment.ask

        def value(gateway: Gateway) -> float:
            sim = self.sims[gateway.key]
            if sim.down_at(payment.minute):
                return -1.0
            fee = gateway.fees.fee(ask.amount, ask.method, cross_border=ask.cross_border)
            return sim.rate_at(payment.minute) * (ask.amount.minor - fee.minor)

        return [gateway.key for gateway in sorted(self.eligible(payment), key=value, reverse=True)]


class RouterStrategy(Strategy):
    name = "router"

    def __init__(self, scenario: Scenario, seed: int = 7) -> None:
        super().__init__(scenario)
        self.router = Router([sim.gateway for sim in scenario.gateways], rng=random.Random(seed))

    def order(self, payment: SimPayment) -> Sequence[str]:
        return self.router.decide(payment.ask, payment.minute * 60).order

    def learn(
        self, key: str, payment: SimPayment, success: bool, technical: str, ms: float | None
    ) -> None:
        ask = payment.ask
        self.router.record(
            key,
            ask.method,
            ask.amount.currency,
            success=success,
            technical=technical,
            latency_ms=ms,
            now=payment.minute * 60,
        )


def _priority(gateway: Gateway) -> int:
    return gateway.priority


STRATEGIES: tuple[Callable[[Scenario], Strategy], ...] = (
    RouterStrategy,
    StaticPriority,
    RoundRobin,
    CheapestFirst,
    Oracle,
)


# --- running ------------------------------------------------------------------------------------


def replay(scenario: Scenario, strategy: Strategy) -> dict[str, Any]:
    succeeded = attempts = timeouts = 0
    fees = collected = 0
    decisions: list[int] = []
    for payment in scenario.payments:
        started = time.perf_counter_ns()
        order = strategy.order(payment)
        decisions.append(time.perf_counter_ns() - started)
        for key in order[:MAX_ATTEMPTS]:
            attempts += 1
            sim = strategy.sims[key]
            if sim.down_at(payment.minute):
                timeouts += 1
                strategy.learn(key, payment, False, "timeout", None)
                continue
            if payment.technical_draws[key] < sim.technical_rate:
                strategy.learn(key, payment, False, "http_503", sim.latency_median_ms)
                continue
            approved = payment.approval_draw < sim.rate_at(payment.minute)
            strategy.learn(key, payment, approved, "", sim.latency_median_ms)
            if approved:
                ask = payment.ask
                fee = sim.gateway.fees.fee(ask.amount, ask.method, cross_border=ask.cross_border)
                succeeded += 1
                fees += fee.minor
                collected += ask.amount.minor
            break  # a decline is final
    decisions.sort()
    count = len(scenario.payments)
    currency = scenario.payments[0].ask.amount.currency if count else "XXX"
    return {
        "success_rate_percent": round(100 * succeeded / count, 3),
        "succeeded": succeeded,
        "attempts": attempts,
        "timeouts": timeouts,
        "fees": Money(fees, currency).for_input(),
        "fees_minor": fees,
        "fee_percent_of_collected": round(100 * fees / collected, 4) if collected else 0.0,
        "decision_p50_us": round(_quantile(decisions, 0.50) / 1000, 2),
        "decision_p99_us": round(_quantile(decisions, 0.99) / 1000, 2),
    }


def _quantile(sorted_values: Sequence[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


def routing(scenario_path: Path) -> dict[str, Any]:
    scenario = load(scenario_path)
    results = {}
    for make in STRATEGIES:
        strategy = make(scenario)
        results[strategy.name] = replay(scenario, strategy)
    router, static = results["router"], results["static_priority"]
    oracle, cheapest = results["oracle"], results["cheapest_first"]
    versus = {
        "static_priority_points": round(
            router["success_rate_percent"] - static["success_rate_percent"], 3
        ),
        "oracle_points": round(router["success_rate_percent"] - oracle["success_rate_percent"], 3),
        "cheapest_first_fees_ratio": round(router["fees_minor"] / cheapest["fees_minor"], 4)
        if cheapest["fees_minor"]
        else None,
    }
    ratio = versus["cheapest_first_fees_ratio"]
    return {
        "benchmark": "routing",
        "parameters": {
            "scenario": scenario.name,
            "payments": len(scenario.payments),
            "gateways": [sim.gateway.key for sim in scenario.gateways],
            "minutes": scenario.minutes,
        },
        "strategies": results,
        "router_vs": versus,
        "targets": TARGETS,
        "met": bool(
            versus["static_priority_points"] >= TARGETS["static_priority_points"]
            and versus["oracle_points"] >= TARGETS["oracle_points"]
            and ratio is not None
            and ratio <= TARGETS["cheapest_first_fees_ratio"]
            and router["decision_p99_us"] < TARGETS["decision_p99_us"]
        ),
    }


def shipped(name: str) -> Path:
    """One of the scenarios that ship with Switchboard, by name ("drifting", "outages")."""
    return SCENARIOS / f"{name}.json"

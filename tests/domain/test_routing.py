"""The router: rules first, then expected value learned from recent outcomes, gateways that fail
technically or are down set aside, and every decision explained."""

from __future__ import annotations

import random
from decimal import Decimal

from app.domain.money import Money
from app.domain.payments import FeeRule, FeeSchedule
from app.domain.routing import Gateway, PaymentAsk, Router, Rule


def gateway(key: str, percent: str = "2.9", priority: int = 0, **extra: object) -> Gateway:
    return Gateway(
        key=key,
        name=f"Gateway {key}",
        fees=FeeSchedule((FeeRule(Decimal(percent), 30),)),
        priority=priority,
        **extra,  # type: ignore[arg-type]
    )


def card(minor: int = 10_000, currency: str = "USD", country: str = "US") -> PaymentAsk:
    return PaymentAsk(Money(minor, currency), "card", country=country, home_country="US")


def teach(router: Router, key: str, successes: int, failures: int, now: float = 0.0) -> None:
    for n in range(successes + failures):
        router.record(key, "card", "USD", success=n < successes, now=now)


def router(*gateways: Gateway, **options: object) -> Router:
    return Router(gateways, exploration=0.0, rng=random.Random(1), **options)  # type: ignore[arg-type]


def test_with_no_history_the_cheaper_gateway_comes_first() -> None:
    decision = router(gateway("A", "2.9"), gateway("B", "2.5")).decide(card(), now=0)
    assert decision.order == ("B", "A")
    assert decision.explanation.startswith("chose Gateway B: no history yet, fee 2.8 %")


def test_a_gateway_that_succeeds_more_wins_over_a_slightly_cheaper_one() -> None:
    routing = router(gateway("A", "2.9"), gateway("B", "2.7"))
    teach(routing, "A", 194, 6)
    teach(routing, "B", 180, 20)
    decision = routing.decide(card(), now=0)
    assert decision.order == ("A", "B")
    assert "chose Gateway A: 97.0 % over the last 200, fee 3.2 %" in decision.explanation
    assert "Gateway B: 90.0 % over the last 200" in decision.explanation


def test_the_window_forgets_old_outcomes() -> None:
    routing = router(gateway("A"), gateway("B"), window=50)
    teach(routing, "A", 0, 100)  # a bad spell ...
    teach(routing, "A", 50, 0)  # ... long enough ago to have left the window
    teach(routing, "B", 45, 5)
    assert routing.decide(card(), now=0).order[0] == "A"


def test_timeouts_eliminate_a_gateway_for_two_minutes() -> None:
    routing = router(gateway("A", "2.5"), gateway("B", "2.9"))
    for second in (0, 10, 20):
        routing.record("A", "card", "USD", success=False, technical="timeout", now=second)
    decision = routing.decide(card(), now=30)
    assert decision.order == ("B", "A")  # A is still tried last, never dropped
    assert decision.eliminated == {"A": "3 timeouts in 2 min"}
    assert "Gateway A eliminated: 3 timeouts in 2 min" in decision.explanation
    assert routing.decide(card(), now=150).order == ("A", "B")


def test_technical_failures_do_not_count_against_the_success_rate() -> None:
    routing = router(gateway("A", "2.5"), gateway("B", "2.9"))
    routing.record("A", "card", "USD", success=False, technical="http_503", now=0)
    teach(routing, "A", 20, 0)
    assert routing.decide(card(), now=500).scores[0].observed_rate == 1.0


def test_a_gateway_that_is_down_is_set_aside_unless_all_are() -> None:
    down = {"A": "its circuit breaker is open"}
    routing = router(gateway("A", "2.5"), gateway("B", "2.9"), down=down.get)
    assert routing.decide(card(), now=0).order == ("B", "A")
    down["B"] = "health checks failing"
    decision = routing.decide(card(), now=0)
    assert set(decision.order) == {"A", "B"}  # better to try than to refuse the payment
    assert decision.eliminated == {}


def test_slow_answers_eliminate_a_gateway_until_they_are_ten_minutes_old() -> None:
    routing = router(gateway("A", "2.5"), gateway("B", "2.9"), latency_threshold_ms=5000)
    for second in range(20):
        routing.record("A", "card", "USD", success=True, latency_ms=9000, now=second)
    assert routing.decide(card(), now=30).eliminated["A"].startswith("slow")
    assert routing.decide(card(), now=700).order[0] == "A"


def test_rules_choose_which_gateways_may_take_a_payment() -> None:
    rules = [Rule(("C", "B"), currency="USD", min_minor=100_000), Rule(("A",), country="ZW")]
    routing = router(gateway("A"), gateway("B"), gateway("C"), rules=rules)
    large = routing.decide(card(250_000), now=0)
    assert large.order == ("C", "B")  # equal scores: the rule's order
    assert "by the rule for USD, from USD 1000.00" in large.explanation
    assert routing.decide(card(country="ZW"), now=0).order == ("A",)
    assert set(routing.decide(card(), now=0).order) == {"A", "B", "C"}


def test_a_payment_nothing_takes_says_so() -> None:
    routing = router(gateway("A", currencies=frozenset({"USD"})))
    decision = routing.decide(card(currency="EUR"), now=0)
    assert decision.order == ()
    assert decision.explanation == "No connected gateway takes EUR card payments."


def test_cross_border_payers_cost_the_surcharge() -> None:
    fees = FeeSchedule((FeeRule(Decimal("2.9"), 30, cross_border_percent=Decimal("1.5")),))
    routing = router(Gateway("A", "A", fees))
    assert routing.decide(card(10_000, country="GB"), now=0).scores[0].fee == Money(470, "USD")


def test_a_small_share_of_payments_keeps_the_other_gateways_figures_fresh() -> None:
    routing = Router(
        [gateway("A", "2.5"), gateway("B", "2.9")], exploration=0.05, rng=random.Random(3)
    )
    decisions = [routing.decide(card(), now=0) for _ in range(2000)]
    explored = [decision for decision in decisions if decision.explored]
    assert 60 <= len(explored) <= 140
    assert all(decision.order[0] == "B" for decision in explored)
    assert "(tried to keep its figures fresh)" in explored[0].explanation

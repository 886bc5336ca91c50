"""The thin low-cap pair: buying it moves its price, so a pump with stolen keys shows up."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN
from decimal import Decimal as D

from simexchange import SimExchange
from simexchange.testing import RawClient

TICK = D("0.00001")


def _last(client: RawClient, symbol: str) -> D:
    return D(client.get("/api/v3/ticker/price", symbol=symbol).body["price"])


def test_buying_the_thin_pair_pumps_it_and_the_pump_decays(sim: SimExchange) -> None:
    client = RawClient(sim.base_url)
    market = sim.engine.markets["DATAUSDT"]
    victim = sim.add_account({"USDT": "20000"}, name="victim")
    before = _last(client, "DATAUSDT")

    reply = client.signed(
        "POST", "/api/v3/order", victim,
        {"symbol": "DATAUSDT", "side": "BUY", "type": "MARKET", "quoteOrderQty": "20000"},
        timestamp=sim.now_ms,
    )  # fmt: skip
    assert reply.status == 200 and reply.body["status"] == "FILLED"
    # 20 000 USDT into 2 000 USDT of depth per 1 % lifts the price about 10 %
    pumped = _last(client, "DATAUSDT")
    assert pumped > before * D("1.09")
    assert D(reply.body["fills"][0]["price"]) > before * D("1.04")  # fills average half the move

    sim.advance(600)  # one half-life later half of the move is gone
    path_now = market.path.price_at(sim.now_ms)
    expected = (path_now * (1 + (market.impact_m0 - 1) / 2)).quantize(TICK, ROUND_HALF_EVEN)
    assert _last(client, "DATAUSDT") == expected


def test_attacker_sells_into_the_pump_made_with_someone_elses_money(sim: SimExchange) -> None:
    client = RawClient(sim.base_url)
    attacker = sim.add_account({"DATA": "50000"}, name="attacker")
    victim_key_in_attacker_hands = sim.add_account({"USDT": "20000"}, name="victim")
    fair = _last(client, "DATAUSDT")
    client.signed(
        "POST", "/api/v3/order", victim_key_in_attacker_hands,
        {"symbol": "DATAUSDT", "side": "BUY", "type": "MARKET", "quoteOrderQty": "20000"},
        timestamp=sim.now_ms,
    )  # fmt: skip
    sold = client.signed(
        "POST", "/api/v3/order", attacker,
        {"symbol": "DATAUSDT", "side": "SELL", "type": "MARKET", "quantity": "50000"},
        timestamp=sim.now_ms,
    )  # fmt: skip
    assert D(sold.body["fills"][0]["price"]) > fair * D("1.08")


def test_deep_pairs_do_not_move(sim: SimExchange) -> None:
    client = RawClient(sim.base_url)
    whale = sim.add_account({"USDT": "1000000"})
    before = _last(client, "BTCUSDT")
    client.signed(
        "POST", "/api/v3/order", whale,
        {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "10"},
        timestamp=sim.now_ms,
    )  # fmt: skip
    assert _last(client, "BTCUSDT") == before


def test_depth_and_book_ticker_describe_the_thin_book(sim: SimExchange) -> None:
    client = RawClient(sim.base_url)
    depth = client.get("/api/v3/depth", symbol="DATAUSDT", limit=5).body
    bids = [D(p) for p, _ in depth["bids"]]
    asks = [D(p) for p, _ in depth["asks"]]
    assert len(bids) == len(asks) == 5
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    assert asks[0] - bids[0] == TICK
    # 2 000 USDT per 1 %, in levels 0.1 % apart: about 200 USDT of DATA per level
    qty = D(depth["bids"][0][1])
    assert D(190) < qty * bids[0] <= D(200)
    book = client.get("/api/v3/ticker/bookTicker", symbol="DATAUSDT").body
    assert (D(book["bidPrice"]), D(book["askPrice"])) == (bids[0], asks[0])

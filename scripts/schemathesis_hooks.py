"""Schemathesis hooks for scripts/schemathesis.sh.

JSON Schema describes each field alone. A few rules of hawker's API relate two
fields, or a field and the server's clock, which no schema can state; they are
written in docs/api.md and docs/agency.md and answered 400 when broken. So
that the positive-data check tests what the schema promises, the generated
*positive* cases are brought within those rules before they are sent. Each
repair below names its rule. Negative cases are sent as generated, untouched.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime, timedelta, timezone

import schemathesis
from schemathesis.core.transforms import to_wire_text

# Real ids (path parameter name -> value) made by schemathesis_fixtures.py:
# random ids would only ever reach a 404.
_IDS: dict = {}
if os.environ.get("SCHEMATHESIS_IDS"):
    with open(os.environ["SCHEMATHESIS_IDS"], encoding="utf-8") as f:
        _IDS = json.load(f)
_calls: Counter = Counter()


def _instant(value):
    """The instant a generated RFC 3339 string names, or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _iso(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _number(value):
    """A generated number (integral floats such as `5.0` included), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _is_positive(case) -> bool:
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


def _period(query: dict, *, both_or_neither: bool, max_days: int | None) -> None:
    """`to` after `from` (docs/agency.md: bad_period); for a session list both
    or neither, at most 31 days apart."""
    start, end = _instant(query.get("from")), _instant(query.get("to"))
    if both_or_neither and (("from" in query) != ("to" in query)):
        query.pop("from", None)
        query.pop("to", None)
        return
    if start is None or end is None:
        return
    if end <= start or (max_days is not None and end - start > timedelta(days=max_days)):
        try:
            query["to"] = _iso(start + timedelta(days=1))
        except OverflowError:
            query["to"] = _iso(start)
            query["from"] = _iso(start - timedelta(days=1))


def _report_period(query: dict, now: datetime) -> None:
    """A brand's sales report: `to` defaults to now and `from` to 30 days
    before `to`; `from` before `to`, at most 366 days apart (docs/api.md,
    "Brand reports": bad_period)."""
    for name in ("from", "to"):
        if name in query and _instant(query[name]) is None:
            query.pop(name)
    start, end = _instant(query.get("from")), _instant(query.get("to"))
    end = end or now
    try:
        start = start or end - timedelta(days=30)
        if end <= start or end - start > timedelta(days=366):
            query["from"] = _iso(end - timedelta(days=1))
    except OverflowError:
        query["from"], query["to"] = _iso(now - timedelta(days=1)), _iso(now)


def _plan(body: dict, max_hours: int | None) -> None:
    """`planned_end` after `planned_start` (sessions: at most 24 h; bad_plan)."""
    start, end = _instant(body.get("planned_start")), _instant(body.get("planned_end"))
    if start is None or end is None:
        return
    if end <= start or (max_hours is not None and end - start > timedelta(hours=max_hours)):
        try:
            body["planned_end"] = _iso(start + timedelta(hours=1))
        except OverflowError:
            body["planned_start"] = _iso(start - timedelta(hours=1))
            body["planned_end"] = _iso(start)


def _aim_path(case, method: str, path: str) -> None:
    """Three positive cases in four of each operation name real objects in
    their path (so the handler behind the 404 is reached); every fourth keeps
    its generated ids, so unknown ids are still tried. Deterministic: one
    worker, a fixed seed, the same order of calls."""
    params = case.path_parameters
    if not isinstance(params, dict) or not params or not _IDS:
        return
    _calls[(method, path)] += 1
    if _calls[(method, path)] % 4 == 0:
        return
    for name in params:
        if name == "host_id" and "{invite_id}" in path and path.startswith("/v1/hosts/"):
            params[name] = _IDS["invite_host_id"]
        elif name in _IDS:
            params[name] = _IDS[name]


# The catalog import takes the catalog as text, `text/csv` or JSON lines
# (`application/x-ndjson`): a generated string goes on the wire as its UTF-8
# bytes, anything else as its JSON spelling (as schemathesis sends text/plain).
#
# A negative case whose body is no string (`{}`, `5`) has no spelling as
# text: its JSON spelling would be a valid text body (a JSON line, a CSV
# cell), so it goes as bytes that are not UTF-8, which no text is
# (bad_encoding).
@schemathesis.serializer("text/csv", "application/x-ndjson")
def _text_body(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return b"\xff" + to_wire_text(value).encode("utf-8")


# A CSV catalog starts with a header row naming the required columns, and
# quotes are balanced (bad_import_header, bad_csv); each row after it is
# judged alone and a bad one is reported, not refused. JSON lines have no
# header: every line is judged alone.
_CATALOG_HEADER = "product_name,sku_code,sku_name,price_minor,currency"


def _catalog(case) -> None:
    if not isinstance(case.body, str) or case.media_type != "text/csv":
        return
    case.body = _CATALOG_HEADER + "\n" + case.body.replace('"', "")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if not _is_positive(case):
        return
    method, path = case.operation.method.upper(), case.operation.path
    _aim_path(case, method, path)
    query = case.query if isinstance(case.query, dict) else None
    body = case.body if isinstance(case.body, dict) else None
    now = datetime.now(timezone.utc)

    if query is not None and method == "GET":
        # A cursor is opaque: only a `next_cursor` the server gave is valid
        # (bad_cursor), which no generator can produce. First pages only.
        query.pop("cursor", None)
        if path == "/v1/agencies/{agency_id}/sessions":
            _period(query, both_or_neither=True, max_days=31)
        elif path in (
            "/v1/hosts/{host_id}/shifts",
            "/v1/hosts/{host_id}/statement",
            "/v1/agencies/{agency_id}/statement",
            "/v1/sessions",
        ):
            _period(query, both_or_neither=False, max_days=None)
        elif path == "/v1/brands/{brand_id}/reports/sales":
            _report_period(query, now)

    if method == "POST" and path == "/v1/brands/{brand_id}/catalog/import":
        _catalog(case)
    if body is None or method != "POST":
        return
    if path == "/v1/agencies/{agency_id}/roster":
        # An invite's joined_at may only be close to now (bad_joined_at).
        if "joined_at" in body:
            body["joined_at"] = _iso(now)
    elif path == "/v1/agencies/{agency_id}/sessions":
        _plan(body, max_hours=24)
        # A campaign's session is for the campaign's brand (brand_mismatch):
        # the brand then comes from the campaign.
        if body.get("campaign_id") is not None:
            body.pop("brand_id", None)
    elif path == "/v1/sessions/{session_id}/shifts":
        _plan(body, max_hours=None)
    elif path == "/v1/skus/{sku_id}/stock-movements":
        # A restock adds units (bad_delta).
        delta = _number(body.get("delta"))
        if body.get("kind") == "restock" and delta is not None and delta <= 0:
            body["delta"] = -delta if delta < 0 else 1
        # An adjustment says why (bad_note).
        note = body.get("note")
        if body.get("kind") == "adjustment" and (not isinstance(note, str) or not note.strip()):
            body["note"] = "counted again"
    elif path == "/v1/campaigns":
        # ends_at after starts_at, which is now when absent (bad_dates).
        start = _instant(body.get("starts_at")) or now
        end = _instant(body.get("ends_at"))
        if end is not None and end <= start + timedelta(minutes=1):
            try:
                body["ends_at"] = _iso(start + timedelta(days=1))
            except OverflowError:
                body.pop("ends_at")
    elif path == "/v1/campaigns/{campaign_id}/skus":
        # Every SKU and product of a campaign is its brand's (not_brand_sku):
        # aim them at the seeded brand's.
        for item in body.get("items") or []:
            if isinstance(item, dict):
                if "sku_id" in item and "sku_id" in _IDS:
                    item["sku_id"] = _IDS["sku_id"]
                if "product_id" in item and "product_id" in _IDS:
                    item["product_id"] = _IDS["product_id"]
                # Exactly one of the two (bad_items). TODO: state it in the
                # schema (oneOf of the two required sets) instead.
                if item.get("sku_id") is not None and item.get("product_id") is not None:
                    item.pop("product_id")
    elif path == "/v1/sessions/{session_id}/deals":
        # A deal is not below the campaign's floor for its SKU
        # (price_below_floor); the seeded floors are under 10,000.
        price = _number(body.get("price_minor"))
        if price is not None and price < 10_000:
            body["price_minor"] = 10_000
        # per_buyer_cap is 1 to quantity (bad_cap).
        quantity, cap = _number(body.get("quantity")), _number(body.get("per_buyer_cap"))
        if quantity is not None and cap is not None and cap > quantity:
            body["per_buyer_cap"] = quantity
    elif path == "/v1/sessions/{session_id}/auctions":
        # The increment table's thresholds ascend and only its last line has
        # none (bad_increments); a snipe window only in anti-snipe
        # (bad_snipe_window); a reserve at or above the seeded floors, which
        # are under 10,000 (price_below_floor).
        body["increments"] = [{"below_minor": 5000, "step_minor": 100}, {"step_minor": 500}]
        if body.get("mode") == "sudden_death":
            body.pop("snipe_window_secs", None)
        reserve = _number(body.get("reserve_minor"))
        if reserve is not None and reserve < 10_000:
            body["reserve_minor"] = 10_000
    elif path == "/v1/sessions/{session_id}/group-buys":
        # The tiers start at 1 participant, their thresholds rise and their
        # prices fall, the lowest at or above the seeded floors, which are
        # under 10,000 (bad_tiers, price_below_floor).
        body["tiers"] = [{"min_participants": 1, "price_minor": 20_000},
                         {"min_participants": 10, "price_minor": 15_000}]
    elif path == "/v1/group-buys/{group_buy_id}/cancel":
        # A reason is not blank and has no control characters (bad_reason).
        reason = body.get("reason")
        if isinstance(reason, str) and (not reason.strip() or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in reason)):
            body["reason"] = "wrong item"
    elif path == "/v1/auctions/{auction_id}/bids":
        # At least one of amount and maximum, the maximum not below the
        # amount (bad_bid).
        amount, top = _number(body.get("amount_minor")), _number(body.get("max_minor"))
        if amount is None and top is None:
            body["max_minor"] = 100_000_000
        elif amount is not None and top is not None and top < amount:
            body["max_minor"] = amount
    elif path == "/v1/auctions/{auction_id}/void":
        # A reason is not blank and has no control characters (bad_reason).
        reason = body.get("reason")
        if isinstance(reason, str) and (not reason.strip() or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in reason)):
            body["reason"] = "wrong item"
    elif path == "/v1/sessions/{session_id}/coupon-drops":
        # A restriction names a line-up item of this session and a deal of
        # it (bad_restriction): the fixture's deal, no line-up item.
        body.pop("lineup_item_id", None)
        if body.get("deal_id") is not None and "deal_id" in _IDS:
            body["deal_id"] = _IDS["deal_id"]
        # A percent discount is 1 to 100; a fixed one needs a currency
        # (bad_discount_value, bad_currency).
        value = _number(body.get("discount_value"))
        if body.get("discount_kind") == "percent" and value is not None and value > 100:
            body["discount_value"] = 100
        if body.get("discount_kind") == "fixed" and body.get("currency") is None:
            body["currency"] = "USD"
        # drop_at is at most 7 days ahead and not more than 30 s past (bad_drop_at).
        at = _instant(body.get("drop_at"))
        if at is not None and not (now - timedelta(seconds=20) <= at <= now + timedelta(days=6)):
            body["drop_at"] = _iso(now + timedelta(minutes=5))
    elif path in ("/v1/campaigns/{campaign_id}/terms", "/v1/sessions/{session_id}/terms"):
        # effective_from is now or later (terms_backdated), and terms need a
        # percentage, a slot fee or an hourly rate (empty_terms).
        at = _instant(body.get("effective_from"))
        if at is not None and at < now + timedelta(seconds=5):
            body["effective_from"] = _iso(now + timedelta(minutes=5))
        if not any(body.get(k) for k in ("percent_bps", "slot_fee_minor", "hourly_rate_minor")):
            body["percent_bps"] = 1

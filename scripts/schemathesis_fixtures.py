"""Real objects for scripts/schemathesis.sh to aim its path parameters at.

`hawker seed` gives an agency, two hosts, a brand with products and a
session. This adds, through the public API, one of everything else a path can
name: a line-up item (link 1), a live deal, an order of the viewer, a coupon
drop, a campaign, a host with a pending invite, a shift, and the seeded
host's calendar feed (no token of the run is a host's, so the fuzzing never
replaces it and `GET /v1/calendar/{token}` is reached). It prints their
ids as one JSON object (path parameter name -> value), which
schemathesis_hooks.py reads from the file named by SCHEMATHESIS_IDS.

Usage: schemathesis_fixtures.py BASE_URL  (tokens in VIEWER_TOKEN,
AGENCY_TOKEN, BRAND_TOKEN, HOST_TOKEN (the seeded host's); seeded ids in AGENCY_ID, BRAND_ID, SESSION_ID,
HOST_ID, SKU_ID, PRODUCT_ID).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from datetime import datetime, timedelta, timezone


def call(base: str, method: str, path: str, token: str, body=None, headers=None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        sys.exit(f"fixture {method} {path}: {e.code} {e.read().decode(errors='replace')}")


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def main() -> None:
    base = sys.argv[1]
    env = os.environ
    viewer, agency, brand = env["VIEWER_TOKEN"], env["AGENCY_TOKEN"], env["BRAND_TOKEN"]
    agency_id, session_id, host_id = env["AGENCY_ID"], env["SESSION_ID"], env["HOST_ID"]
    ids = {"agency_id": agency_id, "session_id": session_id, "host_id": host_id,
           "brand_id": env["BRAND_ID"], "sku_id": env["SKU_ID"], "product_id": env["PRODUCT_ID"],
           # A user a ban in the seeded session may name (no token of the run).
           "user": "schemathesis-banned"}

    item = call(base, "POST", f"/v1/sessions/{session_id}/lineup", agency, {"sku_id": env["SKU_ID"]})
    ids["link_number"] = item["link_number"]
    deal = call(
        base,
        "POST",
        f"/v1/sessions/{session_id}/deals",
        agency,
        {"link_number": item["link_number"], "price_minor": 999, "quantity": 500,
         "per_buyer_cap": 5, "duration_secs": 1200},
    )
    ids["deal_id"] = deal["deal_id"]
    order = call(
        base, "POST", f"/v1/deals/{deal['deal_id']}/orders", viewer, {"quantity": 1},
        {"Idempotency-Key": "schemathesis-fixture"},
    )
    ids["order_id"] = order["order_id"]
    auction = call(
        base,
        "POST",
        f"/v1/sessions/{session_id}/auctions",
        agency,
        {"link_number": item["link_number"], "start_price_minor": 10_000, "duration_secs": 300,
         "mode": "anti_snipe", "increments": [{"step_minor": 100}]},
    )
    ids["auction_id"] = auction["auction_id"]
    group_buy = call(
        base,
        "POST",
        f"/v1/sessions/{session_id}/group-buys",
        agency,
        {"link_number": item["link_number"], "tiers": [{"min_participants": 1, "price_minor": 20_000}],
         "min_participants": 1, "duration_secs": 3600, "per_buyer_cap": 100, "stock": 200},
    )
    ids["group_buy_id"] = group_buy["group_buy_id"]
    drop = call(
        base,
        "POST",
        f"/v1/sessions/{session_id}/coupon-drops",
        agency,
        {"total": 100, "discount_kind": "percent", "discount_value": 10, "claim_window_secs": 86400},
    )
    ids["coupon_drop_id"] = drop["coupon_drop_id"]
    campaign = call(
        base, "POST", "/v1/campaigns", brand,
        {"brand_id": env["BRAND_ID"], "agency_id": agency_id, "name": "Schemathesis campaign"},
    )
    ids["campaign_id"] = campaign["campaign_id"]
    newcomer = call(base, "POST", "/v1/hosts", agency, {"handle": "fuzz_host", "display_name": "Fuzz Host"})
    invite = call(base, "POST", f"/v1/agencies/{agency_id}/roster", agency, {"host_id": newcomer["host_id"]})
    ids["invite_id"] = invite["invite_id"]
    # The host the invite is for: the host of /v1/hosts/{host_id}/invites/{invite_id}/...
    ids["invite_host_id"] = newcomer["host_id"]
    start = datetime.now(timezone.utc) + timedelta(days=2)
    session = call(
        base, "POST", f"/v1/agencies/{agency_id}/sessions", agency,
        {"title": "Schemathesis session", "planned_start": iso(start), "planned_end": iso(start + timedelta(hours=2))},
    )
    shift = call(
        base, "POST", f"/v1/sessions/{session['session_id']}/shifts", agency,
        {"host_id": host_id, "planned_start": iso(start), "planned_end": iso(start + timedelta(hours=1))},
    )
    ids["shift_id"] = shift["shift_id"]
    feed = call(base, "POST", "/v1/me/calendar-feed", env["HOST_TOKEN"])
    ids["token"] = feed["token"]
    print(json.dumps(ids))


if __name__ == "__main__":
    main()

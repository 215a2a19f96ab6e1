-- Commerce: lineups, flash deals, orders, payments, refunds, coupon drops,
-- and the durable outbox that carries their room events.
-- The constraints here are the last line of defence: even if the Redis gate
-- is wrong, a deal cannot oversell, a buyer cannot pass the cap, a coupon
-- drop cannot hand out more coupons than it has, and a claim is used once.

create table lineup_item (
    lineup_item_id  uuid primary key,
    session_id      uuid not null references live_session,
    link_number     integer not null check (link_number between 1 and 9999),
    sku_id          uuid not null references sku,
    created_at      timestamptz not null default now(),
    constraint lineup_item_link_unique unique (session_id, link_number)
);

create table deal (
    deal_id         uuid primary key,
    session_id      uuid not null references live_session,
    lineup_item_id  uuid not null references lineup_item,
    sku_id          uuid not null references sku,
    price_minor     bigint not null check (price_minor > 0),
    currency        char(3) not null,
    quantity        integer not null check (quantity > 0),
    -- Units in orders that are not cancelled.
    sold            integer not null default 0,
    per_buyer_cap   integer not null check (per_buyer_cap >= 1),
    starts_at       timestamptz not null,
    ends_at         timestamptz not null,
    status          text not null default 'scheduled'
                    check (status in ('scheduled', 'live', 'ended')),
    end_reason      text check (end_reason in ('sold_out', 'time_up', 'ended_by_host')),
    ended_at        timestamptz,
    -- Bumped by every change of `sold`, so stock events can be ordered.
    stock_version   bigint not null default 0,
    created_by      text not null,
    created_at      timestamptz not null default now(),
    constraint deal_no_oversell check (sold >= 0 and sold <= quantity),
    constraint deal_ends_after_start check (ends_at > starts_at),
    constraint deal_ended_has_reason check ((status = 'ended') = (end_reason is not null))
);
create index deal_session_idx on deal (session_id);
create index deal_due_idx on deal (status, starts_at, ends_at) where status <> 'ended';

-- Units per buyer per deal; the cap is copied so Postgres can check it.
create table deal_buyer (
    deal_id   uuid not null references deal,
    buyer_id  text not null,
    units     integer not null,
    cap       integer not null,
    primary key (deal_id, buyer_id),
    constraint deal_buyer_within_cap check (units >= 0 and units <= cap)
);

create table coupon_drop (
    coupon_drop_id    uuid primary key,
    session_id        uuid not null references live_session,
    total             integer not null check (total between 1 and 1000000),
    claimed           integer not null default 0,
    discount_kind     text not null check (discount_kind in ('percent', 'fixed')),
    -- Percent: 1 to 100. Fixed: minor units of `currency`.
    discount_value    bigint not null check (discount_value > 0),
    currency          char(3),
    min_spend_minor   bigint not null default 0 check (min_spend_minor >= 0),
    lineup_item_id    uuid references lineup_item,
    deal_id           uuid references deal,
    per_viewer_limit  integer not null default 1 check (per_viewer_limit between 1 and 100),
    drop_at           timestamptz not null,
    claim_window_secs integer not null check (claim_window_secs between 1 and 86400),
    status            text not null default 'scheduled' check (status in ('scheduled', 'dropped', 'ended')),
    dropped_at        timestamptz,
    created_by        text not null,
    created_at        timestamptz not null default now(),
    constraint coupon_drop_no_overclaim check (claimed >= 0 and claimed <= total),
    constraint coupon_drop_percent_range check (discount_kind <> 'percent' or discount_value <= 100),
    constraint coupon_drop_fixed_has_currency check (discount_kind <> 'fixed' or currency is not null)
);
create index coupon_drop_due_idx on coupon_drop (status, drop_at) where status <> 'ended';

create table coupon_claim (
    coupon_claim_id  uuid primary key,
    coupon_drop_id   uuid not null references coupon_drop,
    viewer_id        text not null,
    -- 1..per_viewer_limit: the unique key makes "one per viewer" a constraint.
    seq              integer not null check (seq >= 1),
    claimed_at       timestamptz not null default now(),
    used_at          timestamptz,
    constraint coupon_claim_per_viewer unique (coupon_drop_id, viewer_id, seq)
);

create table customer_order (
    order_id          uuid primary key,
    deal_id           uuid not null references deal,
    session_id        uuid not null references live_session,
    lineup_item_id    uuid not null references lineup_item,
    sku_id            uuid not null references sku,
    buyer_id          text not null,
    quantity          integer not null check (quantity > 0),
    unit_price_minor  bigint not null check (unit_price_minor > 0),
    discount_minor    bigint not null default 0 check (discount_minor >= 0),
    amount_minor      bigint not null check (amount_minor >= 0),
    currency          char(3) not null,
    coupon_claim_id   uuid references coupon_claim,
    status            text not null default 'pending_payment'
                      check (status in ('pending_payment', 'paid', 'cancelled', 'refund_due', 'refunded', 'partially_refunded')),
    idempotency_key   text not null check (length(idempotency_key) between 1 and 200),
    request_hash      text not null,
    created_at        timestamptz not null default now(),
    expires_at        timestamptz not null,
    paid_at           timestamptz,
    cancelled_at      timestamptz,
    -- The host on shift at the moment of purchase (filled by the agency side).
    host_id           uuid references host,
    constraint customer_order_amount check (amount_minor = quantity * unit_price_minor - discount_minor),
    constraint customer_order_idempotency unique (buyer_id, idempotency_key),
    constraint customer_order_coupon_used_once unique (coupon_claim_id)
);
create index customer_order_deal_idx on customer_order (deal_id);
create index customer_order_expiry_idx on customer_order (expires_at) where status = 'pending_payment';
create index customer_order_session_idx on customer_order (session_id, created_at);

-- Every change of an order's state.
create table order_event (
    order_event_id  bigint generated always as identity primary key,
    order_id        uuid not null references customer_order,
    from_status     text,
    to_status       text not null,
    detail          jsonb not null default '{}',
    at              timestamptz not null default now()
);
create index order_event_order_idx on order_event (order_id);

create table payment (
    payment_id         uuid primary key,
    provider_event_id  text not null unique,
    order_id           uuid not null references customer_order,
    amount_minor       bigint not null,
    currency           char(3) not null,
    -- `applied` (order paid), `refund_due` (arrived after expiry), `duplicate_order` (already paid).
    outcome            text not null check (outcome in ('applied', 'refund_due', 'duplicate_order')),
    received_at        timestamptz not null default now()
);

create table refund (
    refund_id     uuid primary key,
    order_id      uuid not null references customer_order,
    amount_minor  bigint not null check (amount_minor > 0),
    reason        text not null default '',
    kind          text not null default 'refund' check (kind in ('refund', 'return')),
    created_by    text not null,
    created_at    timestamptz not null default now()
);
create index refund_order_idx on refund (order_id);

-- Room events written in the same transaction as the change they announce,
-- published by whichever node relays first (exactly once: the room's
-- publish script deduplicates by outbox_id).
create table room_outbox (
    outbox_id     bigint generated always as identity primary key,
    session_id    uuid not null,
    event_type    text not null,
    data          jsonb not null,
    state         jsonb not null default '[]',
    created_at    timestamptz not null default now(),
    published_at  timestamptz
);
create index room_outbox_pending_idx on room_outbox (outbox_id) where published_at is null;

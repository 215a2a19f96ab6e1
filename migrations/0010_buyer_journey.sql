-- The buyer's journey: a viewer's shipping address (kept on their profile and
-- copied onto each order), fulfilment (shipped, delivered), returns and order
-- event kinds.

-- One row per viewer who gave an address. The address is a JSON object of
-- validated fields (hawker-commerce `profile.rs`).
create table viewer_profile (
    viewer_id         text primary key check (length(viewer_id) between 1 and 200),
    shipping_address  jsonb,
    updated_at        timestamptz not null default now()
);

alter table customer_order
    add column shipping_address jsonb,
    add column fulfilment text not null default 'unfulfilled'
        check (fulfilment in ('unfulfilled', 'shipped', 'delivered')),
    add column carrier text check (length(carrier) between 1 and 100),
    add column tracking_number text check (length(tracking_number) between 1 and 100),
    add column shipped_at timestamptz,
    add column delivered_at timestamptz,
    add constraint customer_order_shipped_has_tracking
        check ((fulfilment = 'unfulfilled') = (shipped_at is null)
               and (shipped_at is null) = (carrier is null)
               and (shipped_at is null) = (tracking_number is null)),
    add constraint customer_order_delivered_after_shipped
        check ((fulfilment = 'delivered') = (delivered_at is not null)
               and (delivered_at is null or delivered_at >= shipped_at));

-- A viewer's orders, newest first, page by page.
create index customer_order_buyer_idx on customer_order (buyer_id, created_at desc, order_id desc);

-- At most one return per order: requested, then approved (refunded) or refused.
create table order_return (
    order_id      uuid primary key references customer_order,
    reason        text not null check (length(reason) between 1 and 500),
    status        text not null default 'requested' check (status in ('requested', 'approved', 'refused')),
    requested_at  timestamptz not null default now(),
    decided_at    timestamptz,
    decided_by    text,
    note          text not null default '' check (length(note) <= 500),
    refund_id     uuid references refund,
    constraint order_return_decided check ((status = 'requested') = (decided_at is null)),
    constraint order_return_approved_refunded check ((status = 'approved') = (refund_id is not null))
);

-- What an event was, when its statuses alone do not say (`cancelled`,
-- `shipped`, `delivered`, `return_requested`, `return_approved`,
-- `return_refused`); null on the events written before this migration and
-- on those whose status change says it (created, paid, expired, refunded).
alter table order_event add column kind text;

-- Comment-to-buy (issue 17): the host lets viewers order by typing a
-- keyword line in chat ("SOLD 7"). One row per session that was ever
-- configured; no row means off. The orders themselves are ordinary deal
-- orders (customer_order), placed through the purchase path with an
-- idempotency key derived from the chat message.
create table comment_to_buy (
    session_id   uuid primary key references live_session,
    enabled      boolean not null,
    -- Upper-case ASCII letters, 1 to 16 each, 1 to 10 of them.
    keywords     text[] not null check (cardinality(keywords) between 1 and 10),
    -- Chat lines that are orders carry `order: true`.
    mark_orders  boolean not null,
    updated_by   text not null,
    updated_at   timestamptz not null default now()
);

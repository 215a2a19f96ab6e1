-- Live group buys (issue 17, hawker-live `groupbuys/`). The host opens a
-- group buy on a lineup item with price tiers by participants, a minimum
-- group size, a countdown, a per-buyer cap and a stock (units taken from
-- the campaign allocation when it opens). Viewers join with a quantity; when
-- the countdown ends, either every participant gets one order at the final
-- tier's price (`succeeded`), or nobody is charged and the units go back
-- (`failed`). Rules: docs/protocol.md, "Group buys".
create table group_buy (
    group_buy_id      uuid primary key,
    session_id        uuid not null references live_session,
    lineup_item_id    uuid not null references lineup_item,
    sku_id            uuid not null references sku,
    campaign_id       uuid,
    brand_id          uuid not null references brand,
    currency          char(3) not null check (currency ~ '^[A-Z]{3}$'),
    -- [{"min_participants": 1, "price_minor": 3000}, {"min_participants": 10, "price_minor": 2500}, ...]:
    -- the first tier starts at 1 participant, thresholds rise, prices fall.
    tiers             jsonb not null check (jsonb_typeof(tiers) = 'array'),
    min_participants  integer not null check (min_participants between 1 and 1000000),
    per_buyer_cap     integer not null check (per_buyer_cap between 1 and 100),
    stock             integer not null check (stock between 1 and 1000000),
    duration_secs     integer not null check (duration_secs between 10 and 3600),
    starts_at         timestamptz not null,
    ends_at           timestamptz not null,
    status            text not null default 'running'
                      check (status in ('running', 'succeeded', 'failed', 'cancelled')),
    -- Distinct buyers and units joined so far (the batches keep them under the row's lock).
    participants      integer not null default 0 check (participants >= 0),
    units             integer not null default 0 check (units >= 0 and units <= stock),
    -- Participants who joined through another participant's invite code.
    invited           integer not null default 0 check (invited >= 0 and invited <= participants),
    -- Bumped by every batch of joins: the version of the room's `group_buy:<id>` snapshot.
    version           bigint not null default 0,
    -- Once succeeded: the price every participant pays.
    final_price_minor bigint check (final_price_minor > 0),
    settled_at        timestamptz,
    cancel_reason     text check (char_length(cancel_reason) between 1 and 500),
    created_by        text not null,
    created_at        timestamptz not null default now(),
    constraint group_buy_window check (ends_at > starts_at),
    constraint group_buy_settled check ((status = 'running') = (settled_at is null)
                                        and (status = 'succeeded') = (final_price_minor is not null)
                                        and (status = 'cancelled') = (cancel_reason is not null))
);
create index group_buy_session_idx on group_buy (session_id, created_at, group_buy_id);
create index group_buy_due_idx on group_buy (ends_at) where status = 'running';
-- At most one running group buy per lineup item.
create unique index group_buy_one_running_per_item on group_buy (lineup_item_id) where status = 'running';

-- One row per participant: their units (under the cap), who invited them,
-- and their order once the group buy succeeded.
create table group_buy_participant (
    group_buy_id  uuid not null references group_buy,
    buyer_id      text not null,
    units         integer not null check (units > 0),
    joined_at     timestamptz not null,
    -- This participant's invite code (16 hex digits, unique in the group buy),
    -- and the participant whose code brought this one (null: none).
    invite_code   text not null check (invite_code ~ '^[0-9a-f]{16}$'),
    invited_by    text,
    order_id      uuid references customer_order,
    primary key (group_buy_id, buyer_id),
    unique (group_buy_id, invite_code)
);

-- One row per accepted join request, by its idempotency key: a retry with
-- the same key is answered from here; a key reused for another quantity is
-- refused.
create table group_buy_join (
    group_buy_id     uuid not null references group_buy,
    buyer_id         text not null,
    idempotency_key  text not null,
    quantity         integer not null check (quantity > 0),
    request_hash     text not null,
    joined_at        timestamptz not null,
    primary key (group_buy_id, buyer_id, idempotency_key)
);

-- The order source (0014) names its group buy; stock movements can too.
alter table customer_order
    add constraint customer_order_group_buy_fk foreign key (group_buy_id) references group_buy;
create index customer_order_group_buy_idx on customer_order (group_buy_id) where group_buy_id is not null;

alter table stock_movement
    add column group_buy_id uuid,
    drop constraint stock_movement_reason_check,
    add constraint stock_movement_reason_check check (reason in
        ('opening', 'restock', 'adjustment', 'deal_allocated', 'deal_returned', 'order_released',
         'auction_allocated', 'auction_returned', 'giveaway_allocated', 'giveaway_returned',
         'group_buy_allocated', 'group_buy_returned')),
    drop constraint stock_movement_one_source,
    add constraint stock_movement_one_source
        check (num_nonnulls(deal_id, auction_id, giveaway_id, group_buy_id) <= 1),
    drop constraint stock_movement_source_named,
    add constraint stock_movement_source_named
        check ((reason not in ('deal_allocated', 'deal_returned') or deal_id is not null)
               and (reason not in ('auction_allocated', 'auction_returned') or auction_id is not null)
               and (reason not in ('giveaway_allocated', 'giveaway_returned') or giveaway_id is not null)
               and (reason not in ('group_buy_allocated', 'group_buy_returned') or group_buy_id is not null)
               and (reason <> 'order_released' or num_nonnulls(deal_id, auction_id, giveaway_id, group_buy_id) = 1));

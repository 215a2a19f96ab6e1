-- Provably fair giveaways (issue 16). A giveaway commits to a secret seed
-- when it starts (`seed_hash` = sha256(seed), shown to the room), takes
-- entries while its window is open, freezes its entry list when the window
-- closes (`entries_hash`, `entry_count`, announced before the seed is
-- revealed), then draws its winners from the seed and the frozen list only
-- (docs/protocol.md, "Giveaway draws"). The seed is kept here and shown
-- only once drawn (or voided).
create table giveaway (
    giveaway_id       uuid primary key,
    session_id        uuid not null references live_session,
    -- What each winner gets: one unit of a lineup item (a zero-amount order)
    -- or one coupon of one of the session's coupon drops.
    prize_kind        text not null check (prize_kind in ('item', 'coupon')),
    lineup_item_id    uuid references lineup_item,
    sku_id            uuid references sku,
    -- The campaign the item's units were taken under (none for lineup items
    -- older than campaigns).
    campaign_id       uuid,
    coupon_drop_id    uuid references coupon_drop,
    winners           integer not null check (winners between 1 and 100),
    -- `room`: anyone in the room; `buyers`: only those with an order in the session.
    eligibility       text not null check (eligibility in ('room', 'buyers')),
    must_be_present   boolean not null,
    opens_at          timestamptz not null default now(),
    closes_at         timestamptz not null,
    status            text not null default 'open'
                      check (status in ('open', 'closed', 'drawn', 'voided')),
    seed              bytea not null check (length(seed) = 32),
    seed_hash         text not null check (seed_hash ~ '^[0-9a-f]{64}$'),
    -- Set when the window closes and the list is frozen.
    entry_count       integer check (entry_count >= 0),
    entries_hash      text check (entries_hash ~ '^[0-9a-f]{64}$'),
    closed_at         timestamptz,
    drawn_at          timestamptz,
    void_reason       text check (length(void_reason) between 1 and 500),
    voided_by         text,
    voided_at         timestamptz,
    created_by        text not null,
    created_at        timestamptz not null default now(),
    constraint giveaway_prize check (
        case prize_kind
            when 'item' then lineup_item_id is not null and sku_id is not null and coupon_drop_id is null
            else coupon_drop_id is not null and lineup_item_id is null and sku_id is null
        end),
    constraint giveaway_window check (closes_at > opens_at),
    constraint giveaway_frozen check ((status in ('open', 'voided')) or (entry_count is not null and entries_hash is not null and closed_at is not null)),
    constraint giveaway_drawn check ((status = 'drawn') = (drawn_at is not null)),
    constraint giveaway_voided check ((status = 'voided') = (void_reason is not null and voided_at is not null))
);
create index giveaway_session_idx on giveaway (session_id, opens_at);
-- The ticker's two questions: which open giveaways are due to close, which
-- closed ones are due to draw.
create index giveaway_due_idx on giveaway (status, closes_at) where status in ('open', 'closed');

-- One entry per user per giveaway; `entry_id` is the pseudonym published
-- in the frozen list (32 lower-case hex digits, random).
create table giveaway_entry (
    giveaway_id  uuid not null references giveaway,
    user_id      text not null,
    entry_id     text not null check (entry_id ~ '^[0-9a-f]{32}$'),
    entered_at   timestamptz not null default now(),
    constraint giveaway_entry_once primary key (giveaway_id, user_id),
    constraint giveaway_entry_id_unique unique (giveaway_id, entry_id)
);

-- The draw, once per giveaway, with every input it was computed from and
-- its outcome, for audit: anyone holding the seed and the frozen list gets
-- the same candidates (`trace`), the same skipped absentees and winners.
create table giveaway_draw (
    giveaway_id     uuid primary key references giveaway,
    seed            bytea not null,
    entries_hash    text not null,
    entry_count     integer not null,
    winners_wanted  integer not null,
    must_be_present boolean not null,
    -- Entry ids of candidates skipped because their user was not in the
    -- room on any node at the draw, in candidate order.
    absent          jsonb not null,
    -- Entry ids of the winners, in candidate order.
    winners         jsonb not null,
    -- Every candidate: [{"i": counter, "entry_id": ..., "outcome": "winner"|"absent"}].
    trace           jsonb not null,
    algorithm       text not null,
    node            text not null,
    drawn_at        timestamptz not null default now()
);

-- A winner and what they got: an order (item prizes) or a coupon claim.
create table giveaway_winner (
    giveaway_id      uuid not null references giveaway,
    entry_id         text not null,
    user_id          text not null,
    -- 1.. in candidate order.
    rank             integer not null check (rank >= 1),
    order_id         uuid references customer_order,
    coupon_claim_id  uuid references coupon_claim,
    constraint giveaway_winner_pkey primary key (giveaway_id, entry_id),
    constraint giveaway_winner_rank unique (giveaway_id, rank)
);

-- Last: a giveaway order names an existing giveaway (the column is 0014's).
alter table customer_order
    add constraint customer_order_giveaway_fk foreign key (giveaway_id) references giveaway;

-- Live auctions (hawker-live, `auctions/`). One row per auction: its terms,
-- and its standing state (price, leader, the leader's secret maximum), which
-- every bid changes under the row's lock. The bids are `auction_bid`, one row
-- per accepted bid in the auction's one global order (`seq`, from
-- `auction.bid_seq` under the row lock). Ordering rule: docs/protocol.md.
create table auction (
    auction_id          uuid primary key,
    session_id          uuid not null references live_session,
    lineup_item_id      uuid not null references lineup_item,
    sku_id              uuid not null references sku,
    campaign_id         uuid references campaign,
    brand_id            uuid not null references brand,
    currency            char(3) not null check (currency ~ '^[A-Z]{3}$'),
    start_price_minor   bigint not null check (start_price_minor > 0),
    -- [{"below_minor": 2000, "step_minor": 100}, ..., {"below_minor": null, "step_minor": 500}]:
    -- ascending thresholds, the last one open.
    increments          jsonb not null check (jsonb_typeof(increments) = 'array'),
    -- The lowest hammer price that sells (the campaign floor when none was given); null: any.
    reserve_minor       bigint check (reserve_minor > 0),
    reserve_is_floor    boolean not null default false,
    mode                text not null check (mode in ('anti_snipe', 'sudden_death')),
    snipe_window_secs   integer check (snipe_window_secs between 1 and 60),
    duration_secs       integer not null check (duration_secs between 5 and 300),
    quantity            integer not null default 1 check (quantity = 1),
    status              text not null default 'running' check (status in ('running', 'ended', 'voided')),
    starts_at           timestamptz not null,
    ends_at             timestamptz not null,
    -- Accepted bids so far: the last `auction_bid.seq`. Also the version of the
    -- room's `auction:<id>` snapshot field.
    bid_seq             bigint not null default 0 check (bid_seq >= 0),
    price_minor         bigint check (price_minor > 0),
    leader_id           text,
    leader_name         text,
    leader_max_minor    bigint,
    -- `sold`, `no_bids`, `reserve_not_met` once ended.
    outcome             text check (outcome in ('sold', 'no_bids', 'reserve_not_met')),
    winner_id           text,
    hammer_minor        bigint check (hammer_minor > 0),
    order_id            uuid references customer_order,
    void_reason         text check (char_length(void_reason) between 1 and 500),
    voided_by           text,
    ended_at            timestamptz,
    created_by          text not null,
    created_at          timestamptz not null default now(),
    constraint auction_window_of_mode check ((mode = 'anti_snipe') = (snipe_window_secs is not null)),
    constraint auction_leader_whole check ((leader_id is null) = (price_minor is null)
                                           and (leader_id is null) = (leader_max_minor is null)
                                           and (leader_max_minor is null or leader_max_minor >= price_minor)),
    constraint auction_ended_whole check ((status = 'ended') = (outcome is not null)
                                          and (status = 'voided') = (void_reason is not null)
                                          and (status = 'running') = (ended_at is null)),
    constraint auction_sold_whole check ((outcome = 'sold') = (winner_id is not null)
                                         and (winner_id is null) = (hammer_minor is null))
);

create index auction_session_idx on auction (session_id, created_at, auction_id);
create index auction_due_idx on auction (ends_at) where status = 'running';
-- At most one running auction per lineup item.
create unique index auction_one_running_per_item on auction (lineup_item_id) where status = 'running';

-- Accepted bids in the auction's global order. `amount_minor` is what the
-- bidder bid now (at least the minimum acceptable at acceptance), `max_minor`
-- the proxy maximum it carried; `price_after`/`leader_after` the standing state
-- after it (`min_minor` the minimum acceptable then), `extended_to` the new end it caused (anti-snipe), if any.
create table auction_bid (
    auction_id      uuid not null references auction,
    seq             bigint not null check (seq > 0),
    bidder_id       text not null,
    bidder_name     text not null,
    amount_minor    bigint not null check (amount_minor > 0),
    max_minor       bigint not null check (max_minor >= amount_minor),
    min_minor       bigint not null check (amount_minor >= min_minor),
    -- The bidder named the amount (an exact bid); otherwise it was the minimum.
    exact           boolean not null,
    price_after     bigint not null,
    leader_after    text not null,
    accepted_at     timestamptz not null,
    extended_to     timestamptz,
    primary key (auction_id, seq)
);

create index auction_bid_bidder_idx on auction_bid (auction_id, bidder_id);

-- A second-chance offer: the winner's order lapsed (expired or cancelled) and
-- the host offered the unit to the runner-up at their last bid. One per auction.
create table auction_second_chance (
    auction_id        uuid primary key references auction,
    bidder_id         text not null,
    amount_minor      bigint not null check (amount_minor > 0),
    lapsed_order_id   uuid not null references customer_order,
    order_id          uuid not null references customer_order,
    offered_by        text not null,
    offered_at        timestamptz not null default now()
);

-- The order source (0014) names its auction.
alter table customer_order
    add constraint customer_order_auction_fk foreign key (auction_id) references auction;

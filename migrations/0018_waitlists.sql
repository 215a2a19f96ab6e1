-- Waitlists for sold-out deals (issue 17). A deal that sold out has ended
-- (`end_reason = 'sold_out'`), but until its `ends_at` viewers may join its
-- waitlist, in order. Units that come back from its orders (expired or
-- cancelled) are then held for the list instead of going back to the SKU:
-- `held` counts them (out of `sold`), and the next viewer in line gets a
-- private offer of some of them for `commerce.waitlist_hold_secs`. An offer
-- ignored passes to the next; units nobody waits for go back to the SKU as
-- before. Postgres holds the list: it survives node restarts and Redis loss
-- (the admission gate rebuilds its copy of the open offers from here).
alter table deal add column held integer not null default 0;
alter table deal add constraint deal_held_in_quantity check (held >= 0 and sold + held <= quantity);

create table waitlist_entry (
    -- Also the place in line: lower ids were there first.
    waitlist_entry_id bigserial primary key,
    deal_id           uuid not null references deal,
    buyer_id          text not null,
    session_id        uuid not null references live_session,
    -- waiting → offered → bought | passed (the hold ran out); waiting or
    -- offered → left (the viewer left) | closed (the deal's time ran out).
    status            text not null default 'waiting'
                      check (status in ('waiting', 'offered', 'bought', 'passed', 'left', 'closed')),
    offer_units       integer check (offer_units > 0),
    offered_at        timestamptz,
    offer_expires_at  timestamptz,
    order_id          uuid,
    joined_at         timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    constraint waitlist_offer_has_terms check (
        (status <> 'offered') or (offer_units is not null and offer_expires_at is not null))
);
-- One place in line per buyer and deal at a time (a buyer who left or whose
-- offer passed may join again, at the back).
create unique index waitlist_entry_once on waitlist_entry (deal_id, buyer_id)
    where status in ('waiting', 'offered');
create index waitlist_entry_line on waitlist_entry (deal_id, waitlist_entry_id)
    where status in ('waiting', 'offered');
create index waitlist_entry_offer_due on waitlist_entry (offer_expires_at) where status = 'offered';
-- Deals whose held units or list need the ticker.
create index deal_waitlist_held_idx on deal (deal_id) where held > 0;

-- Versions of the room's `deal.waitlist` count, so older counts are skipped.
create sequence waitlist_count_version;

-- The commission accrual worker (hawker-ledger) reads its sources — paid
-- orders, refunds, ended shifts, ended sessions — through the functions of
-- the crates that own them, in (time, id) order, and keeps here how far it
-- has read each kind. `commission_accrual` still says what was accrued.
--
-- Two positions per kind, each a (time, id) key; a scan reads what comes
-- strictly after it (null: from the first):
--   fresh:   the newest source read; each pass reads on from here.
--   settled: every source before it has been accrued, including any whose
--            transaction stamped its time (`now()`, the transaction's start)
--            but committed only after newer ones had been read. The worker
--            moves it up to a margin behind the database's clock (five
--            minutes; transactions end well within it), re-reading that
--            stretch once to pick up such late commits.
create table commission_accrual_cursor (
    kind         text primary key check (kind in ('sale', 'clawback', 'hourly', 'slot_fee')),
    fresh_at     timestamptz,
    fresh_id     uuid,
    settled_at   timestamptz,
    settled_id   uuid,
    updated_at   timestamptz not null default now(),
    constraint commission_accrual_cursor_fresh_key check ((fresh_at is null) = (fresh_id is null)),
    constraint commission_accrual_cursor_settled_key check ((settled_at is null) = (settled_id is null))
);
insert into commission_accrual_cursor (kind) values ('sale'), ('clawback'), ('hourly'), ('slot_fee');

-- For those scans: refunds in time order (hawker_commerce::sales::refunds;
-- paid orders use customer_order_paid_idx), ended shifts and ended sessions
-- (hawker_agency::schedule::ended_shifts, ended_sessions).
create index refund_created_idx on refund (created_at, refund_id);
create index shift_ended_idx on shift (actual_end, shift_id) where actual_end is not null;
create index live_session_ended_idx on live_session (ended_at, session_id)
    where status = 'ended' and ended_at is not null;

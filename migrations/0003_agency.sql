-- The agency side: campaigns (a brand engages an agency), commission terms
-- (versioned, never updated), shifts (who is on air when), attribution of
-- orders to the host on shift, the append-only commission ledger, and the
-- samples behind live session figures.
-- Money is integer minor units; rates are basis points (1/100 of a percent).

create table campaign (
    campaign_id  uuid primary key,
    brand_id     uuid not null references brand,
    agency_id    uuid not null references agency,
    name         text not null check (length(name) between 1 and 200),
    created_by   text not null,
    created_at   timestamptz not null default now()
);
create index campaign_agency_idx on campaign (agency_id);
create index campaign_brand_idx on campaign (brand_id);

alter table live_session add column campaign_id uuid references campaign;

-- Each row is one version of the terms of a campaign or of one session.
-- Versions are never updated or deleted (trigger below) and never backdated,
-- so the terms in force at any past moment stay what they were.
create table commission_terms (
    terms_id           uuid primary key,
    campaign_id        uuid references campaign,
    session_id         uuid references live_session,
    version            integer not null check (version >= 1),
    effective_from     timestamptz not null,
    -- Commission on net sales (order amount after discounts, less refunds).
    percent_bps        integer not null default 0 check (percent_bps between 0 and 10000),
    -- Once per session that ends.
    slot_fee_minor     bigint not null default 0 check (slot_fee_minor >= 0),
    -- Per host, per hour actually on air.
    hourly_rate_minor  bigint not null default 0 check (hourly_rate_minor >= 0),
    -- The hosts' share of every commission; the agency keeps the rest.
    host_share_bps     integer not null check (host_share_bps between 0 and 10000),
    -- Of the slot fee and the hourly rate (percentages are in the order's currency).
    currency           char(3) not null check (currency ~ '^[A-Z]{3}$'),
    created_by         text not null,
    created_at         timestamptz not null default now(),
    constraint commission_terms_one_scope check ((campaign_id is null) <> (session_id is null)),
    constraint commission_terms_not_backdated check (effective_from >= created_at),
    constraint commission_terms_campaign_version unique (campaign_id, version),
    constraint commission_terms_session_version unique (session_id, version)
);
create index commission_terms_campaign_idx on commission_terms (campaign_id, effective_from) where campaign_id is not null;
create index commission_terms_session_idx on commission_terms (session_id, effective_from) where session_id is not null;

-- Who is on air when. Planned times are the booking; actual times are set by
-- go-live, handoffs and the session's end, and drive attribution and hourly pay.
create table shift (
    shift_id       uuid primary key,
    session_id     uuid not null references live_session,
    host_id        uuid not null references host,
    planned_start  timestamptz not null,
    planned_end    timestamptz not null,
    actual_start   timestamptz,
    actual_end     timestamptz,
    cancelled_at   timestamptz,
    created_by     text not null,
    created_at     timestamptz not null default now(),
    constraint shift_planned_end_after_start check (planned_end > planned_start),
    constraint shift_actual_end_after_start
        check (actual_end is null or (actual_start is not null and actual_end >= actual_start)),
    constraint shift_cancelled_never_started check (cancelled_at is null or actual_start is null),
    -- A host is never booked twice at once, whatever the session or agency.
    constraint shift_host_no_overlap
        exclude using gist (host_id with =, tstzrange(planned_start, planned_end) with &&)
        where (cancelled_at is null),
    -- One host on shift per session at a time: attribution is unambiguous.
    constraint shift_session_no_overlap
        exclude using gist (session_id with =, tstzrange(planned_start, planned_end) with &&)
        where (cancelled_at is null),
    -- The same for what actually happened.
    constraint shift_host_on_air_once
        exclude using gist (host_id with =, tstzrange(actual_start, actual_end) with &&)
        where (actual_start is not null),
    constraint shift_session_on_air_once
        exclude using gist (session_id with =, tstzrange(actual_start, actual_end) with &&)
        where (actual_start is not null)
);
create index shift_session_idx on shift (session_id, actual_start);
create index shift_host_idx on shift (host_id, planned_start);

-- The host on shift in `p_session` at `p_at`: the shift actually on air then
-- (half-open: a handoff at 14:00:00 belongs to the incoming host); for a
-- session where no shift has started yet, the planned shift. Null if nobody.
-- Called by the order insert of the settlement writer (hawker-commerce).
create function host_on_shift(p_session uuid, p_at timestamptz) returns uuid
language sql stable parallel safe as $$
    select coalesce(
        (select s.host_id from shift s
          where s.session_id = p_session
            and s.actual_start <= p_at
            and (s.actual_end is null or p_at < s.actual_end)
          order by s.actual_start desc
          limit 1),
        (select s.host_id from shift s
          where s.session_id = p_session
            and s.cancelled_at is null
            and s.planned_start <= p_at and p_at < s.planned_end
            and not exists (select 1 from shift x
                             where x.session_id = p_session and x.actual_start is not null)
          limit 1))
$$;

-- The terms version in force for `p_session` at `p_at`: the session's own
-- terms if a version is in force, otherwise its campaign's. Null if none.
create function terms_in_force(p_session uuid, p_at timestamptz) returns uuid
language sql stable parallel safe as $$
    select terms_id from (
        select t.terms_id, 0 as scope, t.effective_from, t.version
          from commission_terms t
         where t.session_id = p_session and t.effective_from <= p_at
        union all
        select t.terms_id, 1 as scope, t.effective_from, t.version
          from commission_terms t join live_session s on s.campaign_id = t.campaign_id
         where s.session_id = p_session and t.effective_from <= p_at
    ) candidates
    order by scope, effective_from desc, version desc
    limit 1
$$;

-- What the accrual worker has processed: one row per source event, written in
-- the same transaction as its entries, so each is accrued exactly once.
-- `terms_id` is null when no terms were in force (no entries).
create table commission_accrual (
    kind        text not null check (kind in ('sale', 'clawback', 'hourly', 'slot_fee')),
    -- order_id (sale), refund_id (clawback), shift_id (hourly), session_id (slot_fee).
    source_id   uuid not null,
    terms_id    uuid references commission_terms,
    accrued_at  timestamptz not null default now(),
    primary key (kind, source_id)
);

-- The ledger. Append-only: a statement is a sum over it, always recomputable.
create table commission_entry (
    commission_entry_id  bigint generated always as identity primary key,
    kind                 text not null check (kind in ('sale', 'clawback', 'hourly', 'slot_fee')),
    source_id            uuid not null,
    -- Who is paid: the agency, or the host named in host_id.
    party                text not null check (party in ('agency', 'host')),
    agency_id            uuid not null references agency,
    host_id              uuid references host,
    session_id           uuid not null references live_session,
    order_id             uuid references customer_order,
    refund_id            uuid references refund,
    shift_id             uuid references shift,
    terms_id             uuid not null references commission_terms,
    -- Positive accrues, negative claws back.
    amount_minor         bigint not null,
    currency             char(3) not null,
    -- How it was computed (amounts, rates, seconds), for audit.
    detail               jsonb not null default '{}',
    -- When it happened: paid_at, the refund, the shift's or session's end.
    occurred_at          timestamptz not null,
    recorded_at          timestamptz not null default now(),
    constraint commission_entry_host_party check (party <> 'host' or host_id is not null),
    constraint commission_entry_once unique nulls not distinct (kind, source_id, party, host_id)
);
create index commission_entry_agency_idx on commission_entry (agency_id, occurred_at);
create index commission_entry_host_idx on commission_entry (host_id, occurred_at) where party = 'host';
create index commission_entry_session_idx on commission_entry (session_id);

create function agency_append_only() returns trigger language plpgsql as $$
begin
    raise exception '% is append-only', tg_table_name using errcode = 'P0001';
end
$$;
create trigger commission_entry_append_only before update or delete on commission_entry
    for each row execute function agency_append_only();
create trigger commission_accrual_append_only before update or delete on commission_accrual
    for each row execute function agency_append_only();
create trigger commission_terms_append_only before update or delete on commission_terms
    for each row execute function agency_append_only();

-- Helps the accrual worker find paid orders.
create index customer_order_paid_idx on customer_order (paid_at) where paid_at is not null;

-- Live figures: the room's counters, sampled from Redis by a worker while a
-- session is live (and once more just after it ends), so figures outlive the
-- room. `last_offset` is how far the room's event stream was read.
create table session_room_tally (
    session_id      uuid primary key references live_session,
    epoch           text not null default '',
    last_offset     bigint not null default 0,
    chat_messages   bigint not null default 0,
    viewers         bigint not null default 0,
    peak_viewers    bigint not null default 0,
    likes           bigint not null default 0,
    -- Times the stream had moved past what was read (counts are then lower bounds).
    stream_gaps     integer not null default 0,
    sampled_at      timestamptz
);

-- Cumulative counters over time, for per-shift and per-deal figures.
create table session_sample (
    session_id     uuid not null references live_session,
    sampled_at     timestamptz not null,
    viewers        bigint not null,
    likes          bigint not null,
    chat_messages  bigint not null,
    primary key (session_id, sampled_at)
);

-- Viewers identified in the room (presence, chat) or by buying.
create table session_viewer (
    session_id     uuid not null references live_session,
    user_id        text not null,
    first_seen_at  timestamptz not null default now(),
    primary key (session_id, user_id)
);

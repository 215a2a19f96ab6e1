-- Foundation: the parties and the sessions they run.
-- Tables are singular and keyed by <table>_id (UUIDs). Money is integer minor units.
-- Migrations are forward-only: never edit one that has landed; add a new one.

create extension if not exists btree_gist;

create table agency (
    agency_id   uuid primary key,
    name        text not null check (length(name) between 1 and 200),
    created_at  timestamptz not null default now()
);

create table brand (
    brand_id    uuid primary key,
    name        text not null check (length(name) between 1 and 200),
    created_at  timestamptz not null default now()
);

create table host (
    host_id       uuid primary key,
    handle        text not null unique check (handle ~ '^[a-z0-9_]{2,32}$'),
    display_name  text not null check (length(display_name) between 1 and 100),
    created_at    timestamptz not null default now()
);

-- Roster membership, dated. A host belongs to at most one agency at a time.
create table agency_host (
    agency_id  uuid not null references agency,
    host_id    uuid not null references host,
    joined_at  timestamptz not null default now(),
    left_at    timestamptz,
    primary key (agency_id, host_id, joined_at),
    constraint agency_host_left_after_joined check (left_at is null or left_at > joined_at),
    constraint agency_host_one_agency_at_a_time
        exclude using gist (host_id with =, tstzrange(joined_at, left_at) with &&)
);

create table product (
    product_id   uuid primary key,
    brand_id     uuid not null references brand,
    name         text not null check (length(name) between 1 and 200),
    description  text not null default '',
    created_at   timestamptz not null default now()
);
create index product_brand_idx on product (brand_id);

create table sku (
    sku_id         uuid primary key,
    product_id     uuid not null references product,
    code           text not null check (length(code) between 1 and 64),
    name           text not null check (length(name) between 1 and 200),
    price_minor    bigint not null check (price_minor > 0),
    currency       char(3) not null check (currency ~ '^[A-Z]{3}$'),
    stock_on_hand  integer not null check (stock_on_hand >= 0),
    created_at     timestamptz not null default now(),
    unique (product_id, code)
);

create table live_session (
    session_id     uuid primary key,
    agency_id      uuid not null references agency,
    brand_id       uuid references brand,
    title          text not null check (length(title) between 1 and 200),
    planned_start  timestamptz not null,
    planned_end    timestamptz not null,
    status         text not null default 'scheduled'
                   check (status in ('scheduled', 'live', 'ended', 'cancelled')),
    started_at     timestamptz,
    ended_at       timestamptz,
    created_at     timestamptz not null default now(),
    constraint live_session_planned_end_after_start check (planned_end > planned_start)
);
create index live_session_agency_start_idx on live_session (agency_id, planned_start);

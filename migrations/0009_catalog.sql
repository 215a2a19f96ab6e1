-- The brand catalog and campaigns that tie brands to agencies.
--
-- Products get a status and images; SKUs get attributes, images and their
-- brand (a SKU code is unique per brand: the key of idempotent imports).
-- Stock on hand changes only through stock movements: inserting a movement
-- moves the SKU's total in the same statement (trigger), a direct change of
-- the total is refused, and movements are never updated or deleted, so
-- `sku.stock_on_hand = sum(stock_movement.delta)` always holds.
-- Campaigns get a proposal/acceptance, dates, a below-floor permission and
-- their SKUs (`campaign_sku`) with a price floor and an optional allocation.

alter table product
    add column status text not null default 'active'
        check (status in ('draft', 'active', 'archived')),
    add column image_urls text[] not null default '{}'
        check (cardinality(image_urls) <= 10),
    add column updated_at timestamptz not null default now(),
    add constraint product_brand_unique unique (product_id, brand_id);

alter table sku
    add column brand_id uuid,
    add column attributes jsonb not null default '{}'
        check (jsonb_typeof(attributes) = 'object'),
    add column image_urls text[] not null default '{}'
        check (cardinality(image_urls) <= 10),
    add column updated_at timestamptz not null default now();
update sku set brand_id = p.brand_id from product p where p.product_id = sku.product_id;
alter table sku
    alter column brand_id set not null,
    -- A SKU's brand is its product's brand.
    add constraint sku_product_brand foreign key (product_id, brand_id) references product (product_id, brand_id),
    add constraint sku_brand_code unique (brand_id, code);
create index sku_product_idx on sku (product_id);

create table stock_movement (
    stock_movement_id  bigint generated always as identity primary key,
    sku_id             uuid not null references sku,
    delta              integer not null check (delta <> 0),
    -- opening: stock before movements were recorded, or given at creation;
    -- restock / adjustment: the brand; deal_allocated / deal_returned /
    -- order_released: a deal takes its units and gives back what it did not sell.
    reason             text not null check (reason in
                         ('opening', 'restock', 'adjustment', 'deal_allocated', 'deal_returned', 'order_released')),
    note               text not null default '' check (length(note) <= 500),
    actor              text not null,
    deal_id            uuid,
    campaign_id        uuid references campaign,
    -- The SKU's stock on hand after this movement (set by the trigger).
    stock_after        integer not null default 0,
    at                 timestamptz not null default now()
);
create index stock_movement_sku_idx on stock_movement (sku_id, stock_movement_id);

-- Stock before this migration becomes an opening movement.
insert into stock_movement (sku_id, delta, reason, note, actor, stock_after)
select sku_id, stock_on_hand, 'opening', 'stock before movements were recorded', 'migration', stock_on_hand
  from sku where stock_on_hand > 0;

-- A movement moves the SKU's total (locking the SKU row); the total's own
-- check (`stock_on_hand >= 0`) refuses a movement below zero.
create function stock_movement_apply() returns trigger language plpgsql as $$
begin
    update sku set stock_on_hand = stock_on_hand + new.delta, updated_at = now()
     where sku_id = new.sku_id
    returning stock_on_hand into new.stock_after;
    if not found then
        raise exception 'no such sku %', new.sku_id using errcode = '23503';
    end if;
    return new;
end $$;
create trigger stock_movement_apply before insert on stock_movement
    for each row execute function stock_movement_apply();

create function stock_movement_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'stock movements are never updated or deleted' using errcode = '23514',
        constraint = 'stock_movement_append_only';
end $$;
create trigger stock_movement_append_only before update or delete on stock_movement
    for each row execute function stock_movement_append_only();

-- Only the movement trigger (one level down) may change a SKU's total, and
-- a new SKU starts at zero.
create function sku_stock_guard() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        if new.stock_on_hand <> 0 then
            raise exception 'a new sku starts with no stock; record a stock movement' using errcode = '23514',
                constraint = 'sku_stock_by_movement';
        end if;
    elsif new.stock_on_hand is distinct from old.stock_on_hand and pg_trigger_depth() < 2 then
        raise exception 'stock_on_hand changes only through stock_movement' using errcode = '23514',
            constraint = 'sku_stock_by_movement';
    end if;
    return new;
end $$;
create trigger sku_stock_guard before insert or update on sku
    for each row execute function sku_stock_guard();

-- Campaigns: proposed by one side, accepted by the other; dated.
alter table campaign
    add column status text not null default 'accepted'
        check (status in ('proposed', 'accepted', 'declined')),
    add column proposed_by text not null default 'admin'
        check (proposed_by in ('brand', 'agency', 'admin')),
    add column starts_at timestamptz,
    add column ends_at timestamptz,
    add column allow_below_floor boolean not null default false,
    add column decided_by text,
    add column decided_at timestamptz;
update campaign set starts_at = created_at, decided_at = created_at, decided_by = created_by;
alter table campaign
    alter column starts_at set not null,
    alter column status set default 'proposed',
    add constraint campaign_ends_after_start check (ends_at is null or ends_at > starts_at);

-- A campaign's SKUs: the price floor (minor units of the SKU's currency) and,
-- optionally, the units allocated to it. `units_taken` counts units its deals
-- hold or sold (a deal's unsold units come back); with an allocation it can
-- never pass it, and other campaigns cannot take the allocation's rest.
create table campaign_sku (
    campaign_id        uuid not null references campaign,
    sku_id             uuid not null references sku,
    floor_price_minor  bigint not null check (floor_price_minor > 0),
    allocated_units    integer check (allocated_units between 0 and 1000000000),
    units_taken        integer not null default 0,
    primary key (campaign_id, sku_id),
    constraint campaign_sku_within_allocation
        check (units_taken >= 0 and (allocated_units is null or units_taken <= allocated_units))
);
create index campaign_sku_sku_idx on campaign_sku (sku_id);

-- The campaign a lineup item and a deal sell under, and the deal's floor per unit
-- (null: no floor, because the brand allowed going below it or the row predates campaigns).
alter table lineup_item add column campaign_id uuid references campaign;
alter table deal
    add column campaign_id uuid references campaign,
    add column floor_price_minor bigint check (floor_price_minor > 0);

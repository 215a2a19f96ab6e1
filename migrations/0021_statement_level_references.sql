-- An order's references are checked once per statement instead of once per
-- row (issue 12).
--
-- A foreign key checks each inserted row on its own: Postgres queues one
-- trigger event per key per row and, for a row whose key is set, starts and
-- runs a `select ... for key share` plan for it. A settlement batch inserts a
-- few hundred orders of one deal, so it ran that plan a few hundred times to
-- lock and find the same deal row, and queued six events per order (one per
-- key, most of them null). Profiled on the stampede, that was 27 % of
-- Postgres' CPU per committed order.
--
-- The same rules now hold through statement-level triggers, which see every
-- row a statement inserted (a transition table) and check each distinct
-- reference once:
--
-- - `customer_order`: its deal, auction, giveaway or group buy (with the
--   session, lineup item and SKU that source has: the composite keys of
--   0020), its coupon claim and its host must exist. An error names the
--   foreign key it replaces (`customer_order_deal_source`, ...), with SQLSTATE
--   23503 (foreign_key_violation), as before.
-- - `deal_buyer`: its deal must exist (`deal_buyer_deal_id_fkey`).
-- - As a foreign key does, the check first locks each referenced row
--   `for key share`, so a concurrent delete (or key change) of that row
--   waits for the inserting transaction and then finds its rows.
-- - An update of an order's references (none in the code; a hand-made
--   change) is checked per row, only when one of them changes.
-- - The referenced side: deleting, or changing the key of, a deal, auction,
--   giveaway, group buy, coupon claim or host that an order (or a deal's
--   buyer row) names is refused, as `no action` foreign keys refused it.
--
-- Nothing in the code deletes any of these rows; the guards keep hand-made
-- changes honest.

alter table customer_order
    drop constraint customer_order_deal_source,
    drop constraint customer_order_auction_source,
    drop constraint customer_order_giveaway_source,
    drop constraint customer_order_group_buy_source,
    drop constraint customer_order_coupon_claim_id_fkey,
    drop constraint customer_order_host_id_fkey;
alter table deal_buyer drop constraint deal_buyer_deal_id_fkey;

-- What an order names: one value per distinct set of references of the
-- rows a statement wrote.
create type order_refs as (
    deal_id uuid, auction_id uuid, giveaway_id uuid, group_buy_id uuid,
    session_id uuid, lineup_item_id uuid, sku_id uuid, coupon_claim_id uuid, host_id uuid
);

-- The first of `refs` that names nothing, as the name of the foreign key the
-- check replaced; null if none. Each referenced row is locked `for key share`
-- first. Its queries take `refs` as a parameter, so their plans are made once
-- per connection (generic plans: an array's length does not change them).
create function order_reference_missing(refs order_refs[]) returns text
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
declare
    missing text;
begin
    perform 1 from deal d where d.deal_id in (select r.deal_id from unnest(refs) r) for key share of d;
    perform 1 from auction a where a.auction_id in (select r.auction_id from unnest(refs) r) for key share of a;
    perform 1 from giveaway g where g.giveaway_id in (select r.giveaway_id from unnest(refs) r) for key share of g;
    perform 1 from group_buy b where b.group_buy_id in (select r.group_buy_id from unnest(refs) r) for key share of b;
    perform 1 from coupon_claim c where c.coupon_claim_id in (select r.coupon_claim_id from unnest(refs) r)
        for key share of c;
    perform 1 from host h where h.host_id in (select r.host_id from unnest(refs) r) for key share of h;
    select case
               when r.deal_id is not null and not exists (
                   select 1 from deal d
                    where (d.deal_id, d.session_id, d.lineup_item_id, d.sku_id)
                        = (r.deal_id, r.session_id, r.lineup_item_id, r.sku_id))
                   then 'customer_order_deal_source'
               when r.auction_id is not null and not exists (
                   select 1 from auction a
                    where (a.auction_id, a.session_id, a.lineup_item_id, a.sku_id)
                        = (r.auction_id, r.session_id, r.lineup_item_id, r.sku_id))
                   then 'customer_order_auction_source'
               when r.giveaway_id is not null and not exists (
                   select 1 from giveaway g
                    where (g.giveaway_id, g.session_id, g.lineup_item_id, g.sku_id)
                        = (r.giveaway_id, r.session_id, r.lineup_item_id, r.sku_id))
                   then 'customer_order_giveaway_source'
               when r.group_buy_id is not null and not exists (
                   select 1 from group_buy b
                    where (b.group_buy_id, b.session_id, b.lineup_item_id, b.sku_id)
                        = (r.group_buy_id, r.session_id, r.lineup_item_id, r.sku_id))
                   then 'customer_order_group_buy_source'
               when r.coupon_claim_id is not null and not exists (
                   select 1 from coupon_claim c where c.coupon_claim_id = r.coupon_claim_id)
                   then 'customer_order_coupon_claim_id_fkey'
               when r.host_id is not null and not exists (select 1 from host h where h.host_id = r.host_id)
                   then 'customer_order_host_id_fkey'
           end as name
      into missing
      from unnest(refs) r
     order by name nulls last
     limit 1;
    return missing;
end $$;

-- After an insert (statement level: `new_rows`, read once) or a change of
-- an order's references (row level: `new`).
create function order_references_exist() returns trigger
language plpgsql as $$
declare
    missing text;
begin
    if tg_level = 'STATEMENT' then
        missing := order_reference_missing(array(
            select distinct row(n.deal_id, n.auction_id, n.giveaway_id, n.group_buy_id, n.session_id,
                                n.lineup_item_id, n.sku_id, n.coupon_claim_id, n.host_id)::order_refs
              from new_rows n));
    else
        missing := order_reference_missing(array[row(new.deal_id, new.auction_id, new.giveaway_id,
            new.group_buy_id, new.session_id, new.lineup_item_id, new.sku_id, new.coupon_claim_id,
            new.host_id)::order_refs]);
    end if;
    if missing is not null then
        raise foreign_key_violation using
            message = format('insert or update on table "customer_order" violates foreign key constraint "%s"',
                             missing),
            constraint = missing,
            table = 'customer_order';
    end if;
    return null;
end $$;

create trigger customer_order_references
    after insert on customer_order
    referencing new table as new_rows
    for each statement execute function order_references_exist();

create trigger customer_order_references_changed
    after update on customer_order
    for each row
    when ((old.deal_id, old.auction_id, old.giveaway_id, old.group_buy_id, old.session_id, old.lineup_item_id,
           old.sku_id, old.coupon_claim_id, old.host_id)
          is distinct from
          (new.deal_id, new.auction_id, new.giveaway_id, new.group_buy_id, new.session_id, new.lineup_item_id,
           new.sku_id, new.coupon_claim_id, new.host_id))
    execute function order_references_exist();

-- The same for a deal's buyer rows: their deal exists.
create function deal_buyer_deal_exists() returns trigger
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
declare
    deals uuid[];
begin
    if tg_level = 'STATEMENT' then
        deals := array(select distinct n.deal_id from new_rows n);
    else
        deals := array[new.deal_id];
    end if;
    perform 1 from deal d where d.deal_id = any(deals) for key share of d;
    if exists (select 1 from unnest(deals) x(deal_id)
                where not exists (select 1 from deal d where d.deal_id = x.deal_id)) then
        raise foreign_key_violation using
            message = 'insert or update on table "deal_buyer" violates foreign key constraint "deal_buyer_deal_id_fkey"',
            constraint = 'deal_buyer_deal_id_fkey',
            table = 'deal_buyer';
    end if;
    return null;
end $$;

create trigger deal_buyer_deal
    after insert on deal_buyer
    referencing new table as new_rows
    for each statement execute function deal_buyer_deal_exists();

create trigger deal_buyer_deal_changed
    after update on deal_buyer
    for each row when (old.deal_id is distinct from new.deal_id)
    execute function deal_buyer_deal_exists();

-- The referenced side: a row still named by an order (or a deal by its
-- buyer rows) is neither deleted nor re-keyed. tg_argv: the column holding
-- its id (the same name in `customer_order`), then the name of the order's
-- foreign key it replaces.
create function order_reference_kept() returns trigger
language plpgsql as $$
declare
    id uuid := (to_jsonb(old) ->> tg_argv[0])::uuid;
    orders bigint;
    kept text;
begin
    execute format('select 1 from customer_order where %I = $1 limit 1', tg_argv[0]) using id;
    get diagnostics orders = row_count;
    if orders > 0 then
        kept := tg_argv[1];
    elsif tg_table_name = 'deal'
          and (tg_op = 'DELETE' or (to_jsonb(new) ->> 'deal_id')::uuid is distinct from id)
          and exists (select 1 from deal_buyer b where b.deal_id = id) then
        kept := 'deal_buyer_deal_id_fkey';
    else
        return null;
    end if;
    raise foreign_key_violation using
        message = format('update or delete on table "%s" violates foreign key constraint "%s"', tg_table_name, kept),
        constraint = kept,
        table = tg_table_name;
end $$;

create trigger deal_kept after delete on deal
    for each row execute function order_reference_kept('deal_id', 'customer_order_deal_source');
create trigger deal_key_kept after update on deal
    for each row
    when ((old.deal_id, old.session_id, old.lineup_item_id, old.sku_id)
          is distinct from (new.deal_id, new.session_id, new.lineup_item_id, new.sku_id))
    execute function order_reference_kept('deal_id', 'customer_order_deal_source');

create trigger auction_kept after delete on auction
    for each row execute function order_reference_kept('auction_id', 'customer_order_auction_source');
create trigger auction_key_kept after update on auction
    for each row
    when ((old.auction_id, old.session_id, old.lineup_item_id, old.sku_id)
          is distinct from (new.auction_id, new.session_id, new.lineup_item_id, new.sku_id))
    execute function order_reference_kept('auction_id', 'customer_order_auction_source');

create trigger giveaway_kept after delete on giveaway
    for each row execute function order_reference_kept('giveaway_id', 'customer_order_giveaway_source');
create trigger giveaway_key_kept after update on giveaway
    for each row
    when ((old.giveaway_id, old.session_id, old.lineup_item_id, old.sku_id)
          is distinct from (new.giveaway_id, new.session_id, new.lineup_item_id, new.sku_id))
    execute function order_reference_kept('giveaway_id', 'customer_order_giveaway_source');

create trigger group_buy_kept after delete on group_buy
    for each row execute function order_reference_kept('group_buy_id', 'customer_order_group_buy_source');
create trigger group_buy_key_kept after update on group_buy
    for each row
    when ((old.group_buy_id, old.session_id, old.lineup_item_id, old.sku_id)
          is distinct from (new.group_buy_id, new.session_id, new.lineup_item_id, new.sku_id))
    execute function order_reference_kept('group_buy_id', 'customer_order_group_buy_source');

create trigger coupon_claim_kept after delete on coupon_claim
    for each row execute function order_reference_kept('coupon_claim_id', 'customer_order_coupon_claim_id_fkey');
create trigger coupon_claim_key_kept after update on coupon_claim
    for each row when (old.coupon_claim_id is distinct from new.coupon_claim_id)
    execute function order_reference_kept('coupon_claim_id', 'customer_order_coupon_claim_id_fkey');

create trigger host_kept after delete on host
    for each row execute function order_reference_kept('host_id', 'customer_order_host_id_fkey');
create trigger host_key_kept after update on host
    for each row when (old.host_id is distinct from new.host_id)
    execute function order_reference_kept('host_id', 'customer_order_host_id_fkey');

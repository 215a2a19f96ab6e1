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
-- - As a foreign key does, the lookup of each referenced row locks it
--   `for key share`, so a concurrent delete (or key change) of that row
--   waits for the inserting transaction and then finds its rows, and an
--   insert racing a delete waits for it and then finds no row.
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

-- What an order names.
create type order_refs as (
    deal_id uuid, auction_id uuid, giveaway_id uuid, group_buy_id uuid,
    session_id uuid, lineup_item_id uuid, sku_id uuid, coupon_claim_id uuid, host_id uuid
);

-- After an insert (statement level: the rows in `new_rows`) or a change of
-- an order's references (row level: `new`): each distinct set of references
-- is looked up once, its rows locked `for key share`. Most statements name
-- one set (a single order, or a settlement batch of one deal's orders), so
-- that set is read from the first row and the distinct sets are collected
-- only when another row differs. Every query here has a plan kept per
-- connection; a single-row insert pays a few tens of µs more than the
-- foreign keys cost it, a batch of a few hundred orders a few hundred
-- lookups fewer.
create function order_references_exist() returns trigger
language plpgsql as $$
declare
    refs order_refs[];
    r order_refs;
    rows_written bigint;
    missing text;
begin
    if tg_level = 'ROW' then
        refs := array[row(new.deal_id, new.auction_id, new.giveaway_id, new.group_buy_id, new.session_id,
                          new.lineup_item_id, new.sku_id, new.coupon_claim_id, new.host_id)::order_refs];
    else
        -- The common statement names one set of references (one row, or a
        -- batch of one deal's orders): read it from the first row, and
        -- collect the distinct sets only if another row differs.
        select n.deal_id, n.auction_id, n.giveaway_id, n.group_buy_id, n.session_id, n.lineup_item_id,
               n.sku_id, n.coupon_claim_id, n.host_id, count(*) over ()
          into r.deal_id, r.auction_id, r.giveaway_id, r.group_buy_id, r.session_id, r.lineup_item_id,
               r.sku_id, r.coupon_claim_id, r.host_id, rows_written
          from new_rows n
         limit 1;
        if not found then
            return null;
        end if;
        if rows_written > 1 and exists (
            select 1 from new_rows n
             where (n.deal_id, n.auction_id, n.giveaway_id, n.group_buy_id, n.session_id, n.lineup_item_id,
                    n.sku_id, n.coupon_claim_id, n.host_id)
                   is distinct from
                   (r.deal_id, r.auction_id, r.giveaway_id, r.group_buy_id, r.session_id, r.lineup_item_id,
                    r.sku_id, r.coupon_claim_id, r.host_id)) then
            refs := array(select distinct row(n.deal_id, n.auction_id, n.giveaway_id, n.group_buy_id, n.session_id,
                                              n.lineup_item_id, n.sku_id, n.coupon_claim_id, n.host_id)::order_refs
                            from new_rows n);
        else
            refs := array[r];
        end if;
    end if;
    foreach r in array refs loop
        if r.deal_id is not null then
            perform 1 from deal d
             where (d.deal_id, d.session_id, d.lineup_item_id, d.sku_id) = (r.deal_id, r.session_id, r.lineup_item_id, r.sku_id)
               for key share;
            if not found then
                missing := 'customer_order_deal_source';
            end if;
        end if;
        if r.auction_id is not null and missing is null then
            perform 1 from auction a
             where (a.auction_id, a.session_id, a.lineup_item_id, a.sku_id) = (r.auction_id, r.session_id, r.lineup_item_id, r.sku_id)
               for key share;
            if not found then
                missing := 'customer_order_auction_source';
            end if;
        end if;
        if r.giveaway_id is not null and missing is null then
            perform 1 from giveaway g
             where (g.giveaway_id, g.session_id, g.lineup_item_id, g.sku_id) = (r.giveaway_id, r.session_id, r.lineup_item_id, r.sku_id)
               for key share;
            if not found then
                missing := 'customer_order_giveaway_source';
            end if;
        end if;
        if r.group_buy_id is not null and missing is null then
            perform 1 from group_buy b
             where (b.group_buy_id, b.session_id, b.lineup_item_id, b.sku_id) = (r.group_buy_id, r.session_id, r.lineup_item_id, r.sku_id)
               for key share;
            if not found then
                missing := 'customer_order_group_buy_source';
            end if;
        end if;
        if r.coupon_claim_id is not null and missing is null then
            perform 1 from coupon_claim c where c.coupon_claim_id = r.coupon_claim_id for key share;
            if not found then
                missing := 'customer_order_coupon_claim_id_fkey';
            end if;
        end if;
        if r.host_id is not null and missing is null then
            perform 1 from host h where h.host_id = r.host_id for key share;
            if not found then
                missing := 'customer_order_host_id_fkey';
            end if;
        end if;
        if missing is not null then
            raise foreign_key_violation using
                message = format('insert or update on table "customer_order" violates foreign key constraint "%s"',
                                 missing),
                constraint = missing,
                table = 'customer_order';
        end if;
    end loop;
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
language plpgsql as $$
declare
    first_deal uuid;
    deals uuid[];
    rows_written bigint;
    locked bigint;
begin
    if tg_level = 'ROW' then
        deals := array[new.deal_id];
    else
        select n.deal_id, count(*) over () into first_deal, rows_written from new_rows n limit 1;
        if not found then
            return null;
        end if;
        if rows_written > 1 and exists (select 1 from new_rows n where n.deal_id <> first_deal) then
            deals := array(select distinct n.deal_id from new_rows n);
        else
            deals := array[first_deal];
        end if;
    end if;
    perform 1 from deal d where d.deal_id = any(deals) for key share of d;
    get diagnostics locked = row_count;
    if locked < cardinality(deals) then
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

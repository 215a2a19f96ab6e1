-- Setup for the one-transaction-per-order baseline (one_tx_per_order.sql):
-- a deal whose single row every pgbench transaction updates, on the seeded
-- session and SKU, in the same schema (indexes, constraints, foreign keys)
-- as the settlement writer uses. Run `hawker seed` on the database first.
-- Idempotent: it deletes the previous baseline orders and resets the deal.
--
--   psql -h 127.0.0.1 -U postgres -d hawker_stampede -f loadtest/pgbench/setup.sql
--   pgbench -n -h 127.0.0.1 -U postgres -c 8 -j 2 -T 10 -f loadtest/pgbench/one_tx_per_order.sql hawker_stampede

insert into lineup_item (lineup_item_id, session_id, link_number, sku_id)
values ('00000000-0000-4000-8000-0000000bb001', '00000000-0000-4000-8000-00000000d001', 9999,
        '00000000-0000-4000-8000-00000001e001')
on conflict (lineup_item_id) do nothing;

delete from order_event
 where order_id in (select order_id from customer_order where deal_id = '00000000-0000-4000-8000-0000000bb002');
delete from customer_order where deal_id = '00000000-0000-4000-8000-0000000bb002';

-- 10 million units: it never sells out during a run, so every transaction commits an order.
insert into deal (deal_id, session_id, lineup_item_id, sku_id, price_minor, currency, quantity, per_buyer_cap,
                  starts_at, ends_at, status, created_by)
select '00000000-0000-4000-8000-0000000bb002', '00000000-0000-4000-8000-00000000d001',
       '00000000-0000-4000-8000-0000000bb001', sku_id, 999, currency, 10000000, 10000000,
       now(), now() + interval '2 hours', 'live', 'pgbench'
  from sku where sku_id = '00000000-0000-4000-8000-00000001e001'
on conflict (deal_id) do update
   set sold = 0, stock_version = 0, status = 'live', end_reason = null, ended_at = null,
       starts_at = now(), ends_at = now() + interval '2 hours';

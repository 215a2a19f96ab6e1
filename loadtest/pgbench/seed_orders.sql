-- Fills customer_order with :count old, paid orders of an earlier deal, each by
-- its own buyer, so a stampede can be measured against a big order table
-- (issue 12: "committed orders/s with 0 and with 5,000,000 existing orders").
--
--   psql -h 127.0.0.1 -U postgres -d hawker_stampede -v count=5000000 -f loadtest/pgbench/seed_orders.sql
--   hawker-loadtest stampede --spawn … --mode commit --keep-orders
--
-- The rows are cancelled and spread over the last 30 days: every index of the
-- table but the partial ones gets its entries, and no background work picks
-- them up (paid orders would each be accrued a commission by the ledger,
-- 5 million of them during the measurement; pending ones would be expired).
-- The deal is not the baseline's (setup.sql deletes that deal's orders).
insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                            unit_price_minor, discount_minor, amount_minor, currency, idempotency_key,
                            request_hash, created_at, expires_at, cancelled_at, status)
select gen_random_uuid(), d.deal_id, d.session_id, d.lineup_item_id, d.sku_id, 'old-' || g, 1,
       d.price_minor, 0, d.price_minor, d.currency, 'seed-' || g, 'seed',
       now() - interval '30 days' + g * interval '500 microseconds',
       now() - interval '29 days', now() - interval '29 days', 'cancelled'
  from generate_series(1, :count) as g,
       (select * from deal where price_minor > 0 and created_by <> 'pgbench' order by deal_id limit 1) as d;
analyze customer_order;
select count(*) as orders_in_table from customer_order;

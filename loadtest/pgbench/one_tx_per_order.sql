-- The baseline: one Postgres transaction per order, every one on the same
-- hot deal row. The stock check and decrement (sold < quantity) and the
-- order row are one statement in its own transaction: one round trip, the
-- row lock held only inside the server — the fastest honest form of "one
-- transaction per order" (an application doing BEGIN / UPDATE / INSERT /
-- COMMIT holds the lock across round trips; see one_tx_per_order_app.sql).
-- It does less than the settlement writer per order (no deal_buyer upsert,
-- no order_event row, no host_on_shift lookup), so the comparison favours
-- the baseline. Setup: setup.sql.
\set buyer random(1, 1000000000)
with d as (
  update deal set sold = sold + 1, stock_version = stock_version + 1
   where deal_id = '00000000-0000-4000-8000-0000000bb002' and sold < quantity
   returning deal_id, session_id, lineup_item_id, sku_id, price_minor, currency
)
insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                            unit_price_minor, discount_minor, amount_minor, currency, idempotency_key,
                            request_hash, expires_at)
select gen_random_uuid(), deal_id, session_id, lineup_item_id, sku_id, 'pgbench-' || :client_id || '-' || :buyer,
       1, price_minor, 0, price_minor, currency, gen_random_uuid()::text, 'pgbench', now() + interval '10 minutes'
  from d;

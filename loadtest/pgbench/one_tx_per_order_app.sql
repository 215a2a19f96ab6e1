-- The same work as one_tx_per_order.sql, the way an application usually
-- writes it: BEGIN, the guarded decrement, the order, COMMIT — four round
-- trips, with the hot row locked from the UPDATE to the COMMIT. (The deal of
-- setup.sql has 10 million units, so the UPDATE always finds stock and the
-- INSERT never runs without it.)
\set buyer random(1, 1000000000)
begin;
update deal set sold = sold + 1, stock_version = stock_version + 1
 where deal_id = '00000000-0000-4000-8000-0000000bb002' and sold < quantity;
insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                            unit_price_minor, discount_minor, amount_minor, currency, idempotency_key,
                            request_hash, expires_at)
select gen_random_uuid(), deal_id, session_id, lineup_item_id, sku_id, 'pgbench-' || :client_id || '-' || :buyer,
       1, price_minor, 0, price_minor, currency, gen_random_uuid()::text, 'pgbench', now() + interval '10 minutes'
  from deal where deal_id = '00000000-0000-4000-8000-0000000bb002';
commit;

-- One variant of batch_cost.sql (included by it; cost.variant says which).
begin;
select set_config('cost.variant', :'variant', true) \gset
\if :drop_indexes
drop index customer_order_session_idx, customer_order_deal_idx, customer_order_expiry_idx, order_event_order_idx;
\endif
do $$
declare
  n int := current_setting('cost.size')::int;
  batches int := current_setting('cost.batches')::int;
  variant text := current_setting('cost.variant');
  deal_row deal%rowtype;
  t timestamptz;
  ids uuid[];
  buyers text[];
  keys text[];
  step_us double precision[] := array[0, 0, 0, 0, 0, 0];
  names text[] := array['existing orders (idempotency)', 'deal_buyer for update', 'insert customer_order',
                        'upsert deal_buyer', 'update deal', 'insert order_event'];
  total double precision := 0;
begin
  select * into deal_row from deal where deal_id = '00000000-0000-4000-8000-0000000bb002';
  if variant like '%no FK%' or variant like 'bare%' then
    set local session_replication_role = replica;
  end if;
  for b in 1..batches loop
    -- Order ids ordered in time like the server's UUIDv7: the prefix grows with the batch.
    select array_agg(overlay(gen_random_uuid()::text placing lpad(to_hex(b * 100000 + i), 8, '0') from 1 for 8)::uuid
                     order by i),
           array_agg('cost-' || md5(variant) || '-' || b || '-' || i), array_agg(gen_random_uuid()::text)
      into ids, buyers, keys from generate_series(1, n) i;
    t := clock_timestamp();
    perform 1 from customer_order where (buyer_id, idempotency_key) in (select * from unnest(buyers, keys));
    step_us[1] := step_us[1] + extract(epoch from clock_timestamp() - t) * 1e6;
    t := clock_timestamp();
    perform 1 from deal_buyer where deal_id = deal_row.deal_id and buyer_id = any(buyers) for update;
    step_us[2] := step_us[2] + extract(epoch from clock_timestamp() - t) * 1e6;
    t := clock_timestamp();
    insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
           unit_price_minor, discount_minor, amount_minor, currency, idempotency_key, request_hash, expires_at, host_id)
    select o, deal_row.deal_id, deal_row.session_id, deal_row.lineup_item_id, deal_row.sku_id, u, 1,
           deal_row.price_minor, 0, deal_row.price_minor, deal_row.currency, k, 'cost', now() + interval '10 minutes',
           case when variant like 'bare%' then null else host_on_shift(deal_row.session_id, now()) end
      from unnest(ids, buyers, keys) as x(o, u, k)
    on conflict on constraint customer_order_idempotency do nothing;
    step_us[3] := step_us[3] + extract(epoch from clock_timestamp() - t) * 1e6;
    if variant not like '%no deal_buyer%' and variant not like 'bare%' then
      t := clock_timestamp();
      insert into deal_buyer (deal_id, buyer_id, units, cap)
      select deal_row.deal_id, u, 1, 2 from unnest(buyers) u
      on conflict (deal_id, buyer_id) do update set units = deal_buyer.units + excluded.units;
      step_us[4] := step_us[4] + extract(epoch from clock_timestamp() - t) * 1e6;
    end if;
    t := clock_timestamp();
    update deal set sold = sold + n, stock_version = stock_version + 1 where deal_id = deal_row.deal_id;
    step_us[5] := step_us[5] + extract(epoch from clock_timestamp() - t) * 1e6;
    if variant not like '%no order_event%' and variant not like 'bare%' then
      t := clock_timestamp();
      insert into order_event (order_id, to_status, detail)
      select id, 'pending_payment', '{"by": "settlement"}'::jsonb from unnest(ids) as t(id);
      step_us[6] := step_us[6] + extract(epoch from clock_timestamp() - t) * 1e6;
    end if;
  end loop;
  for i in 1..6 loop
    total := total + step_us[i];
    if step_us[i] > 0 then
      raise notice '  %: % µs/order', rpad(names[i], 32), round((step_us[i] / batches / n)::numeric, 2);
    end if;
  end loop;
  raise notice '% — % µs per order, % orders per Postgres CPU-second (statements only)',
    variant, round((total / batches / n)::numeric, 1), round((1e6 / (total / batches / n))::numeric, -2);
end $$;
rollback;

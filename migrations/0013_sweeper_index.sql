-- The expiry sweeper looks for two kinds of orders each tick: unpaid ones
-- past their expiry (customer_order_expiry_idx, 0002) and ones paid too late
-- whose units have not come back yet (this index). Each of its two queries
-- reads its own partial index, so a tick costs the orders due, not the
-- table.
create index customer_order_refund_due_idx on customer_order (expires_at)
  where status = 'refund_due' and cancelled_at is null;

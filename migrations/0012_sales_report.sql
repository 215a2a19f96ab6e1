-- Brand sales reports (hawker-commerce `reports`): a brand's paid orders in
-- a period are found through its SKUs, each SKU's orders by payment time,
-- so a report reads the brand's own orders rather than every brand's
-- orders of the period (`customer_order_paid_idx`).
create index customer_order_sku_paid_idx on customer_order (sku_id, paid_at) where paid_at is not null;

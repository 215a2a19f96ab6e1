-- A flash deal's order writes less (issue 12). Each order used to queue nine
-- foreign-key checks and seven index entries; now it queues one check of
-- its source and six index entries, with the same guarantees:
--
-- 1. One composite key per source instead of a key per column. An order's
--    session, lineup item and SKU are its source's (a deal's, an auction's,
--    a giveaway's or a group buy's), and that row's own keys reach
--    live_session, lineup_item and sku. The source-id check of 0014 says that
--    exactly one source id is set, so exactly one of these keys applies to
--    each order (MATCH SIMPLE skips the others, whose id is null).
-- 2. "A coupon claim is used once" indexes only the orders that use one.
--
-- The order row is also its own creation record: the settlement no longer
-- writes an `order_event` row for a new deal order (the journey's event list
-- shows `created` from the order's `created_at`).

alter table deal add constraint deal_order_key unique (deal_id, session_id, lineup_item_id, sku_id);
alter table auction add constraint auction_order_key unique (auction_id, session_id, lineup_item_id, sku_id);
alter table giveaway add constraint giveaway_order_key unique (giveaway_id, session_id, lineup_item_id, sku_id);
alter table group_buy add constraint group_buy_order_key unique (group_buy_id, session_id, lineup_item_id, sku_id);

alter table customer_order
    add constraint customer_order_deal_source foreign key (deal_id, session_id, lineup_item_id, sku_id)
        references deal (deal_id, session_id, lineup_item_id, sku_id),
    add constraint customer_order_auction_source foreign key (auction_id, session_id, lineup_item_id, sku_id)
        references auction (auction_id, session_id, lineup_item_id, sku_id),
    add constraint customer_order_giveaway_source foreign key (giveaway_id, session_id, lineup_item_id, sku_id)
        references giveaway (giveaway_id, session_id, lineup_item_id, sku_id),
    add constraint customer_order_group_buy_source foreign key (group_buy_id, session_id, lineup_item_id, sku_id)
        references group_buy (group_buy_id, session_id, lineup_item_id, sku_id),
    drop constraint customer_order_deal_id_fkey,
    drop constraint customer_order_session_id_fkey,
    drop constraint customer_order_lineup_item_id_fkey,
    drop constraint customer_order_sku_id_fkey,
    drop constraint customer_order_auction_fk,
    drop constraint customer_order_giveaway_fk,
    drop constraint customer_order_group_buy_fk,
    drop constraint customer_order_coupon_used_once;

create unique index customer_order_coupon_used_once on customer_order (coupon_claim_id)
    where coupon_claim_id is not null;

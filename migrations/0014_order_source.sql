-- Orders from more than deals. An order names its source: a flash deal, an
-- auction (the winner's order at the hammer price), a giveaway (a winner's
-- order at no charge) or, later, a group buy. Exactly the id of its source
-- is set. `deal_id` keeps its foreign key (a nullable FK checks the rows that
-- name a deal); the auction (0015) and giveaway (0016) migrations create
-- their tables and add the foreign keys of `auction_id` and `giveaway_id`;
-- `group_buy_id` is reserved the same way.
alter table customer_order
    alter column deal_id drop not null,
    add column source text not null default 'deal'
        constraint customer_order_source check (source in ('deal', 'auction', 'giveaway', 'group_buy')),
    add column auction_id uuid,
    add column giveaway_id uuid,
    add column group_buy_id uuid,
    -- Exactly its source's id: a deal order names its deal and nothing else,
    -- an auction order its auction, and so on.
    add constraint customer_order_source_id
        check ((deal_id is not null) = (source = 'deal')
               and (auction_id is not null) = (source = 'auction')
               and (giveaway_id is not null) = (source = 'giveaway')
               and (group_buy_id is not null) = (source = 'group_buy')),
    -- A price per unit above zero, except a giveaway's, which is exactly zero
    -- with nothing discounted and nothing to pay (only giveaways are free).
    drop constraint customer_order_unit_price_minor_check,
    add constraint customer_order_price
        check (case when source = 'giveaway'
                    then unit_price_minor = 0 and discount_minor = 0 and amount_minor = 0
                    else unit_price_minor > 0 end),
    -- An auction or a giveaway hands out one unit per order.
    add constraint customer_order_sourced_single_unit
        check (source not in ('auction', 'giveaway') or quantity = 1);

create index customer_order_auction_idx on customer_order (auction_id) where auction_id is not null;
create index customer_order_giveaway_idx on customer_order (giveaway_id) where giveaway_id is not null;

-- A stock movement names where its units went or came from: a deal
-- (`deal_id`), an auction (`auction_id`) or a giveaway (`giveaway_id`), at
-- most one of them. Each source takes units when it starts
-- (`<source>_allocated`) and gives back what it did not sell or hand out
-- (`<source>_returned`); units of an order that expired or was cancelled
-- come back as `order_released`, naming the order's source. The ids carry no
-- foreign key, like `deal_id` before them: movements are an append-only
-- history of the SKU.
alter table stock_movement
    add column auction_id uuid,
    add column giveaway_id uuid,
    drop constraint stock_movement_reason_check,
    add constraint stock_movement_reason_check check (reason in
        ('opening', 'restock', 'adjustment', 'deal_allocated', 'deal_returned', 'order_released',
         'auction_allocated', 'auction_returned', 'giveaway_allocated', 'giveaway_returned')),
    add constraint stock_movement_one_source check (num_nonnulls(deal_id, auction_id, giveaway_id) <= 1),
    add constraint stock_movement_source_named
        check ((reason not in ('deal_allocated', 'deal_returned') or deal_id is not null)
               and (reason not in ('auction_allocated', 'auction_returned') or auction_id is not null)
               and (reason not in ('giveaway_allocated', 'giveaway_returned') or giveaway_id is not null)
               and (reason <> 'order_released' or num_nonnulls(deal_id, auction_id, giveaway_id) = 1));

-- Where a settlement batch's time goes inside Postgres: the statements of
-- crates/hawker-commerce/src/settle.rs (commit), replayed on the baseline
-- deal of setup.sql for :batches batches of :size orders, each step timed
-- with clock_timestamp() (so: execution only, without parse, network,
-- commit and WAL flush); then variants without per-row work. Each variant
-- runs in its own transaction, rolled back (DDL included).
--
--   psql -h 127.0.0.1 -U postgres -d hawker_stampede -f loadtest/pgbench/setup.sql
--   psql -h 127.0.0.1 -U postgres -d hawker_stampede -v size=500 -v batches=20 -f loadtest/pgbench/batch_cost.sql
\set ON_ERROR_STOP 1
\set QUIET 1
\if :{?size} \else \set size 500 \endif
\if :{?batches} \else \set batches 20 \endif
select set_config('cost.size', :'size', false), set_config('cost.batches', :'batches', false) \gset
\set drop_indexes false
\set variant 'as settle.rs does it'
\ir batch_cost_variant.sql
\set variant 'no FK triggers'
\ir batch_cost_variant.sql
\set variant 'no order_event rows'
\ir batch_cost_variant.sql
\set variant 'no deal_buyer upsert'
\ir batch_cost_variant.sql
\set drop_indexes true
\set variant 'bare: orders with pkey + idempotency index only, no FKs, no order_event, no deal_buyer'
\ir batch_cost_variant.sql

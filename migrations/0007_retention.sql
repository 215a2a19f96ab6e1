-- Retention sweepers delete old rows a bounded batch at a time, oldest
-- first; these indexes let them find those rows without a scan.

-- Published room events (pending ones are in room_outbox_pending_idx).
create index room_outbox_published_idx on room_outbox (published_at) where published_at is not null;

-- Room samples by age, across sessions.
create index session_sample_sampled_at_idx on session_sample (sampled_at);

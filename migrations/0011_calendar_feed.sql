-- Calendar feeds (hawker-agency `calendar_feed.rs`): a secret URL per host
-- and per agency that calendar apps poll for the schedule as iCalendar.
-- Calendar apps send no headers, so the URL is the credential: only its
-- SHA-256 digest is stored, never the secret itself. One feed per owner;
-- regenerating replaces the digest (the old URL stops working at once) and
-- revoking deletes the row.
create table calendar_feed (
    calendar_feed_id  uuid primary key,
    -- Exactly one owner: a host (their shifts) or an agency (its sessions).
    host_id           uuid references host,
    agency_id         uuid references agency,
    token_sha256      bytea not null check (length(token_sha256) = 32),
    created_by        text not null,
    created_at        timestamptz not null default now(),
    constraint calendar_feed_one_owner check ((host_id is null) <> (agency_id is null))
);
create unique index calendar_feed_token_key on calendar_feed (token_sha256);
create unique index calendar_feed_host_key on calendar_feed (host_id) where host_id is not null;
create unique index calendar_feed_agency_key on calendar_feed (agency_id) where agency_id is not null;


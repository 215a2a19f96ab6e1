-- Private notices (the hub's): something said to one user, optionally only
-- in one session's room. A notice is written in the same transaction as the
-- change it announces, relayed once through Redis after the commit
-- (published_at), delivered to the user's sockets on every node, and kept
-- until expires_at for users who were away (delivered on their next join,
-- listed by GET /v1/me/notices).
create table user_notice (
    -- Per user, ids grow in commit order (enqueue holds a per-user lock
    -- until the commit), so a client's last id is a resume position.
    notice_id    bigint generated always as identity primary key,
    user_id      text not null check (length(user_id) between 1 and 64),
    -- null: any room; else only that session's room.
    session_id   uuid,
    kind         text not null check (length(kind) between 1 and 64),
    data         jsonb not null,
    created_at   timestamptz not null default now(),
    expires_at   timestamptz not null,
    -- Set by the relay once published on Redis.
    published_at timestamptz,
    -- Set when first queued to one of the user's sockets.
    delivered_at timestamptz,
    -- Set when the user marked it read (POST /v1/me/notices/read).
    read_at      timestamptz,
    constraint user_notice_expires_after_created check (expires_at > created_at)
);
-- A user's notices in order (list, join, resume, cap).
create index user_notice_user_idx on user_notice (user_id, notice_id);
-- What the relay still has to publish.
create index user_notice_unpublished_idx on user_notice (notice_id) where published_at is null;
-- What the sweeper removes.
create index user_notice_expiry_idx on user_notice (expires_at);

-- Sales counts in the room are the host's choice, per deal: with show_sales,
-- each payment announces the deal's paid orders and units (never who paid).
alter table deal add column show_sales boolean not null default false;

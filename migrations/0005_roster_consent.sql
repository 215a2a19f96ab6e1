-- Roster consent: an agency no longer puts a host on its roster; it invites
-- them, and the stay begins when the host accepts (joined_at = the moment of
-- acceptance). Until then nothing is reserved: a pending invite blocks no
-- other agency, and an invite cannot be made for a host on a roster now.
create table roster_invite (
    invite_id    uuid primary key,
    agency_id    uuid not null references agency,
    host_id      uuid not null references host,
    -- The token subject that sent it.
    invited_by   text not null,
    created_at   timestamptz not null default now(),
    -- An invite not answered by then can no longer be accepted.
    expires_at   timestamptz not null,
    status       text not null default 'pending'
        check (status in ('pending', 'accepted', 'declined', 'withdrawn', 'expired')),
    answered_at  timestamptz,
    constraint roster_invite_answered check ((status = 'pending') = (answered_at is null)),
    constraint roster_invite_expires_after_created check (expires_at > created_at)
);
-- At most one open invite per agency and host.
create unique index roster_invite_one_pending on roster_invite (agency_id, host_id) where status = 'pending';
-- The host's and the agency's invite lists, paged by (created_at, invite_id).
create index roster_invite_host_idx on roster_invite (host_id, created_at, invite_id);
create index roster_invite_agency_idx on roster_invite (agency_id, created_at, invite_id);

-- The invite a stay was accepted from (null for stays made before consent existed).
alter table agency_host add column invite_id uuid references roster_invite;
create unique index agency_host_invite_key on agency_host (invite_id) where invite_id is not null;

-- Stays that had not begun were put there without the host's consent, and
-- one dated far ahead blocked every other agency. They become pending
-- invites (7 days to answer); shifts booked inside them that have not
-- started are cancelled (the host is not on the roster then any more).
update shift sh set cancelled_at = now()
  from live_session s, agency_host ah
 where s.session_id = sh.session_id
   and ah.agency_id = s.agency_id and ah.host_id = sh.host_id
   and ah.joined_at > now()
   and sh.planned_start >= ah.joined_at and (ah.left_at is null or sh.planned_start < ah.left_at)
   and sh.cancelled_at is null and sh.actual_start is null;

insert into roster_invite (invite_id, agency_id, host_id, invited_by, expires_at)
select distinct on (agency_id, host_id)
       gen_random_uuid(), agency_id, host_id, 'migration 0005', now() + interval '7 days'
  from agency_host
 where joined_at > now()
 order by agency_id, host_id, joined_at;

delete from agency_host where joined_at > now();

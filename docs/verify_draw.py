#!/usr/bin/env python3
"""Recompute a hawker giveaway draw (docs/protocol.md, "Giveaway draws").

usage: verify_draw.py ENTRIES SEED WINNERS [ABSENT_ID ...] [--me GIVEAWAY_ID USER]

ENTRIES is the body of GET /v1/giveaways/{id}/entries saved to a file (or one
entry id per line); SEED the 64 hex digits revealed in giveaway.drawn; WINNERS
how many the giveaway had; ABSENT_ID the entry ids of `absent`. With --me,
derives USER's entry id in the giveaway (USER: the `sub` of your token) and
says whether the list holds it. Standard library only, written apart from
the server's Rust code.
"""
import hashlib
import json
import sys
import uuid


def entry_id(seed, giveaway_id, user):
    """sha256("hawker-entry-v1" || seed || giveaway id bytes || user), first 16 bytes."""
    data = b"hawker-entry-v1" + seed + uuid.UUID(giveaway_id).bytes + user.encode()
    return hashlib.sha256(data).hexdigest()[:32]


def draw(seed, ids, winners, absent):
    n = len(ids)
    list_hash = hashlib.sha256("".join(i + "\n" for i in ids).encode()).digest()
    taken, won, trace, i = set(), [], [], 0
    while n and len(won) < winners and len(taken) < n:
        h = hashlib.sha256(seed + list_hash + i.to_bytes(4, "big")).digest()
        x, counter, i = int.from_bytes(h[:8], "big"), i, i + 1
        if x >= 2**64 - (2**64 % n):
            continue
        index = x % n
        if index in taken:
            continue
        taken.add(index)
        outcome = "absent" if ids[index] in absent else "winner"
        trace.append((counter, ids[index], outcome))
        if outcome == "winner":
            won.append(ids[index])
    return list_hash.hex(), trace, won


def main(argv):
    me = None
    if "--me" in argv:
        at = argv.index("--me")
        if len(argv) < at + 3:
            sys.exit(__doc__)
        me = (argv[at + 1], argv[at + 2])
        argv = argv[:at] + argv[at + 3:]
    if len(argv) < 4:
        sys.exit(__doc__)
    text = open(argv[1]).read()
    if text.lstrip()[:1] in "{[":
        body = json.loads(text)
        ids = body["entries"] if isinstance(body, dict) else body
    else:
        ids = [line.strip() for line in text.splitlines() if line.strip()]
    ids = sorted(ids)
    seed = bytes.fromhex(argv[2])
    list_hash, trace, won = draw(seed, ids, int(argv[3]), set(argv[4:]))
    print("seed_hash    ", hashlib.sha256(seed).hexdigest())
    print("entries_hash ", list_hash)
    print("entry_count  ", len(ids))
    for counter, entry, outcome in trace:
        print(f"candidate i={counter:<6} {entry} {outcome}")
    for rank, entry in enumerate(won, 1):
        print(f"winner {rank} {entry}")
    if me:
        mine = entry_id(seed, *me)
        state = "in the list, a winner" if mine in won else "in the list" if mine in ids else "NOT in the list"
        print(f"your entry    {mine} ({state})")


if __name__ == "__main__":
    main(sys.argv)

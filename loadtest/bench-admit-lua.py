#!/usr/bin/env python3
"""Redis CPU per attempt of the admission script (ADMIT_LUA in
crates/hawker-commerce/src/purchase/gate.rs), measured by Redis itself
(INFO commandstats, usec of EVALSHA) on groups of 256 attempts by distinct
buyers, each reserving one unit, as in a commit stampede. Uses Redis db 9 of
the given server and empties it. Needs the `redis` package (pip install redis).

  python3 loadtest/bench-admit-lua.py crates/hawker-commerce/src/purchase/gate.rs
  git show <rev>:crates/hawker-commerce/src/purchase/gate.rs > /tmp/gate-old.rs
  python3 loadtest/bench-admit-lua.py /tmp/gate-old.rs crates/hawker-commerce/src/purchase/gate.rs

Alternate the files on the command line (old new old new) and compare in one run.
"""
import sys
import time

import redis

GROUP = 256
ROUNDS = 300
KEYS = ["b:meta", "b:stock", "b:buyers", "b:keys", "b:pending", "b:offers"]


def script(path):
    text = open(path).read()
    start = text.index('const ADMIT_LUA: &str = r#"') + len('const ADMIT_LUA: &str = r#"')
    return text[start:text.index('"#;', start)]


def usec_per_attempt(r, sha):
    r.config_resetstat()
    for k in range(ROUNDS):
        r.delete(*KEYS)
        r.hset("b:meta", mapping={"ready": "1", "status": "live", "reason": "", "starts_ms": "0",
                                  "ends_ms": "99999999999999", "cap": "2"})
        r.set("b:stock", 1_000_000)
        argv = [str(int(time.time() * 1000))]
        for i in range(GROUP):
            argv += [f"buyer-{k}-{i}", "1", f"buyer-{k}-{i}\nkey-{i}", "h" * 16]
        r.evalsha(sha, len(KEYS), *KEYS, *argv)
    return r.info("commandstats")["cmdstat_evalsha"]["usec"] / (ROUNDS * GROUP)


def main():
    r = redis.Redis(host="127.0.0.1", port=6379, db=9)
    for path in sys.argv[1:]:
        sha = r.script_load(script(path))
        runs = [usec_per_attempt(r, sha) for _ in range(3)]
        print(path, " ".join(f"{u:.2f}" for u in runs), "µs of Redis per attempt")
    r.flushdb()


if __name__ == "__main__":
    main()

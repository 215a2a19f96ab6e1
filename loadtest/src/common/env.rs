//! `--server-env KEY=VALUE`: extra environment for spawned nodes.

/// Variables passed to spawned nodes as they are named here; any other is refused.
const ALLOWED: &str = "HAWKER…, MALLOC_…, MIMALLOC_…, GLIBC_TUNABLES, LD_PRELOAD and TOKIO_WORKER_THREADS";

/// Parses one `--server-env` value. Accepted: `HAWKER…` settings (e.g.
/// `HAWKER__HUB__WRITE_BATCH=32`), the allocators' `MALLOC_…`, `MIMALLOC_…`
/// (the server's own allocator, e.g. `MIMALLOC_PURGE_DELAY=-1`) and
/// `GLIBC_TUNABLES`, `LD_PRELOAD` (to try another allocator, e.g.
/// /usr/lib/x86_64-linux-gnu/libjemalloc.so.2, without rebuilding the server)
/// and `TOKIO_WORKER_THREADS`. The value may be empty and may hold `=`.
pub fn parse_env(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("`{text}` names no variable before the `=`"));
    }
    let allowed = key.starts_with("HAWKER")
        || key.starts_with("MALLOC_")
        || key.starts_with("MIMALLOC_")
        || matches!(key, "GLIBC_TUNABLES" | "LD_PRELOAD" | "TOKIO_WORKER_THREADS");
    if !allowed {
        return Err(format!("`{key}` is not passed to the server: only {ALLOWED} are"));
    }
    Ok((key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_settings_and_allocator_variables_are_accepted() {
        let ok = |t: &str| parse_env(t).unwrap();
        assert_eq!(
            ok("HAWKER__HUB__WRITE_BATCH=32"),
            ("HAWKER__HUB__WRITE_BATCH".to_string(), "32".to_string())
        );
        assert_eq!(
            ok("GLIBC_TUNABLES=glibc.malloc.arena_max=2"),
            (
                "GLIBC_TUNABLES".to_string(),
                "glibc.malloc.arena_max=2".to_string()
            )
        );
        assert_eq!(ok("MALLOC_ARENA_MAX=").1, "");
        assert_eq!(ok("LD_PRELOAD=/usr/lib/libjemalloc.so.2").0, "LD_PRELOAD");
        assert_eq!(ok("TOKIO_WORKER_THREADS=1").1, "1");
    }

    #[test]
    fn bad_values_are_refused_naming_what_is_wrong() {
        let err = parse_env("HAWKER__HUB__WRITE_BATCH").unwrap_err();
        assert!(
            err.contains("`HAWKER__HUB__WRITE_BATCH` is not KEY=VALUE"),
            "{err}"
        );
        let err = parse_env("PATH=/tmp").unwrap_err();
        assert!(err.starts_with("`PATH` is not passed to the server"), "{err}");
        assert!(err.contains("LD_PRELOAD"), "{err}");
        let err = parse_env("=1").unwrap_err();
        assert!(err.contains("names no variable"), "{err}");
        // A prefix is not enough for the exact names.
        assert!(parse_env("LD_PRELOAD_PATH=x").is_err());
    }
}

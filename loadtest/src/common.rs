//! What the scenarios share: one run harness ([`run::run_with_nodes`]) that
//! starts or finds the hub nodes, the `--server-env` parser, `hawker seed`,
//! readings of `/proc`, the nodes' `/metrics`, the plots, and the clock,
//! histograms, room sockets and the small HTTP/1.1 client the scenarios use.

/// Writes a line to stdout; a closed stdout (the reader went away) must not
/// abort the run before it stops the nodes it started.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The same for stderr.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub(crate) use {note, out};

pub mod clock;
pub mod env;
pub mod http1;
pub mod nodes;
pub mod plot;
pub mod probe;
pub mod procfs;
pub mod run;
pub mod stats;
pub mod ws;

/// The development JWT secret (config/default.toml): tokens are signed with it
/// unless `--jwt-secret` or `HAWKER_LOADTEST_JWT_SECRET` says otherwise.
pub const DEV_SECRET: &str = "hawker-development-jwt-secret-not-for-production";

//! The real `hawker` binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use super::app::config_dir;

/// The `hawker` binary with `args`, in the test environment, against
/// `db_url`, logging JSON at info (for tests that read its log).
pub fn hawker(args: &[&str], db_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hawker"));
    command
        .args(args)
        .env("HAWKER_ENV", "test")
        .env("HAWKER_CONFIG_DIR", config_dir())
        .env("HAWKER__DATABASE__URL", db_url)
        .env("HAWKER__LOG__FORMAT", "json")
        .env("HAWKER__LOG__FILTER", "info")
        .env_remove("RUST_LOG");
    command
}

/// A real `hawker serve` process (for tests that kill one).
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// `hawker serve` against `db_url` and `redis_url`, with `extra`
    /// variables, once it serves.
    pub fn spawn(db_url: &str, redis_url: &str, extra: &[(&str, &str)]) -> Self {
        let mut command = hawker(&["serve"], db_url);
        command.env("HAWKER__REDIS__URL", redis_url).stderr(Stdio::null());
        for (k, v) in extra {
            command.env(k, v);
        }
        Self::start(&mut command).0
    }

    /// Starts `command` (a `hawker serve` logging JSON) and waits up to 60 s
    /// for its "hawker serving" line. Returns the process, the lines it
    /// logged until then, and the lines it logs from then on.
    ///
    /// A process that ends before serving is started again, up to three
    /// times in all: while the whole suite runs, Postgres sometimes answers a
    /// starting node "too many clients" (its `max_connections` shared by
    /// every test's pools), and the node exits, as it should. A node that
    /// cannot start for its own reasons fails all three. One that stays
    /// silent for 60 s fails at once.
    pub fn start(command: &mut Command) -> (Self, Vec<String>, Receiver<String>) {
        for attempt in 1.. {
            match Self::try_start(command) {
                Ok(started) => return started,
                Err((status, seen)) if attempt < 3 => {
                    eprintln!(
                        "hawker ended before serving ({status}; it logged {seen:?}): starting it again"
                    );
                    std::thread::sleep(Duration::from_millis(500 * attempt));
                }
                Err((status, seen)) => {
                    panic!("hawker ended before serving, three times ({status}); it logged: {seen:#?}")
                }
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// One start: the process serving, or how it ended and what it logged.
    #[allow(clippy::type_complexity)]
    fn try_start(
        command: &mut Command,
    ) -> Result<(Self, Vec<String>, Receiver<String>), (String, Vec<String>)> {
        let mut child = command.stdout(Stdio::piped()).spawn().expect("hawker starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads to the end even when nobody listens: a full pipe would stall the server.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let addr = loop {
            let line = match lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child
                        .wait()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| e.to_string());
                    return Err((status, seen));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("hawker did not print its address within 60 s; it logged: {seen:#?}")
                }
            };
            seen.push(line.clone());
            if let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) {
                if log["message"] == "hawker serving" {
                    break log["public"].as_str().expect("public address").to_string();
                }
            }
        };
        let server = ServerProcess {
            child,
            addr: addr.parse().expect("address"),
        };
        Ok((server, seen, lines))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

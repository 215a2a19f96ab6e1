//! The real `hawker` binary as a child process.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
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
    pub fn spawn(db_url: &str, redis_url: &str, extra: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut command = hawker(&["serve"], db_url);
        command
            .env("HAWKER__REDIS__URL", redis_url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in extra {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("hawker starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) {
                        if log["message"] == "hawker serving" {
                            let _ = tx.send(log["public"].as_str().unwrap_or_default().to_string());
                            sent = true;
                        }
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("hawker prints its address");
        ServerProcess {
            child,
            addr: addr.parse().expect("address"),
        }
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

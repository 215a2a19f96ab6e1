//! Viewer groups, in this process or in child processes.
//!
//! One process may open at most ~20,000 files, and one core reads about
//! half a million frames a second; `--procs N` splits the viewers over N
//! children of this binary (`hawker-loadtest fanout-worker`). The
//! coordinator talks to each over its stdin/stdout, one JSON document per
//! line: it writes the [`GroupConfig`], the child answers with progress
//! lines, the coordinator writes the [`EndCommand`] when the publisher is
//! done, the child drains and says so in its progress, the coordinator
//! writes `"close"` once it has read the servers' CPU, and the child closes
//! its sockets, answers with its [`GroupResult`] and exits.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};

use super::viewer::{self, EndCommand, GroupConfig, GroupProgress, GroupResult};

/// A line from a worker.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Report {
    Progress(GroupProgress),
    Result(Box<GroupResult>),
    Failed(String),
}

/// The coordinator's end of a group.
pub struct GroupHandle {
    pub progress: watch::Receiver<GroupProgress>,
    end: Option<oneshot::Sender<EndCommand>>,
    close: Option<oneshot::Sender<()>>,
    result: oneshot::Receiver<anyhow::Result<GroupResult>>,
    /// The worker process, if the group runs in one.
    pub child: Option<Child>,
}

impl GroupHandle {
    /// A group in this process (call inside the `LocalSet`).
    pub fn local(config: GroupConfig) -> GroupHandle {
        let (progress_tx, progress) = watch::channel(GroupProgress::default());
        let (end, end_rx) = oneshot::channel();
        let (close, close_rx) = oneshot::channel();
        let (result_tx, result) = oneshot::channel();
        tokio::task::spawn_local(async move {
            let _ = result_tx.send(viewer::run_group(config, progress_tx, end_rx, close_rx).await);
        });
        GroupHandle {
            progress,
            end: Some(end),
            close: Some(close),
            result,
            child: None,
        }
    }

    /// A group in a child process of this binary.
    pub fn worker(config: &GroupConfig) -> anyhow::Result<GroupHandle> {
        let exe = std::env::current_exe().context("finding this program to start a worker")?;
        let mut child = Command::new(exe)
            .arg("fanout-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("worker without stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("worker without stdout"))?;
        let (progress_tx, progress) = watch::channel(GroupProgress::default());
        let (end, end_rx) = oneshot::channel::<EndCommand>();
        let (close, close_rx) = oneshot::channel::<()>();
        let (result_tx, result) = oneshot::channel();
        let first = serde_json::to_string(config)?;
        tokio::task::spawn_local(async move {
            if stdin.write_all(format!("{first}\n").as_bytes()).await.is_err() {
                return;
            }
            if let Ok(command) = end_rx.await {
                if let Ok(line) = serde_json::to_string(&command) {
                    let _ = stdin.write_all(format!("{line}\n").as_bytes()).await;
                    let _ = stdin.flush().await;
                }
            }
            if close_rx.await.is_ok() {
                let _ = stdin.write_all(b"\"close\"\n").await;
                let _ = stdin.flush().await;
            }
        });
        tokio::task::spawn_local(async move {
            let mut lines = BufReader::new(stdout).lines();
            let outcome = loop {
                match lines.next_line().await {
                    Ok(Some(line)) => match serde_json::from_str::<Report>(&line) {
                        Ok(Report::Progress(p)) => {
                            progress_tx.send_replace(p);
                        }
                        Ok(Report::Result(r)) => break Ok(*r),
                        Ok(Report::Failed(e)) => break Err(anyhow!("worker failed: {e}")),
                        Err(e) => break Err(anyhow!("unreadable worker line: {e}")),
                    },
                    Ok(None) => break Err(anyhow!("worker exited without a result")),
                    Err(e) => break Err(anyhow!("reading the worker: {e}")),
                }
            };
            let _ = result_tx.send(outcome);
        });
        Ok(GroupHandle {
            progress,
            end: Some(end),
            close: Some(close),
            result,
            child: Some(child),
        })
    }

    pub fn end(&mut self, command: EndCommand) {
        if let Some(end) = self.end.take() {
            let _ = end.send(command);
        }
    }

    /// Whether the group's drain is over (its viewers wait for [`Self::close`]).
    pub fn drained(&self) -> bool {
        self.progress.borrow().drained
    }

    /// Lets the group's viewers close, after its drain.
    pub fn close(&mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
    }

    pub async fn result(self) -> anyhow::Result<GroupResult> {
        let result = self
            .result
            .await
            .map_err(|_| anyhow!("the viewer group stopped without a result"))?;
        if let Some(mut child) = self.child {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        result
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

/// `hawker-loadtest fanout-worker`: runs one group for a coordinator.
pub async fn serve() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines.next_line().await?.ok_or_else(|| {
        anyhow!("fanout-worker expects its configuration on stdin (it is started by `fanout --procs`)")
    })?;
    let config: GroupConfig = serde_json::from_str(&first).context("reading the group configuration")?;
    let (progress_tx, mut progress) = watch::channel(GroupProgress::default());
    let (end_tx, end_rx) = oneshot::channel();
    let (close_tx, close_rx) = oneshot::channel();
    tokio::task::spawn_local(async move {
        if let Ok(Some(line)) = lines.next_line().await {
            if let Ok(command) = serde_json::from_str::<EndCommand>(&line) {
                let _ = end_tx.send(command);
            }
        }
        // `"close"`, or the coordinator gone: the sockets close either way.
        let _ = lines.next_line().await;
        let _ = close_tx.send(());
    });
    tokio::task::spawn_local(async move {
        while progress.changed().await.is_ok() {
            let p = progress.borrow_and_update().clone();
            emit(&Report::Progress(p));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    match viewer::run_group(config, progress_tx, end_rx, close_rx).await {
        Ok(result) => emit(&Report::Result(Box::new(result))),
        Err(e) => emit(&Report::Failed(format!("{e:#}"))),
    }
    Ok(())
}

fn emit(report: &Report) {
    use std::io::Write;
    if let Ok(line) = serde_json::to_string(report) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

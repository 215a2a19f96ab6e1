//! The node's room publisher: every publication of this node goes through
//! a queue and a task, which sends what has gathered as one Redis pipeline
//! (group commit), waits for it, and answers each caller. There is one on
//! the node's runtime and, with `hub.command_thread`, one on the command
//! thread for the sockets that run there ([`crate::ingest`]).
//!
//! - **Order.** Publications of one queue reach Redis in the order they were queued:
//!   one pipeline at a time, and Redis runs a pipeline's commands in order.
//!   So a socket that queues its publications in the order its commands
//!   arrived ([`crate::commands::Turn`]) publishes in that order, with
//!   several commands in flight.
//! - **Throughput.** A caller no longer pays a round trip of its own: a
//!   publisher (a host at 100 events/s, the commerce relay) is limited by
//!   what Redis runs, not by one round trip per event.
//! - **Deadlines.** Each publication carries its caller's deadline. One
//!   whose deadline passed while it waited is answered with a timeout and
//!   never sent, so a timed-out publish that was not sent was not published.

use std::time::Duration;

use hawker_redis::Redis;
use redis::{
    Cmd, ErrorKind, FromRedisValue, ParsingError, RedisError, RedisResult, Script, ServerErrorKind, Value,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Publications in one pipeline at most.
const MAX_BATCH: usize = 512;

/// What the publish script answers; see `PUBLISH_LUA` in [`crate::store`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Published {
    pub epoch: String,
    /// 0 when nothing was published.
    pub offset: u64,
    /// −1 when no take was asked for.
    pub taken: i64,
    pub milli_tokens: i64,
    pub slow_wait_ms: i64,
}

/// The script answers one string, `"epoch offset taken milli_tokens
/// slow_wait_ms"`: one bulk reply costs the client's parser a fraction of
/// what an array of five costs (~4,000 instructions per publication,
/// callgrind).
impl FromRedisValue for Published {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let unexpected = || ParsingError::from(format!("unexpected reply to a publish: {v:?}"));
        let Value::BulkString(bytes) = &v else {
            return Err(unexpected());
        };
        let text = std::str::from_utf8(bytes)?;
        let mut parts = text.split(' ');
        let epoch = parts.next().filter(|e| !e.is_empty()).ok_or_else(unexpected)?;
        let mut number = || {
            parts
                .next()
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(unexpected)
        };
        let (offset, taken, milli_tokens, slow_wait_ms) = (number()?, number()?, number()?, number()?);
        if parts.next().is_some() {
            return Err(unexpected());
        }
        Ok(Published {
            epoch: epoch.to_string(),
            offset: u64::try_from(offset).map_err(|_| unexpected())?,
            taken,
            milli_tokens,
            slow_wait_ms,
        })
    }
}

struct Job {
    command: Cmd,
    deadline: Instant,
    reply: oneshot::Sender<RedisResult<Published>>,
}

/// The sending end; cheap to clone. The task ends when every clone is gone.
#[derive(Clone)]
pub(crate) struct Publisher {
    jobs: mpsc::UnboundedSender<Job>,
    /// With `hub.command_thread`: the queue of a second task, on the
    /// command thread, for the callers that run there.
    command_jobs: Option<mpsc::UnboundedSender<Job>>,
}

impl Publisher {
    /// Starts the publisher task for `script` (the room publish script;
    /// every queued command is an `EVALSHA` of it).
    ///
    /// With `command_thread` (`hub.command_thread`) a second task runs on
    /// the process's command thread ([`crate::ingest`]) with a Redis
    /// connection of its own, made there, and publishes for the callers on
    /// that thread (the sockets that may host): their publish is sent and
    /// its answer read there, not after every socket writer queued on the
    /// node's runtime. Each socket runs on one thread, so it always uses
    /// the same task, and its publications keep their order.
    pub(crate) fn start(redis: Redis, script: Script, command_thread: bool) -> Publisher {
        let command_jobs = command_thread.then(|| {
            let (jobs, inbox) = mpsc::unbounded_channel();
            let (redis, script) = (redis.clone(), script.clone());
            crate::ingest::spawn(true, async move {
                let redis = match redis.another() {
                    Ok(own) => own,
                    Err(e) => {
                        tracing::warn!(error = %e, "the command thread's publisher shares the node's Redis connection");
                        redis
                    }
                };
                run(redis, script, inbox).await
            });
            jobs
        });
        let (jobs, inbox) = mpsc::unbounded_channel();
        tokio::spawn(run(redis, script, inbox));
        Publisher { jobs, command_jobs }
    }

    /// Queues `command` now (so its place in the order is taken before this
    /// returns) and returns its answer, waited for at most `timeout`.
    pub(crate) fn queue(
        &self,
        command: Cmd,
        timeout: Duration,
    ) -> impl std::future::Future<Output = RedisResult<Published>> + Send + 'static {
        let deadline = Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let jobs = match &self.command_jobs {
            Some(jobs) if crate::ingest::here() => jobs,
            _ => &self.jobs,
        };
        let queued = jobs
            .send(Job {
                command,
                deadline,
                reply,
            })
            .is_ok();
        async move {
            if !queued {
                return Err(gone());
            }
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(gone()),
                Err(_) => Err(timed_out()),
            }
        }
    }
}

async fn run(mut redis: Redis, script: Script, mut inbox: mpsc::UnboundedReceiver<Job>) {
    let mut batch: Vec<Job> = Vec::new();
    while let Some(first) = inbox.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        crate::metrics::publish_batch(batch.len());
        send(&mut redis, &script, &mut batch).await;
    }
}

/// Sends one batch and answers every job in it.
async fn send(redis: &mut Redis, script: &Script, batch: &mut Vec<Job>) {
    // A caller that gave up is not published for: its answer said so.
    let now = Instant::now();
    let mut live: Vec<Job> = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        if job.deadline <= now || job.reply.is_closed() {
            let _ = job.reply.send(Err(timed_out()));
        } else {
            live.push(job);
        }
    }
    if live.is_empty() {
        return;
    }
    let deadline = live.iter().map(|j| j.deadline).max().unwrap_or(now);
    let commands: Vec<&Cmd> = live.iter().map(|j| &j.command).collect();
    let results = run_scripts(redis, script, &commands, deadline).await;
    match results {
        Ok(each) => {
            for (job, result) in live.into_iter().zip(each) {
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            for job in live {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// `commands` (each an `EVALSHA` of `script`) as one pipeline, each answer
/// in its place, within `deadline`. A Redis that lost its scripts (a
/// restart, SCRIPT FLUSH) refuses each EVALSHA: the script is loaded and
/// those commands are sent again, in their order. (On a cluster, a shard's
/// refusal may fail the whole pipeline: a replica that took over has not
/// loaded the script.) Used by the publisher and by the node's tick.
pub(crate) async fn run_scripts<T: FromRedisValue>(
    redis: &mut Redis,
    script: &Script,
    commands: &[&Cmd],
    deadline: Instant,
) -> RedisResult<Vec<RedisResult<T>>> {
    let mut results = pipeline(redis, commands.iter().copied(), deadline).await;
    let no_script = |e: &RedisError| e.kind() == ErrorKind::Server(ServerErrorKind::NoScript);
    let missing: Vec<usize> = match &results {
        Ok(each) => each
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Err(e) if no_script(e)))
            .map(|(i, _)| i)
            .collect(),
        Err(e) if no_script(e) => {
            results = Ok((0..commands.len()).map(|_| Err(e.clone())).collect());
            (0..commands.len()).collect()
        }
        Err(_) => Vec::new(),
    };
    if missing.is_empty() {
        return results;
    }
    let loaded = tokio::time::timeout_at(deadline, script.load_async(redis)).await;
    if matches!(loaded, Ok(Ok(_))) {
        let retried = pipeline(redis, missing.iter().map(|&i| commands[i]), deadline).await;
        if let Ok(each) = results.as_mut() {
            match retried {
                Ok(second) => {
                    for (i, r) in missing.into_iter().zip(second) {
                        each[i] = r;
                    }
                }
                Err(e) => {
                    for i in missing {
                        each[i] = Err(e.clone());
                    }
                }
            }
        }
    }
    results
}

/// `commands` as one pipeline, each answer in its place.
async fn pipeline<'a, T: FromRedisValue>(
    redis: &mut Redis,
    commands: impl Iterator<Item = &'a Cmd>,
    deadline: Instant,
) -> RedisResult<Vec<RedisResult<T>>> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for command in commands {
        pipe.add_command(command.clone());
    }
    match tokio::time::timeout_at(deadline, pipe.query_async(redis)).await {
        Ok(result) => result,
        Err(_) => Err(timed_out()),
    }
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "redis did not answer in time",
    ))
}

fn gone() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the node's publisher has stopped",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_reply_is_read_from_its_one_string() {
        let reply = Value::BulkString(b"a1b2c3d4e5f6 42 -1 0 0".to_vec());
        assert_eq!(
            Published::from_redis_value(reply).ok(),
            Some(Published {
                epoch: "a1b2c3d4e5f6".into(),
                offset: 42,
                taken: -1,
                milli_tokens: 0,
                slow_wait_ms: 0,
            })
        );
        for bad in [
            "",
            "e 1 2 3",
            "e 1 2 3 4 5",
            "e x 0 0 0",
            "e -1 0 0 0",
            " 1 0 0 0",
        ] {
            let reply = Value::BulkString(bad.as_bytes().to_vec());
            assert!(Published::from_redis_value(reply).is_err(), "{bad:?}");
        }
        assert!(Published::from_redis_value(Value::Int(1)).is_err());
    }
}

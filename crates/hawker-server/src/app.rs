//! Building and running the application: two listeners (public, admin),
//! the shared state, and a graceful, bounded shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Environment, Settings};
use crate::http::{self, AppState};
use crate::listener::LimitedListener;
use crate::{db, telemetry};

pub struct Application {
    public: TcpListener,
    admin: TcpListener,
    state: AppState,
}

impl Application {
    /// Binds both listeners (port 0 picks a free port) and prepares the
    /// state; applies migrations first when `database.auto_migrate` is set.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // The metrics recorder first: the hub looks its hottest handles up
        // once (`hawker_hub::metrics`), and a handle taken before the
        // recorder exists would count nothing for the process's life.
        telemetry::metrics_handle();
        let settings = Arc::new(settings);
        let keys = Arc::new(settings.token_keys()?);
        let db = db::pool(&settings.database)?;
        if settings.database.auto_migrate {
            db::ensure_database(&settings.database.url).await?;
            db::migrate(&db).await?;
        }
        // `make run` on a fresh machine shows a working product: an empty
        // development database gets the demo once (never in test or production).
        if settings.environment == Environment::Development && crate::seed::seed_if_empty(&db).await? {
            tracing::info!("the development database was empty: demo data seeded");
        }
        let target = settings
            .redis
            .target()
            .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.reason))?;
        let redis_timeout = Duration::from_millis(settings.redis.response_timeout_ms);
        let redis = hawker_redis::Redis::connect_lazy(&target, redis_timeout)
            .with_context(|| format!("redis `{}`", target.describe()))?;
        let subscribe_via = hawker_hub::subscriber::Source::from_target(&target)
            .with_context(|| format!("redis `{}`", target.describe()))?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let hub = hawker_hub::Hub::start(
            settings.hub.clone(),
            redis_timeout,
            redis.clone(),
            subscribe_via,
            Some(db.clone()),
            shutdown.clone(),
            tasks.clone(),
        );
        let commerce = hawker_commerce::Commerce::start(
            settings.commerce.clone(),
            db.clone(),
            redis.clone(),
            hub.clone(),
            settings.payments.webhook_secret.clone(),
            shutdown.clone(),
            tasks.clone(),
        );
        // Auctions and giveaways (hawker-live).
        let live = hawker_live::Live::start(
            settings.live.clone(),
            db.clone(),
            redis.clone(),
            commerce.clone(),
            shutdown.clone(),
            tasks.clone(),
        );
        // Commission accrual and the live-figures sampler (hawker-ledger).
        hawker_ledger::start(
            hawker_ledger::Workers {
                sample_retention: settings.retention.session_sample(),
                sweep_every: Duration::from_secs(settings.retention.sweep_every_secs),
                sweep_batch: settings.retention.sweep_batch,
                ..hawker_ledger::Workers::default()
            },
            &db,
            hub.clone(),
            shutdown.clone(),
            &tasks,
        );
        let public = crate::listener::bind(settings.server.listen, settings.server.accept_backlog)
            .with_context(|| format!("binding server.listen {}", settings.server.listen))?;
        let admin = TcpListener::bind(settings.server.admin_listen)
            .await
            .with_context(|| format!("binding server.admin_listen {}", settings.server.admin_listen))?;
        let client_sockets =
            crate::client_ip::PerAddress::new(settings.server.max_connections_per_ip, Vec::new());
        let state = AppState::new(crate::http::AppParts {
            settings,
            db,
            redis,
            keys,
            shutdown,
            tasks,
            hub,
            commerce,
            live,
            sessions: Arc::new(hawker_agency::session_cache::SessionCache::new(
                Duration::from_secs(1),
            )),
            client_sockets,
        });
        Ok(Application { public, admin, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .unwrap_or_else(|_| self.state.settings.server.listen)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or_else(|_| self.state.settings.server.admin_listen)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Cancelling this token starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then stops accepting,
    /// lets in-flight requests and sockets finish, bounded by
    /// `server.shutdown_grace_secs`.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application { public, admin, state } = self;
        let tracker = state.tasks.clone();
        let shutdown = state.shutdown.clone();
        let grace = state.settings.server.shutdown_grace();
        let max_connections = state.settings.server.max_connections;

        let metrics = telemetry::metrics_handle();
        // Histograms are drained only on render or upkeep: without upkeep a
        // node nobody scrapes would grow without bound.
        {
            let metrics = metrics.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = every.tick() => metrics.run_upkeep(),
                    }
                }
            });
        }
        let admin_app = http::admin_app(state.clone(), metrics);
        let public_app = http::public_app(state.clone());

        // Readiness turns 503 the moment shutdown starts; the listeners keep
        // accepting for `shutdown_drain_ms` so a load balancer sees it first.
        let drain = Duration::from_millis(state.settings.server.shutdown_drain_ms);
        let stop_accepting = |shutdown: CancellationToken| async move {
            shutdown.cancelled().await;
            tokio::time::sleep(drain).await;
        };
        let server = &state.settings.server;
        let public_listener = LimitedListener::new(
            public,
            max_connections,
            server.max_connections_per_ip,
            server.trusted_proxies.clone(),
        );
        let public_server = crate::serve::serve(
            public_listener,
            public_app,
            server.trusted_proxies.clone().into(),
            Duration::from_secs(server.header_read_timeout_secs),
            stop_accepting(shutdown.clone()),
        );
        let admin_server =
            axum::serve(admin, admin_app).with_graceful_shutdown(stop_accepting(shutdown.clone()));

        let public_task = tokio::spawn(async move {
            public_server.await;
            std::io::Result::Ok(())
        });
        let admin_task = tokio::spawn(async move { admin_server.await });

        shutdown.cancelled().await;
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutdown started: draining requests and sockets"
        );
        tracker.close();
        let drained = tokio::time::timeout(grace + drain, async {
            let (p, a) = tokio::join!(public_task, admin_task);
            // Purchases admitted during the drain are settled before the
            // settlement task ends.
            state.commerce.close_settlement();
            tracker.wait().await;
            (p, a)
        })
        .await;
        match drained {
            Ok((p, a)) => {
                p.context("public server task")?.context("public server")?;
                a.context("admin server task")?.context("admin server")?;
                tracing::info!("shutdown complete");
            }
            Err(_) => tracing::warn!("shutdown deadline reached; closing what is left"),
        }
        state.commerce.close_settlement();
        // Bounded too: a connection stuck in a query must not hold the exit.
        let _ = tokio::time::timeout(Duration::from_secs(1), state.db.close()).await;
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = terminate => tracing::info!("SIGTERM received"),
    }
}

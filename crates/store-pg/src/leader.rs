//! Leadership of replicas through PostgreSQL: work that must run once
//! (pollers, backfill schedules, pruning, settling) runs on the one replica
//! that holds a session advisory lock (`pg_try_advisory_lock`) on a
//! dedicated connection. [`Leader`] runs a thread that contends for the
//! lock, renews the term while it holds it, and publishes "am I leader"
//! ([`Leader::is_leader`], [`Leader::watch`]).
//!
//! * A leader that dies (crash, SIGKILL, its machine's kernel closing the
//!   socket) loses the lock with its connection: a contender takes it at
//!   its next try, within `check_interval`.
//! * A leader that hangs (stopped process, partition) keeps its session
//!   open, so the lock alone would be held forever. Each term therefore has
//!   a heartbeat row (`leader_terms`, server clock) the leader renews every
//!   `check_interval`; a contender that finds it older than
//!   [`LeaderConfig::evict_after`] ends the holder's backend
//!   (`pg_terminate_backend`), which releases the lock. The hung leader
//!   itself stops believing it leads `lease` after it last *sent* a
//!   successful renewal (local monotonic clock), which is before any
//!   contender may evict it (`evict_after` > `lease`, and the server stamps
//!   the heartbeat after the leader sent it): never two leaders at once,
//!   as far as the two clocks run at the same rate. TCP keepalives and
//!   `tcp_user_timeout` on the connection (client side and, through
//!   `SET`, server side) make a dead peer's socket fail instead of hanging.
//! * Each term has an `epoch` (one more than the last). Work that writes
//!   can fence itself with [`fence`] (the exporter's writer does, for every
//!   write submitted with the term's [`Leader::term_fence`]): in its transaction, the term's row is
//!   locked `FOR KEY SHARE` while the epoch is still the one it led with, so a
//!   new term cannot begin until that transaction ends, and a stale
//!   leader's transaction finds no row and writes nothing. A work
//!   connection is prepared with [`work_session`]: the server ends a
//!   transaction idle for a lease, so a leader stopped inside one cannot
//!   hold the next term back.
//!
//! The worst-case takeover time is [`LeaderConfig::takeover_bound`].

use crate::PgStoreError;
use crate::connect::ConnectConfig;
use ci_slo_store::Fence;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What to contend for, and how fast.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The name of the work (one row of `leader_terms`), e.g. `"main"`.
    pub name: String,
    /// The advisory lock key (non-negative; [`LeaderConfig::new`] derives
    /// it from the name).
    pub key: i64,
    /// Who this replica is, for `leader_terms.holder` and the log.
    pub holder: String,
    /// A leader that could not renew its term for this long steps down.
    pub lease: Duration,
    /// How often a leader renews and a contender tries the lock.
    pub check_interval: Duration,
}

impl LeaderConfig {
    /// Defaults: a 10 s lease, renewed and contended every second.
    pub fn new(name: &str, holder: &str) -> LeaderConfig {
        LeaderConfig {
            name: name.to_string(),
            key: lock_key(name),
            holder: holder.to_string(),
            lease: Duration::from_secs(10),
            check_interval: Duration::from_secs(1),
        }
    }

    /// A holder whose heartbeat is older than this is evicted: half a lease
    /// after it stopped believing it leads.
    pub fn evict_after(&self) -> Duration {
        self.lease + self.lease / 2
    }

    /// The longest a dead or hung leader keeps the work from running: its
    /// heartbeat goes stale (`evict_after`), a contender notices at its next
    /// try and evicts it, and takes the lock at the try after; a second
    /// more is allowed for the database's answers (ending the backend, a
    /// reconnection). A leader whose process died is replaced faster:
    /// within about `check_interval` of its connection closing.
    pub fn takeover_bound(&self) -> Duration {
        self.evict_after() + self.check_interval * 3 + Duration::from_secs(1)
    }

    /// The connection settings that bound how long a dead peer's socket
    /// can keep a call waiting: keepalives and `tcp_user_timeout` of half a
    /// lease, and a connect timeout of one.
    pub fn client_config(&self, base: &postgres::Config) -> postgres::Config {
        let mut c = base.clone();
        let half = (self.lease / 2).max(Duration::from_secs(1));
        c.keepalives(true)
            .keepalives_idle(half)
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3)
            .tcp_user_timeout(half)
            .connect_timeout(self.lease);
        c
    }
}

/// A stable non-negative lock key for a name (FNV-1a, top bit cleared), in
/// a range apart from [`crate::migrate::MIGRATION_LOCK`].
pub fn lock_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"ci-slo-exporter leader ".iter().chain(name.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h >> 1) as i64
}

/// The current term, as this replica sees it.
#[derive(Debug, Clone, Copy)]
struct Term {
    epoch: i64,
    valid_until: Instant,
}

struct Shared {
    term: Mutex<Option<Term>>,
    stop: AtomicBool,
    watch: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn current(&self) -> Option<Term> {
        let term = *self.term.lock().expect("leader state lock");
        term.filter(|t| Instant::now() < t.valid_until)
    }

    fn set(&self, term: Option<Term>) {
        *self.term.lock().expect("leader state lock") = term;
        self.publish();
    }

    /// Tell watchers when "leading" changed (also when a term expired).
    fn publish(&self) {
        let leading = self.current().is_some();
        self.watch.send_if_modified(|v| {
            let changed = *v != leading;
            *v = leading;
            changed
        });
    }
}

/// This replica's side of the leadership: contends, leads, steps down.
/// Dropping it stops the thread and closes the connection (which releases
/// the lock).
pub struct Leader {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    config: LeaderConfig,
}

impl Leader {
    /// Start contending, connecting with `base` (the settings of
    /// [`LeaderConfig::client_config`] added; TLS as its `sslmode` says to
    /// the `postgres` crate, see [`ConnectConfig::from_client_config`]). The
    /// database must be migrated (`leader_terms`).
    pub fn start(base: &postgres::Config, config: LeaderConfig) -> Leader {
        Leader::start_with(&ConnectConfig::from(base), config)
    }

    /// [`Leader::start`] with the exporter's connection configuration
    /// (the same TLS settings as the store's connections).
    pub fn start_with(base: &ConnectConfig, config: LeaderConfig) -> Leader {
        let (watch, _) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            term: Mutex::new(None),
            stop: AtomicBool::new(false),
            watch,
        });
        let mut client_config = base.clone();
        *client_config.client_config_mut() = config.client_config(client_config.client_config());
        let thread = {
            let (shared, config) = (shared.clone(), config.clone());
            std::thread::Builder::new()
                .name(format!("leader-{}", config.name))
                .spawn(move || contend(&client_config, &config, &shared))
                .expect("spawn the leader thread")
        };
        Leader {
            shared,
            thread: Some(thread),
            config,
        }
    }

    /// Whether this replica leads now (its term renewed within the lease).
    pub fn is_leader(&self) -> bool {
        self.shared.current().is_some()
    }

    /// The epoch of the term this replica leads, if it leads.
    pub fn epoch(&self) -> Option<i64> {
        self.shared.current().map(|t| t.epoch)
    }

    /// The fence of the term this replica leads, if it leads: the writes
    /// of the term's work are submitted fenced by it
    /// (`StoreHandle::fenced`), so that a write this replica queued before
    /// its term ended does not commit after a newer term began.
    pub fn term_fence(&self) -> Option<Fence> {
        self.shared.current().map(|t| Fence {
            name: self.config.name.clone(),
            epoch: t.epoch,
            lease: self.config.lease,
        })
    }

    /// A watch of "leading": true while this replica leads. It follows
    /// [`Leader::is_leader`] within a `check_interval`; check `is_leader`
    /// (or [`fence`] a write) before each unit of work.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.watch.subscribe()
    }

    pub fn config(&self) -> &LeaderConfig {
        &self.config
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.set(None);
    }
}

/// In a transaction of leader work: true when `epoch` is still the term of
/// `name`, and then no new term can begin before this transaction ends
/// (the term's row is locked `FOR KEY SHARE`: a new term deletes it, which
/// waits; the leader's renewals, plain updates, do not). False: a newer
/// leader took over; write nothing. The connection must be prepared with
/// [`work_session`] (or the transaction bounded by `SET LOCAL` timeouts of
/// a lease, as the exporter's writer does: `PgStore`'s `Engine::fence`),
/// and the transaction be shorter than a lease.
pub fn fence(tx: &mut impl crate::Sql, name: &str, epoch: i64) -> Result<bool, postgres::Error> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM leader_terms WHERE name = $1 AND epoch = $2 FOR KEY SHARE",
            &[&name, &epoch],
        )?
        .is_some())
}

/// Prepare a connection that runs fenced leader work: the server ends a
/// transaction left idle for longer than a lease (a leader stopped in the
/// middle of one would otherwise hold its fence, and so the next term,
/// forever), and no statement runs longer than a lease.
pub fn work_session(
    client: &mut postgres::Client,
    config: &LeaderConfig,
) -> Result<(), postgres::Error> {
    let lease = config.lease.as_millis();
    client.batch_execute(&format!(
        "SET idle_in_transaction_session_timeout = {lease}; SET statement_timeout = {lease}"
    ))
}

/// The thread: one connection at a time; on any error, drop it (which
/// releases the lock if held), step down and try again.
fn contend(client_config: &ConnectConfig, config: &LeaderConfig, shared: &Shared) {
    let mut conn: Option<postgres::Client> = None;
    let mut epoch: Option<i64> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        match step(client_config, config, &mut conn, epoch) {
            Ok(Some(e)) => {
                if epoch != Some(e) {
                    tracing::info!(name = %config.name, epoch = e, holder = %config.holder, "leading");
                }
                epoch = Some(e);
                shared.set(Some(Term {
                    epoch: e,
                    valid_until: sent + config.lease,
                }));
            }
            Ok(None) => {
                if epoch.take().is_some() {
                    tracing::warn!(name = %config.name, "no longer leading: a newer term began");
                    conn = None;
                }
                shared.set(None);
            }
            Err(e) => {
                if epoch.take().is_some() {
                    tracing::warn!(name = %config.name, error = %e, "no longer leading: the connection failed");
                } else {
                    tracing::debug!(name = %config.name, error = %e, "cannot contend for leadership");
                }
                conn = None;
                shared.set(None);
            }
        }
        // Sleep in slices: stop promptly, and publish an expired term.
        let wake = Instant::now() + config.check_interval;
        while !shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= wake {
                break;
            }
            std::thread::sleep((wake - now).min(Duration::from_millis(20)));
            shared.publish();
        }
    }
}

/// One try: renew the term we lead, or take the lock (evicting a hung
/// holder first). Returns the epoch we lead, if any.
fn step(
    client_config: &ConnectConfig,
    config: &LeaderConfig,
    conn: &mut Option<postgres::Client>,
    epoch: Option<i64>,
) -> Result<Option<i64>, PgStoreError> {
    let client = match conn {
        Some(c) => c,
        None => conn.insert(open(client_config, config)?),
    };
    if let Some(epoch) = epoch {
        let renewed = client.execute(
            "UPDATE leader_terms SET heartbeat = now()
             WHERE name = $1 AND epoch = $2 AND holder_pid = pg_backend_pid()",
            &[&config.name, &epoch],
        )?;
        return Ok((renewed == 1).then_some(epoch));
    }
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&config.key])?
        .get(0);
    if got {
        // A new row rather than an update: deleting the old one waits for
        // the work transactions fenced on it (`FOR KEY SHARE`, see fence),
        // which the renewals (non-key updates) do not.
        let epoch: i64 = client
            .query_one(
                "WITH old AS (DELETE FROM leader_terms WHERE name = $1 RETURNING epoch)
                 INSERT INTO leader_terms (name, epoch, holder_pid, holder, heartbeat)
                 SELECT $1, coalesce((SELECT max(epoch) FROM old), 0) + 1, pg_backend_pid(), $2, now()
                 RETURNING epoch",
                &[&config.name, &config.holder],
            )?
            .get(0);
        return Ok(Some(epoch));
    }
    evict_if_hung(client, config)?;
    Ok(None)
}

/// Connect and set the server side's keepalives too (an idle backend whose
/// client vanished notices within about half a lease).
fn open(
    client_config: &ConnectConfig,
    config: &LeaderConfig,
) -> Result<postgres::Client, PgStoreError> {
    let mut client = client_config.connect()?;
    let half = (config.lease / 2).max(Duration::from_secs(1));
    // No statement may keep the thread waiting past a lease (taking a new
    // term waits for fenced work transactions: see work_session).
    client.batch_execute(&format!(
        "SET tcp_keepalives_idle = {secs}; SET tcp_keepalives_interval = 1; \
         SET tcp_keepalives_count = 3; SET tcp_user_timeout = {ms}; \
         SET statement_timeout = {lease}; SET lock_timeout = {lease}",
        secs = half.as_secs(),
        ms = half.as_millis(),
        lease = config.lease.as_millis(),
    ))?;
    Ok(client)
}

/// End the backend of a holder whose heartbeat is older than
/// `evict_after` (it still holds the lock, or it would not be found).
fn evict_if_hung(client: &mut postgres::Client, config: &LeaderConfig) -> Result<(), PgStoreError> {
    let stale_ms = config.evict_after().as_millis() as i64;
    let evicted = client.query(
        "SELECT t.holder, t.epoch, pg_terminate_backend(l.pid)
         FROM leader_terms t
         JOIN pg_locks l ON l.pid = t.holder_pid AND l.locktype = 'advisory' AND l.granted
              AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND ((l.classid::bigint << 32) | l.objid::bigint) = $2
         WHERE t.name = $1 AND t.heartbeat < now() - $3::bigint * interval '1 millisecond'",
        &[&config.name, &config.key, &stale_ms],
    )?;
    for row in evicted {
        let (holder, epoch): (String, i64) = (row.get(0), row.get(1));
        tracing::warn!(
            name = %config.name,
            holder = %holder,
            epoch,
            "evicted a leader whose heartbeat stopped"
        );
    }
    Ok(())
}

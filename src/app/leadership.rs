//! Leadership: the work that must run once among the replicas of one
//! database (forge polling, settling merged changes and lost runs, pruning)
//! runs on this replica only while it leads.
//!
//! [`run`] starts that work when leadership is gained and stops it when it
//! is lost, at the same safe points as a shutdown: each task ends when its
//! stop watch turns true, between two units of work or at the request or
//! write it awaits (a store write already submitted is one transaction the
//! writer finishes). It starts the work again, afresh, when leadership is
//! regained. `ci_exporter_leader` is 1 while the work runs, 0 otherwise.
//!
//! Each term's work gets the store fenced by the term
//! ([`StoreHandle::fenced`] with [`Leader::term_fence`]): a write it
//! submitted just before the term ended (and that the writer runs after) is
//! not run once a newer term began, it fails with `StoreError::Fenced`
//! instead. Stopping the tasks alone cannot promise that: the write may
//! still be queued when the term ends, or be run while a newer leader
//! already works.
//!
//! Where "this replica leads" comes from is a [`Leadership`]:
//!
//! * [`Leadership::always`]: the SQLite store, a file only one process
//!   serves, so this replica always leads (the work starts at once, before
//!   [`run`] returns).
//! * [`Leadership::of`]: a PostgreSQL [`Leader`] (session advisory lock,
//!   heartbeat lease, epochs; `ci_slo_store_pg::leader`): the work follows
//!   [`Leader::watch`], the log names the epoch of each term, and the
//!   term's writes are fenced by it.
//! * [`Leadership::follow`]: any watch of "leading" (tests drive one by
//!   hand).

use crate::forge::stopped;
use crate::metrics::MetricsHub;
use crate::store::Fence;
use crate::store::writer::StoreHandle;
use ci_slo_store_pg::leader::Leader;
use std::sync::{Arc, Weak};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Whether this replica leads, as it changes.
pub struct Leadership {
    /// True while this replica leads. When the sender is gone, its last
    /// value is final.
    leading: watch::Receiver<bool>,
    source: Source,
}

enum Source {
    /// The SQLite store: always leading, nothing to log.
    Always,
    /// A hand-driven watch: no epochs.
    Watch,
    /// A PostgreSQL leader, not kept alive by this (whoever started it
    /// holds it; dropping it gives leadership up), and a fence of its
    /// leadership that never holds (epochs begin at 1), for work that
    /// begins after the term already ended.
    Leader { leader: Weak<Leader>, ended: Fence },
}

impl Leadership {
    /// This replica always leads (the SQLite store).
    pub fn always() -> Leadership {
        Leadership {
            leading: watch::channel(true).1,
            source: Source::Always,
        }
    }

    /// Lead while `leading` is true.
    pub fn follow(leading: watch::Receiver<bool>) -> Leadership {
        Leadership {
            leading,
            source: Source::Watch,
        }
    }

    /// Lead while `leader` leads ([`Leader::watch`]). The caller keeps the
    /// `Leader` for as long as the replica serves: dropping it gives the
    /// leadership up (the work stops), and lets another replica take it.
    pub fn of(leader: &Arc<Leader>) -> Leadership {
        let config = leader.config();
        Leadership {
            leading: leader.watch(),
            source: Source::Leader {
                leader: Arc::downgrade(leader),
                ended: Fence {
                    name: config.name.clone(),
                    epoch: 0,
                    lease: config.lease,
                },
            },
        }
    }

    /// The fence of the term this replica leads, when there are terms (a
    /// fence that never holds if the term already ended).
    fn fence(&self) -> Option<Fence> {
        match &self.source {
            Source::Leader { leader, ended } => Some(
                leader
                    .upgrade()
                    .and_then(|l| l.term_fence())
                    .unwrap_or_else(|| ended.clone()),
            ),
            Source::Always | Source::Watch => None,
        }
    }
}

/// Run the work that must run once while this replica leads, until `stop`
/// turns true (or its sender is gone): `work(stop, store)` spawns the tasks
/// of one term, each of which ends when its `stop` turns true (or its
/// sender is gone) and writes through `store`, fenced by the term when
/// there are terms (PostgreSQL). When leadership is lost, the term's tasks are told to stop and
/// awaited before `ci_exporter_leader` turns 0; when it is regained, `work`
/// is called again. If this replica leads already, the first term starts
/// before this returns. The returned task ends after the last term's tasks
/// did.
pub fn run<W>(
    leadership: Leadership,
    mut stop: watch::Receiver<bool>,
    hub: Arc<MetricsHub>,
    store: StoreHandle,
    mut work: W,
) -> JoinHandle<()>
where
    W: FnMut(watch::Receiver<bool>, StoreHandle) -> Vec<JoinHandle<()>> + Send + 'static,
{
    hub.self_metrics.set_leader(false);
    let mut leading = leadership.leading.clone();
    let leads_now = *leading.borrow_and_update() && !*stop.borrow();
    let mut term = leads_now.then(|| Term::begin(&leadership, &hub, &store, &mut work));
    tokio::spawn(async move {
        loop {
            match term.take() {
                Some(running) => {
                    let shutdown = tokio::select! {
                        _ = stopped(&mut stop) => true,
                        _ = turns(&mut leading, false) => false,
                    };
                    running.end(&leadership, &hub, shutdown).await;
                    if shutdown {
                        return;
                    }
                }
                None => {
                    tokio::select! {
                        _ = stopped(&mut stop) => return,
                        _ = turns(&mut leading, true) => {}
                    }
                    term = Some(Term::begin(&leadership, &hub, &store, &mut work));
                }
            }
        }
    })
}

/// Until `leading` is `to`; forever if its sender is gone first (the last
/// value is final).
async fn turns(leading: &mut watch::Receiver<bool>, to: bool) {
    if leading.wait_for(|l| *l == to).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One term of leadership: the work's tasks and how to stop them.
struct Term {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    epoch: Option<i64>,
}

impl Term {
    fn begin<W>(
        leadership: &Leadership,
        hub: &MetricsHub,
        store: &StoreHandle,
        work: &mut W,
    ) -> Term
    where
        W: FnMut(watch::Receiver<bool>, StoreHandle) -> Vec<JoinHandle<()>>,
    {
        let fence = leadership.fence();
        // Epoch 0: the term ended before its work began (nothing to name).
        let epoch = fence.as_ref().map(|f| f.epoch).filter(|e| *e > 0);
        match (&leadership.source, epoch) {
            (Source::Always, _) => {}
            (_, Some(epoch)) => tracing::info!(
                epoch,
                "leadership gained: starting the work that runs once (forge polling, settling, pruning)"
            ),
            (_, None) => tracing::info!(
                "leadership gained: starting the work that runs once (forge polling, settling, pruning)"
            ),
        }
        let (stop, stopping) = watch::channel(false);
        let store = match fence {
            Some(fence) => store.fenced(fence),
            None => store.clone(),
        };
        let tasks = work(stopping, store);
        hub.self_metrics.set_leader(true);
        Term { stop, tasks, epoch }
    }

    /// Stop the tasks and wait for them.
    async fn end(self, leadership: &Leadership, hub: &MetricsHub, shutdown: bool) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        hub.self_metrics.set_leader(false);
        match (shutdown, &leadership.source, self.epoch) {
            (true, _, _) | (_, Source::Always, _) => {}
            (false, _, Some(epoch)) => tracing::warn!(
                epoch,
                "leadership lost: the work that runs once stopped (another replica may take it over)"
            ),
            (false, _, None) => tracing::warn!(
                "leadership lost: the work that runs once stopped (another replica may take it over)"
            ),
        }
    }
}

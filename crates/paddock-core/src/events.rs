//! The event log's live side: fan-out to subscribers, with resume.
//!
//! Events are written to the store first, inside the transaction that made
//! them, and only then broadcast. A subscriber resuming from an id reads
//! the stored events after it, then takes live ones, skipping what it has
//! already delivered: no gap and no duplicate between the two. A subscriber
//! that falls behind the broadcast buffer reads the store again.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::model::Event;
use crate::store::Store;

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(4096);
        EventBus { tx }
    }
}

/// Which events a subscriber wants.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub owner: Option<String>,
    pub sandbox: Option<Uuid>,
    /// Resume after this id: per-sandbox id with `sandbox`, else global seq.
    pub after: i64,
}

impl EventBus {
    pub fn publish(&self, ev: Event) {
        let _ = self.tx.send(Arc::new(ev));
    }

    /// Publishes events in their order (a transaction's, by sequence).
    pub fn publish_all(&self, evs: Vec<Event>) {
        evs.into_iter().for_each(|e| self.publish(e));
    }

    pub fn subscribe(
        &self,
        store: Arc<Store>,
        sub: Subscription,
    ) -> impl Stream<Item = Event> + Send + 'static {
        let rx = self.tx.subscribe();
        let cursor = |e: &Event, per_sandbox: bool| if per_sandbox { e.id } else { e.seq };
        futures::stream::unfold(
            (rx, sub, std::collections::VecDeque::<Event>::new(), true),
            move |(mut rx, mut sub, mut backlog, mut need_store)| {
                let store = store.clone();
                async move {
                    let per_sandbox = sub.sandbox.is_some();
                    loop {
                        if let Some(ev) = backlog.pop_front() {
                            sub.after = cursor(&ev, per_sandbox);
                            return Some((ev, (rx, sub, backlog, need_store)));
                        }
                        if need_store {
                            need_store = false;
                            let evs = store
                                .events_after(sub.owner.as_deref(), sub.sandbox, sub.after, 1000)
                                .unwrap_or_default();
                            if evs.len() == 1000 {
                                need_store = true;
                            }
                            backlog.extend(evs);
                            continue;
                        }
                        match rx.recv().await {
                            Ok(ev) => {
                                if sub.sandbox.is_some_and(|s| s != ev.sandbox_id) {
                                    continue;
                                }
                                if sub.owner.as_ref().is_some_and(|o| *o != ev.owner) {
                                    continue;
                                }
                                if cursor(&ev, per_sandbox) <= sub.after {
                                    continue;
                                }
                                backlog.push_back((*ev).clone());
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => need_store = true,
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }
            },
        )
    }
}

//! Events: each state change written with its event in one transaction
//! ([`Engine::transition`]), events emitted alongside or deferred, and
//! reading them back.

use super::*;

impl Engine {
    /// Changes a sandbox and records the event `data` in one transaction.
    pub(super) fn transition(
        &self,
        id: Uuid,
        data: EventData,
        f: impl FnOnce(&mut Sandbox),
    ) -> Result<Sandbox> {
        self.store.tx_events(
            |tx| {
                let mut sb = Store::sandbox_in(tx, id)?;
                f(&mut sb);
                sb.updated_at = Utc::now();
                Store::put_sandbox(tx, &sb)?;
                let ev = Store::append_event(tx, id, &sb.owner, data)?;
                Ok((sb, vec![ev]))
            },
            |evs| self.bus.publish_all(evs),
        )
    }

    /// Records an activity event; returns its per-sandbox id.
    pub(super) fn emit(&self, sb: &Sandbox, data: EventData) -> Option<i64> {
        record(&self.store, &self.bus, sb.id, &sb.owner, data)
    }

    /// Records an activity event on the blocking pool while the caller goes
    /// on: for `exec.request`, whose transaction otherwise delayed the
    /// command (paired runs: the round trip 0.05-0.12 ms shorter, the
    /// daemon's CPU 0.02 ms more for the hand-over). The caller awaits the
    /// write (attempted, as `emit`'s: a failed one is logged) before it
    /// answers. The command may start before its record commits (usually
    /// ~0.1 ms; longer when the store is busy), so a daemon killed in
    /// between leaves a command that ran unrecorded, and a quick command
    /// can finish before its request is numbered.
    pub(super) fn emit_alongside(
        &self,
        sb: &Sandbox,
        data: EventData,
    ) -> impl std::future::Future<Output = Option<i64>> {
        let kind = data.kind().to_string();
        let (store, bus, id, owner) = (
            self.store.clone(),
            self.bus.clone(),
            sb.id,
            sb.owner.clone(),
        );
        // Started now; the future only collects its id.
        let write = tokio::task::spawn_blocking(move || record(&store, &bus, id, &owner, data));
        async move {
            write.await.unwrap_or_else(|e| {
                tracing::warn!(sandbox = %id, "event {kind} not recorded: {e}");
                None
            })
        }
    }

    /// Records an event that closes what a synchronously recorded one
    /// opened (`exec.response`, `fs.response`) without a transaction of its
    /// own: it is written with the next event, or within [`DEFER_FLUSH`]
    /// (see [`Store::defer_event`]). An exec's round trip then costs one
    /// SQLite transaction instead of two (daemon CPU per exec: two cost
    /// 0.2 ms of its 0.62).
    pub(super) fn emit_later(&self, sb: &Sandbox, data: EventData) {
        self.store.defer_event(sb.id, &sb.owner, data);
    }

    /// Writes deferred events now, so that a read of the log sees them.
    pub(super) fn flush_events(&self) {
        flush(&self.store, &self.bus);
    }

    /// Events of one sandbox (after its per-sandbox id `after`), or of all
    /// of `p`'s sandboxes (after the global sequence number `after`).
    pub fn events(
        &self,
        p: &Principal,
        sandbox: Option<Uuid>,
        after: i64,
    ) -> Result<impl Stream<Item = Event> + Send + 'static> {
        if let Some(id) = sandbox {
            self.get(p, id)?;
        }
        self.flush_events();
        let all = self.bus.subscribe(
            self.store.clone(),
            Subscription {
                owner: Some(p.id.clone()),
                sandbox,
                after,
            },
        );
        // A token scoped to some sandboxes sees their events alone.
        let scope = p.scope.clone().filter(|s| s.sandboxes.is_some());
        Ok(match scope {
            None => all.left_stream(),
            Some(s) => all
                .filter(move |ev| std::future::ready(s.allows_sandbox(ev.sandbox_id)))
                .right_stream(),
        })
    }

    /// The daemon-wide sequence number of the newest event: subscribe
    /// after it to see only what happens from now on.
    pub fn last_event_seq(&self) -> Result<i64> {
        self.flush_events();
        self.store.last_seq()
    }
}

/// How long a deferred event waits for a transaction to ride in before it
/// gets one of its own: live subscribers see it this much later at most.
pub(super) const DEFER_FLUSH: std::time::Duration = std::time::Duration::from_millis(20);

/// Writes one event in a transaction of its own and publishes it; its
/// per-sandbox id, or None (logged) when it could not be written.
pub(super) fn record(
    store: &Store,
    bus: &EventBus,
    id: Uuid,
    owner: &str,
    data: EventData,
) -> Option<i64> {
    let kind = data.kind().to_string();
    let r = store.tx_events(
        |tx| {
            let ev = Store::append_event(tx, id, owner, data)?;
            Ok((ev.id, vec![ev]))
        },
        |evs| bus.publish_all(evs),
    );
    match r {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(sandbox = %id, "event {kind} not recorded: {e}");
            None
        }
    }
}

/// Writes the deferred events and publishes them.
pub(super) fn flush(store: &Store, bus: &EventBus) {
    if let Err(e) = store.flush_deferred(|evs| bus.publish_all(evs)) {
        tracing::warn!("deferred events not recorded yet: {e}");
    }
}

//! The reaper: TTLs and idle timeouts, and the audit log's records past
//! their retention.

use super::*;

impl Engine {
    /// One pass of the reaper: destroys sandboxes whose TTL or idle timeout
    /// lapsed, or hibernates those idle that hibernate. Returns how many it
    /// acted on.
    pub async fn reap_once(self: &Arc<Self>) -> usize {
        let now = Utc::now();
        let Ok(all) = self.store.live_sandboxes() else {
            return 0;
        };
        let mut n = 0;
        for sb in all {
            let expired = sb.expires_at.is_some_and(|t| t <= now);
            if sb.config.on_idle == IdleAction::Suspend && sb.state == State::Running {
                self.note_traffic(&sb).await;
            }
            let idle = match sb.config.idle_timeout_secs {
                Some(secs) => {
                    let last = match self.live.read().await.get(&sb.id) {
                        Some(l) => l.last_active_ms.load(Ordering::Relaxed),
                        None => sb.last_active_at.timestamp_millis(),
                    };
                    now.timestamp_millis() - last >= (secs as i64).saturating_mul(1000)
                        && sb.state == State::Running
                }
                None => false,
            };
            // Idle and hibernating, or a workspace's sandbox past its TTL
            // (a policy's): scaled to zero, its files kept. In a task of
            // its own: a snapshot takes a while, and a busy workspace must
            // hold no other sandbox's reaping.
            let hibernate = if expired {
                sb.labels.contains_key(WORKSPACE_LABEL)
            } else {
                idle && sb.config.on_idle == IdleAction::Hibernate
            };
            if idle && !expired && sb.config.on_idle == IdleAction::Suspend {
                let (engine, id) = (self.clone(), sb.id);
                let owner = Principal::new(sb.owner.clone()).via("reaper");
                tokio::spawn(async move {
                    if let Err(e) = engine.pause(&owner, id).await {
                        tracing::warn!(sandbox = %id, "reaper: suspend: {e}");
                    }
                });
                n += 1;
                continue;
            }
            if hibernate {
                let (engine, id) = (self.clone(), sb.id);
                tokio::spawn(async move {
                    if let Err(e) = engine.hibernate_idle(sb, expired).await {
                        tracing::warn!(sandbox = %id, "reaper: hibernate: {e}");
                    }
                });
                n += 1;
                continue;
            }
            if expired || idle {
                let reason = if expired { "ttl" } else { "idle" };
                let id = sb.id;
                match self.destroy_inner(sb, reason).await {
                    Ok(_) => n += 1,
                    Err(e) => tracing::warn!(sandbox = %id, "reaper: {e}"),
                }
            }
        }
        n
    }

    /// Counts traffic on `sb`'s network since the last look as activity
    /// (an idle timeout that suspends is about the network, not only
    /// calls).
    async fn note_traffic(&self, sb: &Sandbox) {
        let Some(live) = self.live.read().await.get(&sb.id).cloned() else {
            return;
        };
        let Ok(rt) = self.runtime_of(sb) else {
            return;
        };
        if let Ok(m) = rt.metrics(sb.id).await {
            let seen = m.net_rx_bytes.wrapping_add(m.net_tx_bytes);
            if live.net_bytes.swap(seen, Ordering::Relaxed) != seen {
                self.mark_active(sb, &live);
            }
        }
    }

    /// Removes audit records older than the retention; how many.
    pub fn prune_audit(&self) -> usize {
        let Some(keep) = self.cfg.audit_retention else {
            return 0;
        };
        let Some(before) = chrono::TimeDelta::from_std(keep)
            .ok()
            .and_then(|d| Utc::now().checked_sub_signed(d))
        else {
            return 0;
        };
        match self.store.prune_audit(before) {
            Ok(n) => {
                if n > 0 {
                    tracing::info!("audit log: {n} records past the retention removed");
                }
                n
            }
            Err(e) => {
                tracing::warn!("audit log: pruning: {e}");
                0
            }
        }
    }

    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(engine.cfg.reap_interval);
            let mut pruned = std::time::Instant::now() - AUDIT_PRUNE_EVERY;
            loop {
                tick.tick().await;
                engine.reap_once().await;
                if pruned.elapsed() >= AUDIT_PRUNE_EVERY {
                    pruned = std::time::Instant::now();
                    engine.prune_audit();
                }
            }
        })
    }
}

/// How often the audit log is pruned.
const AUDIT_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

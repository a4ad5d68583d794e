//! The monitor: deaths of sandboxes and the main processes' output.

use super::*;

impl Engine {
    /// Watches running sandboxes: the main process's output is followed
    /// (`follow_main_output`: stored on the host, and `stdio` events), and
    /// sandboxes that asked for it get a `resource.usage` event every
    /// `usage_events_secs`.
    pub fn spawn_monitor(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            // Each running sandbox's follower, and when it was started (one
            // that ended, its agent gone for a moment, starts again after
            // a second).
            let mut followers: HashMap<Uuid, (tokio::task::JoinHandle<()>, std::time::Instant)> =
                HashMap::new();
            let mut usage_due: HashMap<Uuid, std::time::Instant> = HashMap::new();
            // What to watch in each sandbox, read once: (sandbox, has a main
            // process, usage interval). None: nothing to watch.
            let mut watch: HashMap<Uuid, Option<(Sandbox, bool, Option<u64>)>> = HashMap::new();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut round: u64 = 0;
            let mut checked_round: u64 = 0;
            let mut dead_seen: HashMap<Uuid, u32> = HashMap::new();
            loop {
                // A sandbox that was just attached is looked at at once
                // (its main process's output followed from its start).
                tokio::select! {
                    _ = tick.tick() => round += 1,
                    _ = engine.attached.notified() => {}
                }
                let ids: HashSet<Uuid> = engine.live.read().await.keys().copied().collect();
                if round.is_multiple_of(4) && round != checked_round {
                    checked_round = round;
                    engine.check_alive(&ids, &mut dead_seen).await;
                }
                followers.retain(|id, (task, _)| {
                    let keep = ids.contains(id);
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                usage_due.retain(|id, _| ids.contains(id));
                watch.retain(|id, _| ids.contains(id));
                for id in ids {
                    let entry = match watch.get(&id) {
                        Some(e) => e.clone(),
                        None => {
                            let Ok(Some(sb)) = engine.store.get_sandbox(id) else {
                                continue;
                            };
                            let main = !sb.config.main_process().is_empty();
                            let usage = sb.config.usage_events_secs.filter(|s| *s > 0);
                            // A pooled sandbox changes owner at hand-over:
                            // read it again until then.
                            let pooled = sb.owner == pool::POOL_OWNER;
                            let e = (main || usage.is_some()).then_some((sb, main, usage));
                            if !pooled {
                                watch.insert(id, e.clone());
                            }
                            e
                        }
                    };
                    let Some((sb, main, usage)) = entry else {
                        continue;
                    };
                    let Ok(rt) = engine.runtime_of(&sb) else {
                        continue;
                    };
                    // (A pooled sandbox's output waits in its agent until
                    // its hand-over: its events are the new owner's.)
                    if main && sb.owner != pool::POOL_OWNER {
                        let due = followers.get(&id).is_none_or(|(task, at)| {
                            task.is_finished() && at.elapsed() >= std::time::Duration::from_secs(1)
                        });
                        if due {
                            let task = tokio::spawn(engine.clone().follow_main_output(sb.clone()));
                            followers.insert(id, (task, std::time::Instant::now()));
                        }
                    }
                    if let Some(secs) = usage {
                        let now = std::time::Instant::now();
                        let due = *usage_due.entry(id).or_insert(now);
                        if now >= due {
                            usage_due.insert(id, now + std::time::Duration::from_secs(secs));
                            if let Ok(m) = rt.metrics(id).await {
                                engine.emit(
                                    &sb,
                                    EventData::ResourceUsage(ev::Usage {
                                        cpu_percent: m.cpu_percent,
                                        memory_bytes: m.memory_bytes,
                                    }),
                                );
                            }
                        }
                    }
                }
            }
        })
    }

    /// Follows a running sandbox's main-process output from where the
    /// store left off: appends it to the host's log (`logs::LogStore`) and
    /// publishes it as `stdio` events. Ends when the agent goes.
    pub(super) async fn follow_main_output(self: Arc<Self>, sb: Sandbox) {
        let Some(live) = self.live.read().await.get(&sb.id).cloned() else {
            return;
        };
        let mut from = self.logs.as_ref().map_or(0, |l| l.position(sb.id).agent);
        let mut output = match live.agent.main_output(from).await {
            Ok(s) => Box::pin(s),
            Err(e) => {
                tracing::debug!(sandbox = %sb.id, "main output: {e}");
                return;
            }
        };
        let mut text = crate::text::Utf8Chunks::default();
        while let Some(Ok((offset, data))) = output.next().await {
            from = match &self.logs {
                Some(logs) => match logs.append(sb.id, offset, &data) {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(sandbox = %sb.id, "main output not stored: {e}");
                        offset + data.len() as u64
                    }
                },
                None => offset + data.len() as u64,
            };
            let t = text.push(&data);
            if !t.is_empty() {
                self.emit(
                    &sb,
                    EventData::Stdio(ev::Stdio {
                        stdout: Some(t),
                        stderr: None,
                    }),
                );
            }
        }
        tracing::debug!(sandbox = %sb.id, at = from, "main output ended");
    }

    /// Stops serving sandbox `id` if it is still `running` and served (by
    /// `expect`, when given: not by a client made since) and returns its
    /// backend; the caller holds its lifecycle lock and is about to mark
    /// it dead.
    pub(super) async fn unserve_running(
        &self,
        id: Uuid,
        expect: Option<&Arc<Live>>,
    ) -> Option<Arc<dyn Runtime>> {
        let mut map = self.live.write().await;
        let served = match (expect, map.get(&id)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let rt = match self.store.get_sandbox(id) {
            Ok(Some(sb)) if served && sb.state == State::Running => {
                self.runtime_of(&sb).ok().cloned()
            }
            _ => None,
        }?;
        map.remove(&id);
        Some(rt)
    }

    /// Cleans up a sandbox whose processes are gone and records it:
    /// `sandbox.died`, state `error` with `msg`. The caller holds its
    /// lifecycle lock and has judged it dead under that lock.
    pub(super) async fn mark_died(
        &self,
        rt: &dyn Runtime,
        id: Uuid,
        msg: String,
    ) -> Result<Sandbox> {
        self.pools.forget(id);
        let _ = rt.destroy(id).await;
        self.transition(id, EventData::died(&msg), |s| {
            s.state = State::Error;
            s.message = Some(msg.clone());
            s.ip = None;
        })
    }

    /// Marks sandboxes whose init process is gone (seen twice, a second
    /// apart, so that a stop or destroy under way is not taken for a death):
    /// `sandbox.died`, state `error`, their resources cleaned up.
    pub(super) async fn check_alive(
        &self,
        ids: &HashSet<Uuid>,
        dead_seen: &mut HashMap<Uuid, u32>,
    ) {
        dead_seen.retain(|id, _| ids.contains(id));
        // One question per backend, about the sandboxes it runs (as
        // recorded when each was attached): two backends of one isolation
        // may both know a sandbox's id, only its own is asked.
        let mut by_backend: HashMap<String, Vec<Uuid>> = HashMap::new();
        for (id, live) in self.live.read().await.iter() {
            if ids.contains(id) {
                by_backend
                    .entry(live.backend.clone())
                    .or_default()
                    .push(*id);
            }
        }
        let mut seen: HashMap<Uuid, (bool, Arc<dyn Runtime>)> = HashMap::new();
        for (name, ids) in by_backend {
            let Some(rt) = self.runtimes.get(&name) else {
                continue;
            };
            for (id, alive) in rt.alive(&ids).await {
                if ids.contains(&id) {
                    seen.insert(id, (alive, rt.clone()));
                }
            }
        }
        for &id in ids {
            // Asked of the backends first: cheap, unlike the store.
            let rt = match seen.get(&id) {
                Some((false, rt)) => rt.clone(),
                _ => {
                    dead_seen.remove(&id);
                    continue;
                }
            };
            let Ok(Some(sb)) = self.store.get_sandbox(id) else {
                continue;
            };
            if sb.state != State::Running {
                dead_seen.remove(&id);
                continue;
            }
            let n = dead_seen.entry(id).or_insert(0);
            *n += 1;
            if *n < 2 {
                continue;
            }
            // Judged again under the lifecycle lock: a stop, destroy or
            // restart by its owner may have come in between. While one is
            // under way, next round (the monitor waits for nobody).
            let Some(_life) = self.lifecycles.try_lock(id) else {
                continue;
            };
            dead_seen.remove(&id);
            if rt.alive(&[id]).await.get(&id) != Some(&false)
                || self.unserve_running(id, None).await.is_none()
            {
                continue;
            }
            let msg = "its processes exited (the sandbox's init died)".to_string();
            tracing::warn!(sandbox = %id, "{msg}");
            let _ = self.mark_died(rt.as_ref(), id, msg).await;
        }
    }
}

//! Snapshots of sandboxes' filesystems and forks: the backend copies a
//! sandbox's writable layer out (frozen for the copy), the layer store
//! keeps it by its content, and new sandboxes stack it over their image.
//!
//! Layers are collected when nothing refers to them: no snapshot and no
//! sandbox that is not destroyed. A capture holds `layer_gc` shared from
//! its staging until its snapshot (or fork's children) are recorded;
//! collection holds it alone.

use super::*;
use crate::layers::{Layers, StoredLayer};
use crate::model::{Snapshot, SnapshotRequest, MAX_FORK, MAX_SNAPSHOT_LAYERS};

impl Engine {
    /// Where snapshot layers are kept (set once, before `recover`).
    pub fn set_layers(&self, layers: Arc<dyn Layers>) {
        let _ = self.layers.set(layers);
    }

    fn layers(&self) -> Result<Arc<dyn Layers>> {
        self.layers
            .get()
            .cloned()
            .ok_or_else(|| Error::Unsupported("snapshots (this daemon has no layer store)".into()))
    }

    /// Refuses a snapshot or fork `what` on `rt` that it cannot do: memory
    /// without `memory_snapshot` (naming the backends that will), files
    /// without `fs_snapshot`.
    fn can_capture(rt: &dyn Runtime, memory: bool) -> Result<()> {
        let caps = rt.capabilities();
        if memory && !caps.memory_snapshot {
            return Err(Error::Unsupported(format!(
                "keeping a sandbox's memory (\"memory\": true) on the {} backend (a container's \
                 processes cannot be saved on this host: CRIU does not work on its kernel; the \
                 gVisor (runsc) and microVM (qemu) backends will keep memory)",
                rt.name()
            )));
        }
        if !caps.fs_snapshot {
            return Err(rt.unsupported("filesystem snapshots"));
        }
        Ok(())
    }

    /// Copies `sb`'s filesystem out (its lifecycle lock and `layer_gc`
    /// held by the caller): its layer stack with the new top layer, the
    /// stack flattened past [`MAX_SNAPSHOT_LAYERS`].
    async fn capture_layers(
        &self,
        rt: &Arc<dyn Runtime>,
        sb: &Sandbox,
    ) -> Result<(Vec<String>, StoredLayer)> {
        let layers = self.layers()?;
        let running = match sb.state {
            State::Running => true,
            State::Paused | State::Stopped => false,
            _ => {
                sb.state.check(Action::Snapshot, sb.id)?;
                false
            }
        };
        let l = layers.clone();
        let staged = blocking(move || l.stage()).await?;
        let t0 = std::time::Instant::now();
        if let Err(e) = rt.capture(sb.id, &staged, running).await {
            layers.discard(&staged);
            return Err(e);
        }
        let captured = t0.elapsed();
        let l = layers.clone();
        let st = staged.clone();
        let top = match blocking(move || l.commit(&st)).await {
            Ok(top) => top,
            Err(e) => {
                layers.discard(&staged);
                return Err(e);
            }
        };
        tracing::debug!(sandbox = %sb.id, ?captured, total = ?t0.elapsed(), bytes = top.bytes, "captured");
        let mut stack = sb.config.layers.clone();
        stack.push(top.path.clone());
        if stack.len() > MAX_SNAPSHOT_LAYERS {
            let l = layers.clone();
            let flat = blocking(move || l.flatten(&stack, None)).await?;
            stack = vec![flat.path];
        }
        Ok((stack, top))
    }

    /// Snapshots sandbox `id`'s filesystem: a consistent copy (a running
    /// sandbox is frozen for the copy), kept after the sandbox is gone.
    pub async fn snapshot(
        self: &Arc<Self>,
        p: &Principal,
        id: Uuid,
        req: SnapshotRequest,
    ) -> Result<Snapshot> {
        self.audited(
            p,
            "sandbox.snapshot",
            Some(id),
            serde_json::Value::Null,
            async move {
                // In a task of its own: a caller that goes away must not leave the
                // sandbox frozen, nor a capture half made.
                let (this, p) = (self.clone(), p.clone());
                tokio::spawn(async move { this.snapshot_inner(&p, id, req).await })
                    .await
                    .map_err(|e| Error::internal(format!("snapshot of {id}: {e}")))?
            },
        )
        .await
    }

    async fn snapshot_inner(
        self: &Arc<Self>,
        p: &Principal,
        id: Uuid,
        req: SnapshotRequest,
    ) -> Result<Snapshot> {
        if let Some(n) = &req.name {
            crate::model::validate_snapshot_name(n)?;
        }
        crate::model::check_labels(&req.labels)?;
        let sb = self.get(p, id)?;
        let rt = self.runtime_of(&sb)?.clone();
        Self::can_capture(rt.as_ref(), req.memory)?;
        if let Some(n) = &req.name {
            if self.store.find_snapshot(&p.id, n)?.is_some() {
                return Err(Error::Exists(format!(
                    "a snapshot named {n:?} already exists"
                )));
            }
        }
        let _life = self.lifecycles.lock(id).await;
        let sb = self.get(p, id)?;
        sb.state.check(Action::Snapshot, id)?;
        let _gc = self.layer_gc.read().await;
        let (stack, top) = self.capture_layers(&rt, &sb).await?;
        let mut config = sb.config.clone();
        config.layers = stack;
        // A volume is not the sandbox's filesystem: not kept, not taken.
        config.volumes.clear();
        let snap = Snapshot {
            id: Uuid::new_v4(),
            owner: p.id.clone(),
            name: req.name,
            sandbox_id: id,
            labels: req.labels,
            config,
            digest: top.digest.clone(),
            size_bytes: top.bytes,
            created_at: Utc::now(),
        };
        self.record_capture(&sb, Some(&snap), &top, false)?;
        Ok(snap)
    }

    /// The layers a create under a snapshot policy starts from: those of
    /// the snapshot its `restore_key` names, if one was written.
    pub(super) fn policy_layers(
        &self,
        p: &Principal,
        config: &SandboxConfig,
    ) -> Result<Vec<String>> {
        let Some(key) = config
            .snapshot
            .as_ref()
            .and_then(|s| s.restore_key.as_ref())
        else {
            return Ok(Vec::new());
        };
        Ok(self
            .store
            .find_snapshot(&p.id, &crate::model::policy_snapshot_name(key))?
            .map(|sn| sn.config.layers)
            .unwrap_or_default())
    }

    /// Keeps, as a sandbox under a snapshot policy goes (its lifecycle
    /// lock held), the files under its `include` globs (all, without
    /// any) as the snapshot named for its `write_key`, else its
    /// `restore_key`, in place of the one written before.
    pub(super) async fn write_policy_snapshot(
        &self,
        rt: &Arc<dyn Runtime>,
        sb: &Sandbox,
    ) -> Result<()> {
        let Some(policy) = &sb.config.snapshot else {
            return Ok(());
        };
        let Some(key) = policy.write_key.as_ref().or(policy.restore_key.as_ref()) else {
            return Ok(());
        };
        if sb.owner == super::pool::POOL_OWNER
            || !rt.capabilities().fs_snapshot
            || !matches!(sb.state, State::Running | State::Paused | State::Stopped)
        {
            return Ok(());
        }
        let keep: Option<crate::layers::Keep> = match &policy.include {
            Some(globs) => {
                let globs = globs
                    .iter()
                    .map(|g| crate::glob::Glob::new(g))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::invalid("snapshot.include", e))?;
                Some(Arc::new(move |path: &str| {
                    globs.iter().any(|g| g.is_match(path))
                }))
            }
            None => None,
        };
        let layers = self.layers()?;
        let _gc = self.layer_gc.read().await;
        let (stack, _) = self.capture_layers(rt, sb).await?;
        let l = layers.clone();
        let flat = blocking(move || l.flatten(&stack, keep)).await?;
        let mut config = sb.config.clone();
        config.layers = vec![flat.path.clone()];
        config.volumes.clear();
        let snap = Snapshot {
            id: Uuid::new_v4(),
            owner: sb.owner.clone(),
            name: Some(crate::model::policy_snapshot_name(key)),
            sandbox_id: sb.id,
            labels: Default::default(),
            config,
            digest: flat.digest.clone(),
            size_bytes: flat.bytes,
            created_at: Utc::now(),
        };
        self.record_capture(sb, Some(&snap), &flat, true)
    }

    /// Records what a capture of `sb` made, in one transaction: its
    /// snapshot, if any (`replace`: in place of its owner's of that name),
    /// and the sandbox's `sandbox.snapshot` event (a fork's without one).
    fn record_capture(
        &self,
        sb: &Sandbox,
        snap: Option<&Snapshot>,
        layer: &StoredLayer,
        replace: bool,
    ) -> Result<()> {
        self.store.tx_events(
            |tx| {
                if let Some(sn) = snap {
                    if replace {
                        let name = sn.name.as_deref().unwrap_or_default();
                        Store::delete_snapshot_named(tx, &sn.owner, name)?;
                    }
                    Store::put_snapshot(tx, sn)?;
                }
                let ev = Store::append_event(
                    tx,
                    sb.id,
                    &sb.owner,
                    EventData::Snapshot(ev::Snapshotted {
                        snapshot_id: snap.map_or(Uuid::nil(), |s| s.id),
                        digest: layer.digest.clone(),
                        size_bytes: layer.bytes,
                        fork: snap.is_none(),
                    }),
                )?;
                Ok(((), vec![ev]))
            },
            |evs| self.bus.publish_all(evs),
        )
    }

    /// `p`'s snapshots, oldest first.
    pub fn snapshots(&self, p: &Principal) -> Result<Vec<Snapshot>> {
        self.store.list_snapshots(Some(&p.id))
    }

    /// One of `p`'s snapshots, by its id or name.
    pub fn get_snapshot(&self, p: &Principal, id_or_name: &str) -> Result<Snapshot> {
        self.store
            .find_snapshot(&p.id, id_or_name)?
            .ok_or_else(|| Error::not_found(format!("snapshot {id_or_name}")))
    }

    /// Deletes one of `p`'s snapshots; sandboxes started from it keep
    /// their files (its layers go once nothing refers to them).
    pub async fn delete_snapshot(self: &Arc<Self>, p: &Principal, id_or_name: &str) -> Result<()> {
        self.audited(
            p,
            "snapshot.delete",
            None,
            serde_json::json!({"snapshot": id_or_name}),
            async move {
                let sn = self.get_snapshot(p, id_or_name)?;
                if !self.store.delete_snapshot(&p.id, sn.id)? {
                    return Err(Error::not_found(format!("snapshot {id_or_name}")));
                }
                self.collect_layers_later();
                Ok(())
            },
        )
        .await
    }

    /// Forks sandbox `id` into `count` new running sandboxes, each with its
    /// filesystem at one instant and its configuration; all or none.
    pub async fn fork(
        self: &Arc<Self>,
        p: &Principal,
        id: Uuid,
        count: u32,
        memory: bool,
    ) -> Result<Vec<Sandbox>> {
        self.audited(
            p,
            "sandbox.fork",
            Some(id),
            serde_json::json!({"count": count}),
            async move {
                // In a task of its own, as a create: a caller that goes away leaves
                // neither a frozen parent nor children marked as a fork's.
                let (this, p) = (self.clone(), p.clone());
                tokio::spawn(async move { this.fork_inner(&p, id, count, memory, None).await })
                    .await
                    .map_err(|e| Error::internal(format!("fork of {id}: {e}")))?
            },
        )
        .await
    }

    /// Forks sandbox `id` into one new sandbox under key `key` (a name
    /// that must be new: 409 otherwise), with `labels` over the parent's.
    pub async fn fork_named(
        self: &Arc<Self>,
        p: &Principal,
        id: Uuid,
        key: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<Sandbox> {
        let detail = serde_json::json!({ "count": 1, "key": key });
        self.audited(p, "sandbox.fork", Some(id), detail, async move {
            if !crate::model::valid_key(key) {
                return Err(Error::invalid("key", "must match [A-Za-z0-9_-]{1,64}"));
            }
            if self.store.find_by_key(&p.id, key)?.is_some() {
                return Err(Error::Exists(format!(
                    "a sandbox named {key:?} already exists"
                )));
            }
            let parent = self.get(p, id)?;
            let mut all = parent.labels.clone();
            all.extend(labels);
            let spec = SandboxSpec {
                key: Some(key.to_string()),
                labels: all,
                template: parent.template.clone(),
                ..Default::default()
            };
            let (this, p) = (self.clone(), p.clone());
            let mut made =
                tokio::spawn(async move { this.fork_inner(&p, id, 1, false, Some(spec)).await })
                    .await
                    .map_err(|e| Error::internal(format!("fork of {id}: {e}")))??;
            Ok(made.remove(0))
        })
        .await
    }

    async fn fork_inner(
        self: &Arc<Self>,
        p: &Principal,
        id: Uuid,
        count: u32,
        memory: bool,
        named: Option<SandboxSpec>,
    ) -> Result<Vec<Sandbox>> {
        if !(1..=MAX_FORK).contains(&count) {
            return Err(Error::invalid(
                "count",
                format!("must be from 1 to {MAX_FORK}"),
            ));
        }
        let sb = self.get(p, id)?;
        let rt = self.runtime_of(&sb)?.clone();
        Self::can_capture(rt.as_ref(), memory)?;
        // Locks in the order every capture and collection takes them: the
        // sandbox's lifecycle, then `layer_gc`.
        let life = self.lifecycles.lock(id).await;
        let sb = self.get(p, id)?;
        sb.state.check(Action::Snapshot, id)?;
        let gc = self.layer_gc.read().await;
        let (stack, top) = self.capture_layers(&rt, &sb).await?;
        drop(life);
        self.record_capture(&sb, None, &top, false)?;
        let mut config = sb.config.clone();
        config.layers = stack;
        config.volumes.clear();
        let max = self.check_policies(p, sb.template.as_deref(), &mut config, count as usize)?;
        let spec = named.unwrap_or_else(|| SandboxSpec {
            labels: sb.labels.clone(),
            template: sb.template.clone(),
            ..Default::default()
        });
        let runtime = self.runtime(config.isolation)?.clone();
        // Children are marked with this fork's own id until all run: an
        // undo takes them, not another fork's of the same parent.
        let op = Uuid::new_v4();
        let children = futures::future::join_all(
            (0..count)
                .map(|_| self.launch(p, &spec, config.clone(), runtime.clone(), Some(op), &max)),
        )
        .await;
        drop(gc);
        let mut made = Vec::new();
        let mut failed = None;
        for c in children {
            match c {
                Ok((child, true)) => made.push(child),
                // The key was taken meanwhile: that sandbox is not a child.
                Ok((_, false)) => {
                    failed = failed.or(Some(Error::Exists(format!(
                        "a sandbox named {:?} already exists",
                        spec.key.as_deref().unwrap_or_default()
                    ))))
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        // A child that failed to boot is stored as `error`: it goes too.
        let done = match failed {
            None => self.finish_fork(&made),
            Some(e) => Err(e),
        };
        match done {
            Ok(children) => Ok(children),
            Err(e) => {
                self.undo_fork(op).await;
                Err(e)
            }
        }
    }

    /// Marks a fork's children as its own (no longer `fork_of`), all in one
    /// transaction.
    fn finish_fork(&self, made: &[Sandbox]) -> Result<Vec<Sandbox>> {
        self.store.tx(|tx| {
            made.iter()
                .map(|c| {
                    let mut sb = Store::sandbox_in(tx, c.id)?;
                    sb.fork_of = None;
                    Store::put_sandbox(tx, &sb)?;
                    Ok(sb)
                })
                .collect()
        })
    }

    /// Destroys every child still marked as fork `op`'s (nil: any fork's,
    /// after a restart).
    pub(super) async fn undo_fork(self: &Arc<Self>, op: Uuid) {
        let Ok(all) = self.store.forks_pending() else {
            return;
        };
        for sb in all
            .into_iter()
            .filter(|s| s.fork_of == Some(op) || op.is_nil())
        {
            if let Err(e) = self.destroy_inner(sb.clone(), "fork failed").await {
                tracing::warn!(sandbox = %sb.id, "removing a failed fork's child: {e}");
            }
        }
        self.collect_layers_later();
    }

    /// Every layer a snapshot or a sandbox that is not destroyed refers to.
    fn layers_in_use(&self) -> Result<HashSet<String>> {
        let mut keep: HashSet<String> = HashSet::new();
        for sn in self.store.list_snapshots(None)? {
            keep.extend(sn.config.layers);
        }
        keep.extend(self.store.sandbox_layers()?);
        Ok(keep)
    }

    /// Removes the layers nothing refers to (and, at start, what captures
    /// left half made); returns how many.
    pub(super) async fn collect_layers(&self, at_start: bool) -> Result<usize> {
        let Ok(layers) = self.layers() else {
            return Ok(0);
        };
        let _alone = self.layer_gc.write().await;
        let keep = self.layers_in_use()?;
        blocking(move || layers.gc(&keep, at_start)).await
    }

    pub(super) fn collect_layers_later(self: &Arc<Self>) {
        if self.layers.get().is_none() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.collect_layers(false).await {
                tracing::warn!("collecting snapshot layers: {e}");
            }
        });
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("layer store: {e}")))?
}

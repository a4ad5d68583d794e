//! Volumes: named, sized filesystems owned by a principal that outlive
//! sandboxes, mounted at create or into a running sandbox and unmounted
//! again. Read-write by one sandbox at a time (checked in the transaction
//! that records the mount), read-only by any number. Who holds a volume is
//! read from the sandboxes' configurations, so that no record can say a
//! volume is held by nothing.

use super::*;
use crate::model::{
    validate_volume_name, Volume, VolumeMount, VolumeRequest, VolumeStatus, MAX_VOLUME_MB,
    MIN_VOLUME_MB,
};
use crate::volumes::VolumeStore;

impl Engine {
    /// Where volumes live (set once, before `recover`).
    pub fn set_volumes(&self, volumes: Arc<dyn VolumeStore>) {
        let _ = self.volumes.set(volumes);
    }

    fn volume_store(&self) -> Result<Arc<dyn VolumeStore>> {
        self.volumes
            .get()
            .cloned()
            .ok_or_else(|| Error::Unsupported("volumes (this daemon has no volume store)".into()))
    }

    pub async fn create_volume(
        &self,
        p: &Principal,
        name: &str,
        size_mb: u64,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<Volume> {
        self.audited(
            p,
            "volume.create",
            None,
            serde_json::json!({"volume": name}),
            async move {
                validate_volume_name(name)?;
                if !(MIN_VOLUME_MB..=MAX_VOLUME_MB).contains(&size_mb) {
                    return Err(Error::invalid(
                        "size_mb",
                        format!("must be from {MIN_VOLUME_MB} to {MAX_VOLUME_MB} (MiB)"),
                    ));
                }
                if self.store.find_volume(&p.id, name)?.is_some() {
                    return Err(Error::Exists(format!(
                        "a volume named {name:?} already exists"
                    )));
                }
                let store = self.volume_store()?;
                let v = Volume {
                    id: Uuid::new_v4(),
                    owner: p.id.clone(),
                    name: name.to_string(),
                    size_mb,
                    labels,
                    created_at: Utc::now(),
                };
                let id = v.id;
                let s = store.clone();
                tokio::task::spawn_blocking(move || s.create(id, size_mb))
                    .await
                    .map_err(Error::internal)??;
                if let Err(e) = self.store.insert_volume(&v) {
                    let _ = tokio::task::spawn_blocking(move || store.remove(id)).await;
                    return Err(e);
                }
                Ok(v)
            },
        )
        .await
    }

    pub fn volumes(&self, p: &Principal) -> Result<Vec<Volume>> {
        self.store.list_volumes(Some(&p.id))
    }

    /// One of `p`'s volumes (by id or name), who holds it, and its use
    /// (bytes used, bytes it holds).
    pub fn get_volume(&self, p: &Principal, id_or_name: &str) -> Result<VolumeStatus> {
        let volume = self
            .store
            .find_volume(&p.id, id_or_name)?
            .ok_or_else(|| Error::not_found(format!("volume {id_or_name}")))?;
        let holders = self.store.tx(|tx| Store::volume_holders(tx, volume.id))?;
        let usage = self.volumes.get().and_then(|s| s.usage(volume.id));
        Ok(VolumeStatus {
            volume,
            holders,
            usage,
        })
    }

    /// Deletes one of `p`'s volumes and its data; 409 while a sandbox
    /// holds it.
    pub async fn delete_volume(&self, p: &Principal, id_or_name: &str) -> Result<()> {
        self.audited(
            p,
            "volume.delete",
            None,
            serde_json::json!({"volume": id_or_name}),
            async move {
                let v = self.get_volume(p, id_or_name)?.volume;
                let holders = self.store.delete_volume(&v)?;
                if let Some(h) = holders.first() {
                    return Err(Error::Conflict(format!(
                        "volume {} is mounted in sandbox {} (detach it first)",
                        v.name, h.sandbox_id
                    )));
                }
                let store = self.volume_store()?;
                tokio::task::spawn_blocking(move || store.remove(v.id))
                    .await
                    .map_err(Error::internal)?
            },
        )
        .await
    }

    /// The mounts a create asks for, checked: `p`'s volumes, absolute
    /// paths apart from each other and from the sandbox's mounts.
    pub(super) async fn resolve_volumes(
        &self,
        p: &Principal,
        reqs: &[VolumeRequest],
        config: &SandboxConfig,
    ) -> Result<Vec<VolumeMount>> {
        let mut out: Vec<VolumeMount> = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let f = |x: &str| format!("volumes[{i}].{x}");
            let v = self.store.find_volume(&p.id, &r.name)?.ok_or_else(|| {
                Error::invalid(f("name"), format!("no volume named {:?}", r.name))
            })?;
            check_volume_path(&f("path"), &r.path, config, &out)?;
            if out.iter().any(|m| m.volume == v.id) {
                return Err(Error::invalid(
                    f("name"),
                    format!("volume {} is mounted twice", v.name),
                ));
            }
            let store = self.volume_store()?;
            let id = v.id;
            let source = tokio::task::spawn_blocking(move || store.source(id))
                .await
                .map_err(Error::internal)??;
            out.push(VolumeMount {
                volume: v.id,
                name: v.name,
                path: r.path.trim_end_matches('/').to_string(),
                read_only: r.read_only,
                source,
            });
        }
        Ok(out)
    }

    /// Mounts one of `p`'s volumes in sandbox `id` (running: at once;
    /// stopped: at its next start).
    pub async fn attach_volume(
        &self,
        p: &Principal,
        id: Uuid,
        req: VolumeRequest,
    ) -> Result<Sandbox> {
        self.audited(
            p,
            "volume.attach",
            Some(id),
            serde_json::json!({"volume": req.name}),
            async move {
                let _life = self.lifecycles.lock(id).await;
                let sb = self.get(p, id)?;
                if !matches!(sb.state, State::Running | State::Stopped) {
                    return Err(Error::Conflict(format!(
                        "sandbox {id} is {}",
                        sb.state.as_str()
                    )));
                }
                let rt = self.runtime_of(&sb)?.clone();
                if !rt.capabilities().volumes {
                    return Err(rt.unsupported("volumes"));
                }
                let m = self
                    .resolve_volumes(p, std::slice::from_ref(&req), &sb.config)
                    .await
                    .map_err(|e| match e {
                        Error::Invalid { field, reason } => Error::Invalid {
                            field: field.trim_start_matches("volumes[0].").to_string(),
                            reason,
                        },
                        e => e,
                    })?
                    .remove(0);
                if sb.config.volumes.iter().any(|x| x.volume == m.volume) {
                    return Err(Error::Conflict(format!(
                        "volume {} is mounted in sandbox {id} already",
                        m.name
                    )));
                }
                // Recorded first (the read-write check and the record in one
                // transaction), then mounted; undone if the mount fails.
                let mounted = self.store.tx(|tx| {
                    let mut now = Store::sandbox_in(tx, id)?;
                    Store::check_volumes(tx, id, std::slice::from_ref(&m))?;
                    now.config.volumes.push(m.clone());
                    now.updated_at = Utc::now();
                    Store::put_sandbox(tx, &now)?;
                    Ok(now)
                })?;
                if sb.state == State::Running {
                    if let Err(e) = rt.attach_volume(id, &m).await {
                        let _ = self.store.tx(|tx| {
                            let mut now = Store::sandbox_in(tx, id)?;
                            now.config.volumes.retain(|x| x.volume != m.volume);
                            Store::put_sandbox(tx, &now)
                        });
                        return Err(e);
                    }
                }
                Ok(mounted)
            },
        )
        .await
    }

    /// Unmounts a volume (by name or id) from sandbox `id`.
    pub async fn detach_volume(&self, p: &Principal, id: Uuid, volume: &str) -> Result<Sandbox> {
        self.audited(
            p,
            "volume.detach",
            Some(id),
            serde_json::json!({"volume": volume}),
            async move {
                let _life = self.lifecycles.lock(id).await;
                let sb = self.get(p, id)?;
                let m = sb
                    .config
                    .volumes
                    .iter()
                    .find(|m| m.name == volume || m.volume.to_string() == volume)
                    .cloned()
                    .ok_or_else(|| Error::not_found(format!("volume {volume} in sandbox {id}")))?;
                match sb.state {
                    State::Running => self.runtime_of(&sb)?.detach_volume(id, &m).await?,
                    State::Stopped | State::Error => {}
                    s => {
                        return Err(Error::Conflict(format!(
                            "sandbox {id} is {}: resume it to detach a volume",
                            s.as_str()
                        )))
                    }
                }
                self.store.tx(|tx| {
                    let mut now = Store::sandbox_in(tx, id)?;
                    now.config.volumes.retain(|x| x.volume != m.volume);
                    now.updated_at = Utc::now();
                    Store::put_sandbox(tx, &now)?;
                    Ok(now)
                })
            },
        )
        .await
    }

    /// Removes volumes a create left half made (the daemon died in it).
    pub(super) async fn collect_volumes(&self) -> Result<usize> {
        let Ok(store) = self.volume_store() else {
            return Ok(0);
        };
        let keep: Vec<Uuid> = self
            .store
            .list_volumes(None)?
            .into_iter()
            .map(|v| v.id)
            .collect();
        tokio::task::spawn_blocking(move || store.gc(&keep))
            .await
            .map_err(Error::internal)?
    }
}

/// A volume's path: absolute, no `..`, not `/`, apart from the sandbox's
/// mounts and the volumes before it.
fn check_volume_path(
    field: &str,
    path: &str,
    config: &SandboxConfig,
    before: &[VolumeMount],
) -> Result<()> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") || path.contains('\0') {
        return Err(Error::invalid(
            field,
            "must be an absolute path without '..'",
        ));
    }
    let p = path.trim_end_matches('/');
    if p.is_empty() {
        return Err(Error::invalid(field, "cannot be /"));
    }
    let under = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
    // What the sandbox's own mounts and Paddock's files hold.
    for r in [
        "/proc",
        "/sys",
        "/dev",
        "/.paddock",
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
    ] {
        if under(p, r) {
            return Err(Error::invalid(
                field,
                format!("{path} is the sandbox's own ({r})"),
            ));
        }
    }
    for o in config
        .mounts
        .iter()
        .map(|m| m.path.trim_end_matches('/'))
        .chain(config.volumes.iter().map(|v| v.path.as_str()))
        .chain(before.iter().map(|v| v.path.as_str()))
    {
        if under(p, o) || under(o, p) {
            return Err(Error::invalid(field, format!("{path} overlaps {o}")));
        }
    }
    Ok(())
}

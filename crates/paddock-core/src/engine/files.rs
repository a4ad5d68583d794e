//! File operations through the agent, each judged against the mounts'
//! ACLs on the path it really leads to, and recorded as `fs.request` and
//! `fs.response` events.

use super::*;

impl Engine {
    /// Checks a file operation against the sandbox's mounts and their ACLs
    /// and records an `fs.request` event; `fs_done` records the
    /// `fs.response`. Without mounts every path is allowed.
    /// The mount that holds `norm` (a normalized path, symlinks followed)
    /// and, when its ACL refuses the operation, why (`path` as asked).
    pub(super) fn judge_fs(
        sb: &Sandbox,
        norm: &str,
        path: &str,
        write: bool,
    ) -> (String, Option<String>) {
        let operation = if write { "write" } else { "read" };
        match sb.config.mount_of(norm) {
            None => (
                String::new(),
                Some(format!("{path} is outside every mount of this sandbox")),
            ),
            Some(m) => {
                let ok = match m.access(norm) {
                    Access::Rw => true,
                    Access::Ro => !write,
                    Access::Deny => false,
                };
                let why = (!ok).then(|| {
                    format!(
                        "the ACL of mount {} does not allow {operation} access to {path}",
                        m.path
                    )
                });
                (m.path.clone(), why)
            }
        }
    }

    pub(super) async fn fs_begin(
        &self,
        sb: &Sandbox,
        live: &Live,
        path: &str,
        write: bool,
    ) -> Result<FsOp> {
        let operation = if write { "write" } else { "read" };
        // (the mount, or "" for none; why it is refused, if it is)
        let (mount, refused) = if sb.config.mounts.is_empty() {
            ("/".to_string(), None)
        } else {
            // Judge where the path really leads: a symlink in a mount must
            // not reach past its ACL.
            let norm = match live.agent.resolve(path).await {
                Ok(r) => normalize_path(&r),
                Err(e @ Error::Invalid { .. }) => return Err(e),
                // An agent without Resolve: the path as written.
                Err(_) => normalize_path(path),
            };
            Self::judge_fs(sb, &norm, path, write)
        };
        let access = if refused.is_none() {
            "allowed"
        } else {
            "denied"
        };
        let request_id = self.emit(
            sb,
            EventData::FsRequest(ev::FsRequested {
                access: access.into(),
                mount,
                path: path.into(),
                operation: operation.into(),
            }),
        );
        if let Some(why) = refused {
            return Err(Error::Forbidden(why));
        }
        Ok(FsOp {
            request_id,
            started: std::time::Instant::now(),
        })
    }

    pub(super) fn fs_done<T>(
        &self,
        sb: &Sandbox,
        op: FsOp,
        r: &Result<T>,
        detail: ev::FsResponded,
    ) {
        let data = ev::FsResponded {
            request_id: op.request_id,
            duration_ms: op.started.elapsed().as_millis() as u64,
            error: r.as_ref().err().map(|e| e.to_string()),
            ..detail
        };
        self.emit_later(sb, EventData::FsResponse(data));
    }

    pub(super) fn check_path(path: &str) -> Result<()> {
        if path.is_empty() {
            return Err(Error::invalid("path", "must not be empty"));
        }
        if path.contains('\0') {
            return Err(Error::invalid("path", "must not contain NUL"));
        }
        if path.split('/').any(|c| c == "..") {
            return Err(Error::invalid("path", "must not contain '..'"));
        }
        Ok(())
    }

    /// A file's bytes, and how many there are when that is known before
    /// reading to the end (`None` for a file of `/proc`, say). Symlinks are
    /// followed inside the sandbox; anything but a regular file is refused.
    pub async fn read_file(
        &self,
        p: &Principal,
        id: Uuid,
        path: &str,
    ) -> Result<(
        Option<u64>,
        impl Stream<Item = Result<Bytes>> + Send + 'static,
    )> {
        Self::check_path(path)?;
        let (sb, live) = self.live_for(p, id).await?;
        let op = self.fs_begin(&sb, &live, path, false).await?;
        let r = async {
            let (opened, s) = live.agent.read_file(path).await?;
            // Judged again on the file the agent opened: a symlink swapped
            // after `fs_begin` resolved it must not reach past an ACL.
            if let (false, Some(resolved)) = (sb.config.mounts.is_empty(), &opened.resolved) {
                if let (_, Some(why)) = Self::judge_fs(&sb, &normalize_path(resolved), path, false)
                {
                    return Err(Error::Forbidden(why));
                }
            }
            Ok((opened.size, s))
        }
        .await;
        let size = r.as_ref().ok().and_then(|(n, _)| *n);
        self.fs_done(
            &sb,
            op,
            &r,
            ev::FsResponded {
                size,
                ..Default::default()
            },
        );
        r
    }

    pub async fn write_file<S>(
        &self,
        p: &Principal,
        id: Uuid,
        path: &str,
        opts: &WriteOptions,
        data: S,
    ) -> Result<FileInfo>
    where
        S: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        self.audited(
            p,
            "file.write",
            Some(id),
            serde_json::json!({"path": path}),
            async move {
                Self::check_path(path)?;
                if let Some(m) = opts.mode {
                    if m > 0o7777 {
                        return Err(Error::invalid("mode", "must be at most 0o7777"));
                    }
                }
                let (sb, live) = self.live_for(p, id).await?;
                let op = self.fs_begin(&sb, &live, path, true).await?;
                let r = live.agent.write_file(path, opts, data.boxed()).await;
                let size = r.as_ref().map(|i| i.size).unwrap_or(0);
                self.fs_done(
                    &sb,
                    op,
                    &r,
                    ev::FsResponded {
                        size: Some(size),
                        ..Default::default()
                    },
                );
                r
            },
        )
        .await
    }

    pub async fn list_dir(&self, p: &Principal, id: Uuid, path: &str) -> Result<Vec<FileInfo>> {
        Self::check_path(path)?;
        let (sb, live) = self.live_for(p, id).await?;
        let op = self.fs_begin(&sb, &live, path, false).await?;
        let r = live.agent.list_dir(path).await;
        self.fs_done(&sb, op, &r, Default::default());
        r
    }

    pub async fn stat(&self, p: &Principal, id: Uuid, path: &str) -> Result<FileInfo> {
        Self::check_path(path)?;
        let (sb, live) = self.live_for(p, id).await?;
        let op = self.fs_begin(&sb, &live, path, false).await?;
        let r = live.agent.stat(path).await;
        self.fs_done(&sb, op, &r, Default::default());
        r
    }

    pub async fn remove(&self, p: &Principal, id: Uuid, path: &str, recursive: bool) -> Result<()> {
        self.audited(
            p,
            "file.remove",
            Some(id),
            serde_json::json!({"path": path}),
            async move {
                Self::check_path(path)?;
                let (sb, live) = self.live_for(p, id).await?;
                let op = self.fs_begin(&sb, &live, path, true).await?;
                let r = live.agent.remove(path, recursive).await;
                self.fs_done(
                    &sb,
                    op,
                    &r,
                    ev::FsResponded {
                        removed: Some(true),
                        ..Default::default()
                    },
                );
                r
            },
        )
        .await
    }

    pub async fn rename(&self, p: &Principal, id: Uuid, from: &str, to: &str) -> Result<()> {
        self.audited(
            p,
            "file.rename",
            Some(id),
            serde_json::json!({"from": from, "to": to}),
            async move {
                Self::check_path(from)
                    .map_err(|_| Error::invalid("from", "must be a path without '..'"))?;
                Self::check_path(to)
                    .map_err(|_| Error::invalid("to", "must be a path without '..'"))?;
                let (sb, live) = self.live_for(p, id).await?;
                let op_from = self.fs_begin(&sb, &live, from, true).await?;
                let op = match self.fs_begin(&sb, &live, to, true).await {
                    Ok(op) => op,
                    Err(e) => {
                        self.fs_done::<()>(&sb, op_from, &Err(e.clone()), Default::default());
                        return Err(e);
                    }
                };
                let r = live.agent.rename(from, to).await;
                self.fs_done(
                    &sb,
                    op_from,
                    &r,
                    ev::FsResponded {
                        renamed_to: Some(to.into()),
                        ..Default::default()
                    },
                );
                self.fs_done(
                    &sb,
                    op,
                    &r,
                    ev::FsResponded {
                        renamed_from: Some(from.into()),
                        ..Default::default()
                    },
                );
                r
            },
        )
        .await
    }

    pub async fn mkdir(
        &self,
        p: &Principal,
        id: Uuid,
        path: &str,
        parents: bool,
        mode: Option<u32>,
    ) -> Result<()> {
        self.audited(
            p,
            "file.mkdir",
            Some(id),
            serde_json::json!({"path": path}),
            async move {
                Self::check_path(path)?;
                let (sb, live) = self.live_for(p, id).await?;
                let op = self.fs_begin(&sb, &live, path, true).await?;
                let r = live.agent.mkdir(path, parents, mode).await;
                self.fs_done(
                    &sb,
                    op,
                    &r,
                    ev::FsResponded {
                        mkdir: Some(true),
                        ..Default::default()
                    },
                );
                r
            },
        )
        .await
    }
}

/// A file operation in flight: its `fs.request` event and start.
pub(super) struct FsOp {
    request_id: Option<i64>,
    started: std::time::Instant,
}

/// `path` with empty and `.` components dropped (no `..`: refused before).
pub(super) fn normalize_path(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

//! Changing a sandbox's configuration while it lives (mounts, egress,
//! timeouts).

use super::*;

impl Engine {
    /// Applies what may change while a sandbox runs: mounts and their ACLs,
    /// egress rules, the snapshot policy and the idle timeout. All or
    /// nothing: on any error nothing changes. Records a `config.apply`
    /// event either way (with `warnings`, what the caller kept unchanged).
    pub async fn update_config(
        &self,
        p: &Principal,
        id: Uuid,
        u: ConfigUpdate,
    ) -> Result<ConfigApplied> {
        self.audited(
            p,
            "sandbox.config",
            Some(id),
            serde_json::Value::Null,
            async move {
                let sb = self.get(p, id)?;
                let cur = &sb.config;
                let mounts = u.mounts.clone().unwrap_or_else(|| cur.mounts.clone());
                let egress = u.egress.clone().unwrap_or_else(|| cur.egress.clone());
                let snapshot = u.snapshot.clone().unwrap_or_else(|| cur.snapshot.clone());
                let idle = u.idle_timeout_secs.unwrap_or(cur.idle_timeout_secs);
                let mut mounts = mounts;
                let (mounts_added, mounts_removed) = added_removed(&cur.mounts, &mounts);
                let (egress_added, egress_removed) = added_removed(
                    cur.egress.as_deref().unwrap_or_default(),
                    egress.as_deref().unwrap_or_default(),
                );
                let changes = ConfigChanges {
                    mounts_added,
                    mounts_removed,
                    egress_added,
                    egress_removed,
                    warnings: u.warnings.clone(),
                };

                let check = async {
                    validate_mounts(&mounts)?;
                    if let Some(s) = &snapshot {
                        crate::model::validate_snapshot(s)?;
                    }
                    if idle.is_some_and(|i| i > self.cfg.limits.max_idle_timeout_secs) {
                        return Err(Error::invalid(
                            "idle_timeout_secs",
                            format!(
                                "must be at most {} seconds",
                                self.cfg.limits.max_idle_timeout_secs
                            ),
                        ));
                    }
                    // A host directory already bound keeps its resolved path; a
                    // new one is checked against the operator's roots first.
                    for (i, m) in mounts.iter_mut().enumerate() {
                        if let Some(o) = &m.origin {
                            if !cur
                                .mounts
                                .iter()
                                .any(|c| c.path == m.path && c.origin == m.origin)
                            {
                                m.origin = Some(
                                    self.cfg
                                        .host_mounts
                                        .check(&format!("mounts[{i}].origin"), o)?,
                                );
                            }
                        }
                    }
                    if let Some(e) = &egress {
                        validate_egress(e)?;
                    }
                    sb.state.check(Action::UpdateConfig, id)?;
                    for m in &changes.mounts_added {
                        if m.origin.is_some()
                            && !cur
                                .mounts
                                .iter()
                                .any(|c| c.path == m.path && c.origin == m.origin)
                        {
                            return Err(Error::invalid(
                                "mounts",
                                format!(
                                    "a host directory cannot be bound at {} while the sandbox runs",
                                    m.path
                                ),
                            ));
                        }
                    }
                    // New private mounts need their directory.
                    let new_dirs: Vec<&Mount> = changes
                        .mounts_added
                        .iter()
                        .filter(|m| {
                            m.origin.is_none() && !cur.mounts.iter().any(|c| c.path == m.path)
                        })
                        .collect();
                    if !new_dirs.is_empty() {
                        let (_, live) = self.live_for(p, id).await?;
                        for m in new_dirs {
                            live.agent.mkdir(&m.path, true, None).await?;
                        }
                    }
                    self.regard(&sb, &cur.mounts, &mounts).await?;
                    Ok(())
                }
                .await;
                let event = |ok: bool, err: Option<&Error>| {
                    EventData::ConfigApply(ev::ConfigApply {
                        success: ok,
                        changes: changes.clone(),
                        error: err.map(|e| e.to_string()),
                    })
                };
                match check {
                    Err(e) => {
                        self.emit(&sb, event(false, Some(&e)));
                        Ok(ConfigApplied {
                            applied: false,
                            sandbox: sb,
                            changes,
                            error: Some(e.to_string()),
                        })
                    }
                    Ok(()) => {
                        let data = event(true, None);
                        let sb = self.transition(id, data, |s| {
                            s.config.mounts = mounts.clone();
                            s.config.egress = egress.clone();
                            s.config.snapshot = snapshot.clone();
                            s.config.idle_timeout_secs = idle;
                        })?;
                        Ok(ConfigApplied {
                            applied: true,
                            sandbox: sb,
                            changes,
                            error: None,
                        })
                    }
                }
            },
        )
        .await
    }
}

/// What [`Engine::update_config`] may change; `None` keeps the current.
#[derive(Debug, Clone, Default)]
pub struct ConfigUpdate {
    pub mounts: Option<Vec<Mount>>,
    pub egress: Option<Option<Vec<EgressRule>>>,
    pub snapshot: Option<Option<SnapshotPolicy>>,
    pub idle_timeout_secs: Option<Option<u64>>,
    /// Notes for the `config.apply` event (fields the caller kept).
    pub warnings: Vec<String>,
}

/// What an update changed, as its `config.apply` event records it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ConfigChanges {
    pub mounts_added: Vec<Mount>,
    pub mounts_removed: Vec<Mount>,
    pub egress_added: Vec<EgressRule>,
    pub egress_removed: Vec<EgressRule>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ConfigApplied {
    pub applied: bool,
    /// As it is now (unchanged when not applied).
    pub sandbox: Sandbox,
    pub changes: ConfigChanges,
    pub error: Option<String>,
}

/// What `new` has that `old` lacks, and what `old` has that `new` lacks.
pub(super) fn added_removed<T: PartialEq + Clone>(old: &[T], new: &[T]) -> (Vec<T>, Vec<T>) {
    let missing = |from: &[T], other: &[T]| -> Vec<T> {
        from.iter()
            .filter(|x| !other.contains(x))
            .cloned()
            .collect()
    };
    (missing(new, old), missing(old, new))
}

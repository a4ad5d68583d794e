//! Governance: the operator's policies, checked at every create and fork;
//! the audit log every mutating call writes to; usage figures; and the
//! operator's templates (from the settings file), which every principal
//! sees beside its own.

use super::*;
use crate::audit::{AuditQuery, AuditRecord};
use crate::policy::{Policy, PolicySource};

/// The owner of the operator's templates (no key can be this principal).
pub const OPERATOR_TEMPLATES: &str = "paddock:operator";

/// What a principal's sandboxes come to.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    /// Sandboxes held (every state but `destroyed`).
    pub total: usize,
    pub by_state: std::collections::BTreeMap<String, usize>,
    /// By template (`""`: none).
    pub by_template: std::collections::BTreeMap<String, usize>,
    /// The mean time a successful create took, over the audit log's.
    pub avg_startup_ms: u64,
    pub startup_samples: usize,
}

impl Engine {
    /// Runs `f`, a mutating call of `p`'s, and records it in the audit
    /// log with its outcome.
    pub(super) async fn audited<T>(
        &self,
        p: &Principal,
        action: &'static str,
        sandbox: Option<Uuid>,
        detail: serde_json::Value,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let r = match self.check_scope(p, action, sandbox) {
            Ok(()) => f.await,
            Err(e) => Err(e),
        };
        self.audit(p, action, sandbox, r.as_ref().err(), detail);
        r
    }

    /// `audited`, for a call that does not wait.
    pub(super) fn audited_sync<T>(
        &self,
        p: &Principal,
        action: &'static str,
        sandbox: Option<Uuid>,
        detail: serde_json::Value,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let r = self.check_scope(p, action, sandbox).and_then(|()| f());
        self.audit(p, action, sandbox, r.as_ref().err(), detail);
        r
    }

    /// Records one call in the audit log (written with the next events,
    /// within milliseconds). The warm pool's own calls are not `p`'s and
    /// are not recorded.
    pub(super) fn audit(
        &self,
        p: &Principal,
        action: &'static str,
        sandbox: Option<Uuid>,
        error: Option<&Error>,
        detail: serde_json::Value,
    ) {
        if p.id == POOL_OWNER {
            return;
        }
        let detail = match error {
            Some(Error::PolicyViolation(v)) => {
                let mut d = match detail {
                    serde_json::Value::Object(m) => m,
                    _ => Default::default(),
                };
                d.insert("violations".into(), serde_json::json!(v));
                serde_json::Value::Object(d)
            }
            _ => detail,
        };
        self.store.defer_audit(AuditRecord {
            seq: 0,
            at: Utc::now(),
            principal: p.id.clone(),
            email: p.email.clone(),
            via: if p.via.is_empty() { "engine" } else { p.via }.to_string(),
            action: action.to_string(),
            sandbox,
            outcome: error.map_or("ok", |e| e.kind()).to_string(),
            error: error.map(|e| e.to_string()),
            detail,
        });
    }

    /// The audit log, newest first: `p`'s own records, or anyone's for the
    /// operator (`q.principal` picks one).
    pub fn audit_log(&self, p: &Principal, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let mut q = q.clone();
        if !p.is_operator() {
            q.principal = Some(p.id.clone());
        }
        if q.limit == 0 {
            q.limit = 100;
        }
        self.flush_events();
        self.store.audit(&q)
    }

    /// What `p`'s sandboxes come to (the operator's: everyone's).
    pub fn usage(&self, p: &Principal) -> Result<Usage> {
        let owner = (!p.is_operator()).then_some(p.id.as_str());
        let all = self.store.list_sandboxes(owner, &ListQuery::default())?;
        let mut u = Usage {
            total: all.len(),
            ..Default::default()
        };
        for sb in &all {
            *u.by_state.entry(sb.state.as_str().to_string()).or_default() += 1;
            *u.by_template
                .entry(sb.template.clone().unwrap_or_default())
                .or_default() += 1;
        }
        self.flush_events();
        let (avg, n) = self.store.create_durations(owner)?;
        u.avg_startup_ms = avg;
        u.startup_samples = n;
        Ok(u)
    }

    // ---- policies ------------------------------------------------------

    /// Every policy with where it comes from: all for the operator, those
    /// that apply to `p` for anyone else.
    pub fn policies(&self, p: &Principal) -> Result<Vec<(Policy, PolicySource)>> {
        let mut out: Vec<(Policy, PolicySource)> = self
            .cfg
            .policies
            .iter()
            .map(|x| (x.clone(), PolicySource::Config))
            .collect();
        out.extend(
            self.api_policies()
                .iter()
                .cloned()
                .map(|x| (x, PolicySource::Api)),
        );
        if !p.is_operator() {
            out.retain(|(x, _)| x.applies_to(p));
        }
        Ok(out)
    }

    /// Writes (or replaces) a policy: the operator's call. One of the
    /// settings file's cannot be replaced (409).
    pub fn put_policy(&self, p: &Principal, policy: Policy) -> Result<Policy> {
        let detail = serde_json::json!({ "policy": policy.name });
        self.audited_sync(p, "policy.put", None, detail, || {
            Self::operator_only(p, "writing policies")?;
            policy.validate()?;
            if self.cfg.policies.iter().any(|x| x.name == policy.name) {
                return Err(Error::Conflict(format!(
                    "policy {:?} is the settings file's; change it there",
                    policy.name
                )));
            }
            // Store and memory changed together (under the memory's lock).
            let mut mem = self.api_policies_mut();
            self.store.put_policy(&policy)?;
            mem.retain(|x| x.name != policy.name);
            mem.push(policy.clone());
            mem.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(policy)
        })
    }

    pub fn delete_policy(&self, p: &Principal, name: &str) -> Result<()> {
        let detail = serde_json::json!({ "policy": name });
        self.audited_sync(p, "policy.delete", None, detail, || {
            Self::operator_only(p, "removing policies")?;
            if self.cfg.policies.iter().any(|x| x.name == name) {
                return Err(Error::Conflict(format!(
                    "policy {name:?} is the settings file's; change it there"
                )));
            }
            let mut mem = self.api_policies_mut();
            if !self.store.delete_policy(name)? {
                return Err(Error::not_found(format!("policy {name:?}")));
            }
            mem.retain(|x| x.name != name);
            Ok(())
        })
    }

    fn api_policies(&self) -> std::sync::RwLockReadGuard<'_, Vec<Policy>> {
        self.policies.read().unwrap_or_else(|e| e.into_inner())
    }

    fn api_policies_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Policy>> {
        self.policies.write().unwrap_or_else(|e| e.into_inner())
    }

    fn operator_only(p: &Principal, what: &str) -> Result<()> {
        if p.is_operator() {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("{what} is the operator's")))
        }
    }

    /// The most a create by `p` may ask for: the operator's ceilings, and
    /// the policies that apply to `p`.
    pub fn ceilings(&self, p: &Principal) -> Result<Ceilings> {
        let l = &self.cfg.limits;
        let mut c = Ceilings {
            max_cpu: l.max_cpu,
            max_memory_mb: l.max_memory_mb,
            max_disk_mb: l.max_disk_mb,
            max_ttl_secs: l.max_ttl_secs,
            max_sandboxes: None,
            max_exec_timeout_secs: l.max_exec_timeout_secs,
        };
        for x in self.policies_for(p)? {
            if let Some(v) = x.max_cpu {
                c.max_cpu = c.max_cpu.min(v);
            }
            if let Some(v) = x.max_memory_mb {
                c.max_memory_mb = c.max_memory_mb.min(v);
            }
            if let Some(v) = x.max_disk_mb {
                c.max_disk_mb = c.max_disk_mb.min(v);
            }
            if let Some(v) = x.max_ttl_secs {
                c.max_ttl_secs = c.max_ttl_secs.min(v);
            }
            if let Some(v) = x.max_sandboxes {
                c.max_sandboxes = Some(c.max_sandboxes.map_or(v, |m: u32| m.min(v)));
            }
        }
        Ok(c)
    }

    /// The operator's ceilings alone (`paddock serve --max-*`).
    pub fn limits(&self) -> &Limits {
        &self.cfg.limits
    }

    /// The policies that apply to `p`.
    pub(super) fn policies_for(&self, p: &Principal) -> Result<Vec<Policy>> {
        if p.id == POOL_OWNER {
            return Ok(Vec::new());
        }
        let mut out: Vec<Policy> = self
            .cfg
            .policies
            .iter()
            .filter(|x| x.applies_to(p))
            .cloned()
            .collect();
        out.extend(
            self.api_policies()
                .iter()
                .filter(|x| x.applies_to(p))
                .cloned(),
        );
        Ok(out)
    }

    /// Checks `adding` sandboxes of `config` (from `template`) against the
    /// policies that apply to `p`: every rule broken, each a violation; a
    /// config with no TTL is given the longest allowed. Answers the
    /// smallest `max_sandboxes`, for the check made again as the sandbox
    /// is stored.
    pub(super) fn check_policies(
        &self,
        p: &Principal,
        template: Option<&str>,
        config: &mut SandboxConfig,
        adding: usize,
    ) -> Result<Option<(u32, String)>> {
        let policies = self.policies_for(p)?;
        if policies.is_empty() {
            return Ok(None);
        }
        if config.ttl_secs.is_none() {
            config.ttl_secs = crate::policy::default_ttl(&policies);
        }
        let held = self.held(p)?;
        // A template rule names the operator's templates: the one `p` gets
        // by this name may be its own.
        let template = match template {
            Some(name) => Some((
                name,
                self.template_for(p, name)?
                    .is_some_and(|t| t.owner == OPERATOR_TEMPLATES),
            )),
            None => None,
        };
        let violations: Vec<_> = policies
            .iter()
            .flat_map(|x| x.judge(template, config, held, adding))
            .collect();
        if !violations.is_empty() {
            return Err(Error::PolicyViolation(violations));
        }
        Ok(crate::policy::max_sandboxes(&policies).map(|max| {
            let name = policies
                .iter()
                .find(|x| x.max_sandboxes == Some(max))
                .map(|x| x.name.clone())
                .unwrap_or_default();
            (max, name)
        }))
    }

    /// Counted by the store, not by reading every sandbox's document.
    fn held(&self, p: &Principal) -> Result<usize> {
        self.store.held(&p.id)
    }

    /// The `max_sandboxes` violation, checked in the transaction that
    /// stores a new sandbox (two creates at once cannot both pass).
    pub(super) fn held_check(
        tx: &rusqlite::Transaction<'_>,
        owner: &str,
        max: &Option<(u32, String)>,
    ) -> Result<()> {
        let Some((max, name)) = max else {
            return Ok(());
        };
        let held = Store::held_in(tx, owner)?;
        if held < *max as usize {
            return Ok(());
        }
        let (max, name) = (*max, name.clone());
        Err(Error::PolicyViolation(vec![crate::error::Violation {
            message: format!("{held} sandboxes held; policy {name:?} allows at most {max} at once"),
            policy: name,
            rule: "max_sandboxes".into(),
            limit: serde_json::json!(max),
            value: serde_json::json!(held + 1),
        }]))
    }

    // ---- the operator's templates ---------------------------------------

    /// A template by name: `p`'s own, else the operator's.
    pub(super) fn template_for(&self, p: &Principal, name: &str) -> Result<Option<Template>> {
        if let Some(t) = self.store.get_template(&p.id, name)? {
            return Ok(Some(t));
        }
        Ok(self.cfg.templates.iter().find(|t| t.name == name).cloned())
    }
}

//! Durable state in SQLite: sandboxes, the event log and API keys.
//!
//! One connection behind a mutex: every statement is short, and a single
//! writer is what SQLite wants anyway. Migrations are a numbered list checked
//! against `PRAGMA user_version` (a dozen lines; a crate would add nothing).

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::EventData;
use crate::model::{
    Event, ListQuery, Network, Sandbox, Snapshot, SshKey, Template, Volume, VolumeHolder, Workspace,
};

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        key TEXT,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
     );
     CREATE UNIQUE INDEX sandboxes_owner_key ON sandboxes(owner, key)
        WHERE key IS NOT NULL AND state != 'destroyed';
     CREATE INDEX sandboxes_owner ON sandboxes(owner, created_at);
     CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sandbox_id TEXT NOT NULL,
        sandbox_seq INTEGER NOT NULL,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        ts INTEGER NOT NULL,
        data TEXT NOT NULL
     );
     CREATE UNIQUE INDEX events_sandbox ON events(sandbox_id, sandbox_seq);
     CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        principal TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
     );",
    // 2: templates.
    "CREATE TABLE templates (
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (owner, name)
     );",
    // 3: which principals pulled which image (an image is theirs to list,
    // inspect and remove; the cache entry goes with its last claim).
    "CREATE TABLE image_claims (
        principal TEXT NOT NULL,
        reference TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (principal, reference)
     );
     CREATE INDEX image_claims_reference ON image_claims(reference);",
    // 4: the version of each stored document (see SANDBOX_DOC): rows from
    // before are version 1.
    "ALTER TABLE sandboxes ADD COLUMN doc_version INTEGER NOT NULL DEFAULT 1;",
    // 5: templates' documents too (see TEMPLATE_DOC).
    "ALTER TABLE templates ADD COLUMN doc_version INTEGER NOT NULL DEFAULT 1;",
    // 6: snapshots (their layers are directories of the layer store).
    "CREATE TABLE snapshots (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT,
        created_at INTEGER NOT NULL,
        doc_version INTEGER NOT NULL,
        doc TEXT NOT NULL
     );
     CREATE UNIQUE INDEX snapshots_owner_name ON snapshots(owner, name) WHERE name IS NOT NULL;
     CREATE INDEX snapshots_owner ON snapshots(owner, created_at);",
    // 7: volumes (who holds one is read from the sandboxes' configs).
    "CREATE TABLE volumes (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
     );
     CREATE UNIQUE INDEX volumes_owner_name ON volumes(owner, name);",
    // 8: the audit log, and the policies written through the API (the
    // settings file's are read at start).
    "CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts INTEGER NOT NULL,
        principal TEXT NOT NULL,
        sandbox TEXT,
        action TEXT NOT NULL,
        doc TEXT NOT NULL
     );
     CREATE INDEX audit_principal ON audit(principal, seq);
     CREATE INDEX audit_sandbox ON audit(sandbox, seq) WHERE sandbox IS NOT NULL;
     CREATE TABLE policies (
        name TEXT PRIMARY KEY,
        updated_at INTEGER NOT NULL,
        doc TEXT NOT NULL
     );",
    // 9: workspaces (a name whose sandbox comes and goes: hibernated into
    // a snapshot, woken from it).
    "CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
     );
     CREATE UNIQUE INDEX workspaces_owner_name ON workspaces(owner, name);",
    // 10: principals' SSH public keys, each account-wide or for one
    // sandbox (the SSH gateway's logins).
    SSH_KEYS_MIGRATION,
    // 11: private networks (their members are read from the sandboxes'
    // configs); one default network per owner.
    "CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT,
        is_default INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
     );
     CREATE UNIQUE INDEX networks_owner_name ON networks(owner, name) WHERE name IS NOT NULL;
     CREATE UNIQUE INDEX networks_owner_default ON networks(owner) WHERE is_default = 1;",
    // 12: the ingress: proxies (a sandbox's published ports, by name; ""
    // is its default), domains bound to sandboxes (unique daemon-wide),
    // and the host names sandboxes' keys claim (a key is unique per owner
    // only: the first sandbox to take a label daemon-wide has it until it
    // is destroyed). All go with the sandbox (`put_sandbox`).
    "CREATE TABLE proxies (
        sandbox TEXT NOT NULL,
        name TEXT NOT NULL,
        port INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (sandbox, name)
     );
     CREATE TABLE domains (
        domain TEXT PRIMARY KEY,
        sandbox TEXT NOT NULL,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL
     );
     CREATE INDEX domains_owner ON domains(owner, domain);
     CREATE INDEX domains_sandbox ON domains(sandbox);
     CREATE TABLE host_names (
        label TEXT PRIMARY KEY,
        sandbox TEXT NOT NULL UNIQUE
     );",
    // 13: tokens Paddock signed that are listed and revocable (scoped
    // tokens; a session exchanged from an API key is not kept: it dies
    // with its key).
    "CREATE TABLE tokens (
        jti TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER,
        doc TEXT NOT NULL
     );
     CREATE INDEX tokens_owner ON tokens(owner, created_at);",
];

/// The SSH keys' table (migration 10; its number is its place in
/// `MIGRATIONS`).
const SSH_KEYS_MIGRATION: &str = "CREATE TABLE ssh_keys (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        sandbox TEXT,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
     );
     CREATE UNIQUE INDEX ssh_keys_owner_name ON ssh_keys(owner, name);
     CREATE INDEX ssh_keys_fingerprint ON ssh_keys(fingerprint, owner);";

/// The version of the snapshot document this daemon writes (1: the first).
pub const SNAPSHOT_DOC: i64 = 1;

fn decode_snapshot(v: i64, doc: &str) -> Result<Snapshot> {
    if v > SNAPSHOT_DOC {
        return Err(Error::Internal(format!(
            "a snapshot record of version {v}, written by a newer Paddock (this one reads up to {SNAPSHOT_DOC})"
        )));
    }
    Ok(serde_json::from_str(doc)?)
}

/// The version of the template document this daemon writes (1: the first).
/// A newer one is an error, never rewritten; older ones would be upgraded
/// in [`decode_template`] as sandboxes' are.
pub const TEMPLATE_DOC: i64 = 1;

fn decode_template(v: i64, doc: &str) -> Result<Template> {
    if v > TEMPLATE_DOC {
        return Err(Error::Internal(format!(
            "a template record of version {v}, written by a newer Paddock (this one reads up to {TEMPLATE_DOC})"
        )));
    }
    Ok(serde_json::from_str(doc)?)
}

/// The version of the sandbox document this daemon writes. 1: before
/// backends had names; 2: with `backend`. Older documents are upgraded as
/// they are read ([`decode_sandbox`]); a newer one (a newer daemon wrote
/// it, then this one started on the same data dir) is an error, never
/// rewritten in a shape that loses what it does not know.
pub const SANDBOX_DOC: i64 = 2;

/// A stored sandbox document of version `v`, upgraded to this daemon's.
fn decode_sandbox(v: i64, doc: &str) -> Result<Sandbox> {
    if v == SANDBOX_DOC {
        return Ok(serde_json::from_str(doc)?);
    }
    if v > SANDBOX_DOC {
        return Err(Error::Internal(format!(
            "a sandbox record of version {v}, written by a newer Paddock (this one reads up to {SANDBOX_DOC}): run that version, or restore the data dir's backup"
        )));
    }
    let mut d: serde_json::Value = serde_json::from_str(doc)?;
    if v < 2 {
        // 1 → 2: the backend, unknown then: its isolation's default.
        if let Some(o) = d.as_object_mut() {
            o.entry("backend").or_insert_with(|| "".into());
        }
    }
    Ok(serde_json::from_value(d)?)
}

/// Reads `(doc_version, doc)` of a row.
fn versioned(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String)> {
    Ok((r.get(0)?, r.get(1)?))
}

pub struct Store {
    conn: Mutex<Connection>,
    /// Events recorded with [`Store::defer_event`], oldest first, not yet
    /// written: the next transaction that writes events writes them first,
    /// or [`Store::flush_deferred`] does.
    deferred: Mutex<Vec<Deferred>>,
    /// Audit records waiting likewise ([`Store::defer_audit`]).
    audit: Mutex<Vec<crate::audit::AuditRecord>>,
    /// A flush of deferred events is arranged.
    flush_due: std::sync::atomic::AtomicBool,
    /// Arranges a flush of deferred events (the engine sets it; without
    /// one they wait for the next write or read of the log).
    flusher: Mutex<Option<Flusher>>,
}

type Flusher = Box<dyn Fn() + Send + Sync>;

/// An event whose write may wait (see [`Store::defer_event`]).
struct Deferred {
    sandbox_id: Uuid,
    owner: String,
    time: DateTime<Utc>,
    data: EventData,
}

/// Deferred events beyond this many (writes failing for long) are dropped,
/// oldest first, rather than held without bound.
const MAX_DEFERRED: usize = 10_000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub principal: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version as usize > MIGRATIONS.len() {
            return Err(Error::Internal(format!(
                "the store is at schema {version}, newer than this paddock ({}); upgrade paddock",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
            deferred: Mutex::new(Vec::new()),
            audit: Mutex::new(Vec::new()),
            flush_due: Default::default(),
            flusher: Mutex::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in one transaction.
    pub fn tx<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    }

    /// Runs `f` in one transaction and hands the events it made to `publish`
    /// while still holding the store, so that subscribers see events in the
    /// order of their sequence numbers. Deferred events are written first,
    /// in the same transaction, and published with them.
    pub fn tx_events<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(T, Vec<Event>)>,
        publish: impl FnOnce(Vec<Event>),
    ) -> Result<T> {
        let mut conn = self.lock();
        let pending = std::mem::take(&mut *self.lock_deferred());
        let audit = std::mem::take(&mut *self.lock_audit());
        let run = |conn: &mut Connection| -> Result<(T, Vec<Event>)> {
            let tx = conn.transaction()?;
            for a in &audit {
                Self::insert_audit(&tx, a)?;
            }
            let mut evs = Vec::with_capacity(pending.len() + 1);
            for d in &pending {
                evs.push(Self::append_event_at(
                    &tx,
                    d.sandbox_id,
                    &d.owner,
                    d.data.clone(),
                    d.time,
                )?);
            }
            let (v, own) = f(&tx)?;
            tx.commit()?;
            evs.extend(own);
            Ok((v, evs))
        };
        match run(&mut conn) {
            Ok((v, evs)) => {
                publish(evs);
                Ok(v)
            }
            Err(e) => {
                // Rolled back: the deferred events go back to wait for the
                // next write or a flush.
                if !audit.is_empty() {
                    let mut q = self.lock_audit();
                    let later = std::mem::replace(&mut *q, audit);
                    q.extend(later);
                    if q.len() > MAX_DEFERRED {
                        let n = q.len() - MAX_DEFERRED;
                        tracing::warn!("dropping {n} audit records that could not be written");
                        q.drain(..n);
                    }
                    drop(q);
                    self.arm();
                }
                if !pending.is_empty() {
                    let mut q = self.lock_deferred();
                    let later = std::mem::replace(&mut *q, pending);
                    q.extend(later);
                    if q.len() > MAX_DEFERRED {
                        let n = q.len() - MAX_DEFERRED;
                        tracing::warn!("dropping {n} events that could not be written");
                        q.drain(..n);
                    }
                    drop(q);
                    self.arm();
                }
                Err(e)
            }
        }
    }

    fn lock_audit(&self) -> std::sync::MutexGuard<'_, Vec<crate::audit::AuditRecord>> {
        self.audit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an audit record with the next transaction that writes
    /// events, or the flush this arranges (within milliseconds). A crash in
    /// between loses it.
    pub fn defer_audit(&self, rec: crate::audit::AuditRecord) {
        self.lock_audit().push(rec);
        self.arm();
    }

    fn insert_audit(tx: &rusqlite::Transaction<'_>, a: &crate::audit::AuditRecord) -> Result<()> {
        tx.prepare_cached(
            "INSERT INTO audit (ts, principal, sandbox, action, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            ms(a.at),
            a.principal,
            a.sandbox.map(|s| s.to_string()),
            a.action,
            serde_json::to_string(a)?
        ])?;
        Ok(())
    }

    /// Audit records, newest first (the engine flushes deferred ones
    /// first).
    pub fn audit(&self, q: &crate::audit::AuditQuery) -> Result<Vec<crate::audit::AuditRecord>> {
        let conn = self.lock();
        let mut sql = String::from("SELECT seq, doc FROM audit WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(p) = &q.principal {
            args.push(p.clone().into());
            sql += &format!(" AND principal = ?{}", args.len());
        }
        if let Some(s) = q.sandbox {
            args.push(s.to_string().into());
            sql += &format!(" AND sandbox = ?{}", args.len());
        }
        if let Some(a) = &q.action {
            args.push(format!("{}%", a.replace(['%', '_'], "")).into());
            sql += &format!(" AND action LIKE ?{}", args.len());
        }
        if let Some(b) = q.before {
            args.push(b.into());
            sql += &format!(" AND seq < ?{}", args.len());
        }
        args.push((q.limit.clamp(1, 10_000) as i64).into());
        sql += &format!(" ORDER BY seq DESC LIMIT ?{}", args.len());
        let mut st = conn.prepare(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, doc) = row?;
            let mut rec: crate::audit::AuditRecord = serde_json::from_str(&doc)?;
            rec.seq = seq;
            out.push(rec);
        }
        Ok(out)
    }

    /// Removes audit records from before `before`; how many.
    pub fn prune_audit(&self, before: DateTime<Utc>) -> Result<usize> {
        Ok(self
            .lock()
            .execute("DELETE FROM audit WHERE ts < ?1", params![ms(before)])?)
    }

    /// The policies written through the API, by name.
    pub fn policies(&self) -> Result<Vec<crate::policy::Policy>> {
        let conn = self.lock();
        let mut st = conn.prepare_cached("SELECT doc FROM policies ORDER BY name")?;
        let docs = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        docs.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
    }

    /// Writes a policy (replacing one of the same name).
    pub fn put_policy(&self, p: &crate::policy::Policy) -> Result<()> {
        self.lock().execute(
            "INSERT INTO policies (name, updated_at, doc) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET updated_at = excluded.updated_at, doc = excluded.doc",
            params![p.name, ms(Utc::now()), serde_json::to_string(p)?],
        )?;
        Ok(())
    }

    /// Removes a policy; whether there was one.
    pub fn delete_policy(&self, name: &str) -> Result<bool> {
        Ok(self
            .lock()
            .execute("DELETE FROM policies WHERE name = ?1", params![name])?
            > 0)
    }

    /// The mean duration (ms) of successful creates in the audit log, and
    /// how many there were: `owner`'s, or everyone's.
    pub fn create_durations(&self, owner: Option<&str>) -> Result<(u64, usize)> {
        let conn = self.lock();
        let sql = "SELECT AVG(json_extract(doc, '$.detail.duration_ms')), COUNT(json_extract(doc, '$.detail.duration_ms'))
             FROM audit WHERE action = 'sandbox.create' AND json_extract(doc, '$.outcome') = 'ok'
             AND (?1 IS NULL OR principal = ?1)";
        let (avg, n): (Option<f64>, i64) =
            conn.query_row(sql, params![owner], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((avg.unwrap_or(0.0).round() as u64, n as usize))
    }

    /// How many sandboxes `owner` holds (every state but `error` and
    /// `destroyed`).
    pub fn held(&self, owner: &str) -> Result<usize> {
        Self::held_in(&self.lock(), owner)
    }

    /// `held`, on a connection or inside a transaction that will add one
    /// (a transaction is a connection).
    pub fn held_in(conn: &Connection, owner: &str) -> Result<usize> {
        Ok(conn
            .prepare_cached(
                "SELECT COUNT(*) FROM sandboxes WHERE owner = ?1 AND state NOT IN ('error', 'destroyed')",
            )?
            .query_row(params![owner], |r| r.get::<_, i64>(0))? as usize)
    }

    fn lock_deferred(&self) -> std::sync::MutexGuard<'_, Vec<Deferred>> {
        self.deferred.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an event whose write may wait for the next transaction that
    /// writes events (or [`Store::flush_deferred`]), so that it costs no
    /// transaction of its own. For events that close what a synchronously
    /// written one opened (the response to a request): a crash in between
    /// loses the closing event, as a crash during the request would have.
    /// Its time is when it happened, now: an event of another sandbox
    /// written meanwhile may carry a later time and a lower sequence
    /// number. Unless a flush is already due, the flusher arranges one.
    pub fn defer_event(&self, sandbox_id: Uuid, owner: &str, data: EventData) {
        self.lock_deferred().push(Deferred {
            sandbox_id,
            owner: owner.to_string(),
            time: Utc::now(),
            data,
        });
        self.arm();
    }

    /// Sets what arranges a flush of deferred events: called (once per
    /// flush due) when an event is deferred or a failed write puts
    /// deferred events back; it should call [`Store::flush_deferred`]
    /// soon. A flush that fails puts them back and so arranges the next.
    pub fn set_flusher(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.flusher.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    }

    fn arm(&self) {
        if !self
            .flush_due
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            if let Some(f) = &*self.flusher.lock().unwrap_or_else(|e| e.into_inner()) {
                f();
            }
        }
    }

    /// Writes the deferred events, if any, and hands them to `publish`;
    /// ends the flush that was due.
    pub fn flush_deferred(&self, publish: impl FnOnce(Vec<Event>)) -> Result<()> {
        self.flush_due
            .store(false, std::sync::atomic::Ordering::SeqCst);
        if self.lock_deferred().is_empty() && self.lock_audit().is_empty() {
            return Ok(());
        }
        self.tx_events(|_| Ok(((), Vec::new())), publish)
    }

    /// A sandbox's document, read inside a transaction that will change it.
    pub fn sandbox_in(tx: &rusqlite::Transaction<'_>, id: Uuid) -> Result<Sandbox> {
        let (v, doc) = tx
            .prepare_cached("SELECT doc_version, doc FROM sandboxes WHERE id = ?1")?
            .query_row([id.to_string()], versioned)
            .map_err(|_| Error::not_found(format!("sandbox {id}")))?;
        decode_sandbox(v, &doc)
    }

    pub fn put_sandbox(tx: &rusqlite::Transaction<'_>, sb: &Sandbox) -> Result<()> {
        let doc = serde_json::to_string(sb)?;
        let r = tx.prepare_cached(
            "INSERT INTO sandboxes (id, owner, key, state, created_at, doc, doc_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state, doc = excluded.doc,
                 owner = excluded.owner, key = excluded.key, created_at = excluded.created_at,
                 doc_version = excluded.doc_version",
        )?
        .execute(params![
                sb.id.to_string(),
                sb.owner,
                sb.key,
                sb.state.as_str(),
                ms(sb.created_at),
                doc,
                SANDBOX_DOC
            ]);
        match r {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(Error::Exists(
                    "a sandbox with this key already exists".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        Self::put_ingress(tx, sb)
    }

    /// What the ingress keeps of a sandbox follows it: a destroyed one's
    /// proxies, domains and host name go; a live one with a key that can
    /// be a host label claims it, if no other sandbox has.
    fn put_ingress(tx: &rusqlite::Transaction<'_>, sb: &Sandbox) -> Result<()> {
        let id = sb.id.to_string();
        if sb.state == crate::model::State::Destroyed {
            for q in [
                "DELETE FROM host_names WHERE sandbox = ?1",
                "DELETE FROM proxies WHERE sandbox = ?1",
                "DELETE FROM domains WHERE sandbox = ?1",
            ] {
                tx.prepare_cached(q)?.execute([&id])?;
            }
        } else if let Some(label) = sb.key.as_deref().and_then(crate::model::key_host_label) {
            tx.prepare_cached("INSERT OR IGNORE INTO host_names (label, sandbox) VALUES (?1, ?2)")?
                .execute([&label, &id])?;
        }
        Ok(())
    }

    /// Appends an event, giving it the next per-sandbox id and the next
    /// global sequence number.
    pub fn append_event(
        tx: &rusqlite::Transaction<'_>,
        sandbox_id: Uuid,
        owner: &str,
        data: EventData,
    ) -> Result<Event> {
        Self::append_event_at(tx, sandbox_id, owner, data, Utc::now())
    }

    fn append_event_at(
        tx: &rusqlite::Transaction<'_>,
        sandbox_id: Uuid,
        owner: &str,
        data: EventData,
        now: DateTime<Utc>,
    ) -> Result<Event> {
        let kind = data.kind().to_string();
        let sid = sandbox_id.to_string();
        let next: i64 = tx
            .prepare_cached(
                "SELECT COALESCE(MAX(sandbox_seq), 0) + 1 FROM events WHERE sandbox_id = ?1",
            )?
            .query_row(params![sid], |r| r.get(0))?;
        tx.prepare_cached(
            "INSERT INTO events (sandbox_id, sandbox_seq, owner, kind, ts, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![sid, next, owner, kind, ms(now), data.to_json().to_string()])?;
        Ok(Event {
            seq: tx.last_insert_rowid(),
            id: next,
            sandbox_id,
            owner: owner.to_string(),
            kind,
            time: from_ms(ms(now)),
            data,
        })
    }

    pub fn get_sandbox(&self, id: Uuid) -> Result<Option<Sandbox>> {
        let conn = self.lock();
        let doc = conn
            .prepare_cached("SELECT doc_version, doc FROM sandboxes WHERE id = ?1")?
            .query_row(params![id.to_string()], versioned)
            .optional()?;
        doc.map(|(v, d)| decode_sandbox(v, &d)).transpose()
    }

    pub fn find_by_key(&self, owner: &str, key: &str) -> Result<Option<Sandbox>> {
        let conn = self.lock();
        let doc = conn
            .query_row(
                "SELECT doc_version, doc FROM sandboxes WHERE owner = ?1 AND key = ?2 AND state != 'destroyed'",
                params![owner, key],
                versioned,
            )
            .optional()?;
        doc.map(|(v, d)| decode_sandbox(v, &d)).transpose()
    }

    /// Sandboxes of `owner` (every owner when `None`) in creation order.
    pub fn list_sandboxes(&self, owner: Option<&str>, q: &ListQuery) -> Result<Vec<Sandbox>> {
        let conn = self.lock();
        let mut sql = String::from("SELECT doc_version, doc FROM sandboxes WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(o) = owner {
            args.push(o.to_string().into());
            sql += &format!(" AND owner = ?{}", args.len());
        }
        if let Some(s) = q.state {
            args.push(s.as_str().to_string().into());
            sql += &format!(" AND state = ?{}", args.len());
        } else if !q.include_destroyed {
            sql += " AND state != 'destroyed'";
        }
        if let Some(k) = &q.key {
            args.push(k.clone().into());
            sql += &format!(" AND key = ?{}", args.len());
        }
        if let Some(after) = q.after {
            args.push(after.to_string().into());
            let n = args.len();
            sql += &format!(
                " AND (created_at, id) > (SELECT created_at, id FROM sandboxes WHERE id = ?{n})"
            );
        }
        sql += " ORDER BY created_at, id";
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), versioned)?;
        let mut out = Vec::new();
        for row in rows {
            let (v, doc) = row?;
            let sb = decode_sandbox(v, &doc)?;
            if q.labels.iter().all(|(k, v)| sb.labels.get(k) == Some(v)) {
                out.push(sb);
                if q.limit > 0 && out.len() > q.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Events after `after` (a per-sandbox id when `sandbox` is given, else a
    /// global sequence number), oldest first.
    pub fn events_after(
        &self,
        owner: Option<&str>,
        sandbox: Option<Uuid>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let conn = self.lock();
        let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(i64, String, i64, String, String, i64, String)> {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
        };
        let rows: Vec<_> = match sandbox {
            Some(id) => {
                let mut st = conn.prepare(
                    "SELECT seq, sandbox_id, sandbox_seq, owner, kind, ts, data FROM events
                     WHERE sandbox_id = ?1 AND sandbox_seq > ?2 AND (?4 IS NULL OR owner = ?4)
                     ORDER BY sandbox_seq LIMIT ?3",
                )?;
                // The owner too: a sandbox handed out of a warm pool had
                // another before.
                let r = st.query_map(params![id.to_string(), after, limit as i64, owner], map)?;
                r.collect::<rusqlite::Result<_>>()?
            }
            None => {
                let mut st = conn.prepare(
                    "SELECT seq, sandbox_id, sandbox_seq, owner, kind, ts, data FROM events
                     WHERE seq > ?1 AND (?2 IS NULL OR owner = ?2) ORDER BY seq LIMIT ?3",
                )?;
                let r = st.query_map(params![after, owner, limit as i64], map)?;
                r.collect::<rusqlite::Result<_>>()?
            }
        };
        rows.into_iter()
            .map(|(seq, sid, id, owner, kind, ts, data)| {
                Ok(Event {
                    seq,
                    id,
                    sandbox_id: Uuid::parse_str(&sid).map_err(Error::internal)?,
                    owner,
                    data: EventData::decode(&kind, serde_json::from_str(&data)?),
                    kind,
                    time: from_ms(ts),
                })
            })
            .collect()
    }

    /// The newest event's daemon-wide sequence number (0: none yet).
    pub fn last_seq(&self) -> Result<i64> {
        Ok(self
            .lock()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)
    }

    pub fn insert_template(&self, t: &Template) -> Result<()> {
        let doc = serde_json::to_string(t)?;
        let r = self.lock().execute(
            "INSERT INTO templates (owner, name, created_at, doc, doc_version) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![t.owner, t.name, ms(t.created_at), doc, TEMPLATE_DOC],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::Exists(format!(
                    "a template named {:?} already exists",
                    t.name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn get_template(&self, owner: &str, name: &str) -> Result<Option<Template>> {
        let doc = self
            .lock()
            .query_row(
                "SELECT doc_version, doc FROM templates WHERE owner = ?1 AND name = ?2",
                params![owner, name],
                versioned,
            )
            .optional()?;
        doc.map(|(v, d)| decode_template(v, &d)).transpose()
    }

    pub fn list_templates(&self, owner: &str) -> Result<Vec<Template>> {
        let conn = self.lock();
        let mut st =
            conn.prepare("SELECT doc_version, doc FROM templates WHERE owner = ?1 ORDER BY name")?;
        let docs = st
            .query_map(params![owner], versioned)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        docs.iter().map(|(v, d)| decode_template(*v, d)).collect()
    }

    /// Every principal's templates that ask for a warm pool.
    pub fn templates_with_pools(&self) -> Result<Vec<Template>> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT doc_version, doc FROM templates WHERE json_extract(doc, '$.warm_pool') > 0 ORDER BY owner, name",
        )?;
        let docs = st
            .query_map([], versioned)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        docs.iter().map(|(v, d)| decode_template(*v, d)).collect()
    }

    /// Whether there was one to delete.
    pub fn delete_template(&self, owner: &str, name: &str) -> Result<bool> {
        Ok(self.lock().execute(
            "DELETE FROM templates WHERE owner = ?1 AND name = ?2",
            params![owner, name],
        )? > 0)
    }

    /// Records that `principal` pulled `reference` (again: no change).
    pub fn claim_image(&self, principal: &str, reference: &str) -> Result<()> {
        self.lock().execute(
            "INSERT OR IGNORE INTO image_claims (principal, reference, created_at) VALUES (?1, ?2, ?3)",
            params![principal, reference, ms(Utc::now())],
        )?;
        Ok(())
    }

    pub fn holds_image(&self, principal: &str, reference: &str) -> Result<bool> {
        Ok(self
            .lock()
            .query_row(
                "SELECT 1 FROM image_claims WHERE principal = ?1 AND reference = ?2",
                params![principal, reference],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The references `principal` holds.
    pub fn images_of(&self, principal: &str) -> Result<Vec<String>> {
        let c = self.lock();
        let mut st = c.prepare("SELECT reference FROM image_claims WHERE principal = ?1")?;
        let rows = st.query_map(params![principal], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Drops `principal`'s claim on `reference` (every principal's with
    /// `None`); whether there was one, and how many claims are left.
    pub fn release_image(&self, principal: Option<&str>, reference: &str) -> Result<(bool, u64)> {
        let c = self.lock();
        let dropped = match principal {
            Some(p) => c.execute(
                "DELETE FROM image_claims WHERE principal = ?1 AND reference = ?2",
                params![p, reference],
            )?,
            None => c.execute(
                "DELETE FROM image_claims WHERE reference = ?1",
                params![reference],
            )?,
        };
        let left: i64 = c.query_row(
            "SELECT COUNT(*) FROM image_claims WHERE reference = ?1",
            params![reference],
            |r| r.get(0),
        )?;
        Ok((dropped > 0, left as u64))
    }

    pub fn insert_key(&self, id: &str, name: &str, principal: &str, hash: &str) -> Result<()> {
        self.lock().execute(
            "INSERT INTO api_keys (id, name, principal, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, name, principal, hash, ms(Utc::now())],
        )?;
        Ok(())
    }

    pub fn principal_for_hash(&self, hash: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT principal FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL",
                params![hash],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The API key a token hashes to, if it stands: (its id, its
    /// principal).
    pub fn key_for_hash(&self, hash: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id, principal FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL",
                params![hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Whether the API key `id` stands (is neither revoked nor gone).
    pub fn key_stands(&self, id: &str) -> Result<bool> {
        Ok(self
            .lock()
            .query_row(
                "SELECT 1 FROM api_keys WHERE id = ?1 AND revoked_at IS NULL",
                params![id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Records a token Paddock signed (listed and revocable).
    pub fn put_token(&self, t: &crate::model::TokenInfo) -> Result<()> {
        self.lock().execute(
            "INSERT INTO tokens (jti, owner, created_at, expires_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                t.jti,
                t.owner,
                ms(t.created_at),
                ms(t.expires_at),
                serde_json::to_string(t)?
            ],
        )?;
        Ok(())
    }

    /// `owner`'s tokens that are neither expired nor revoked, oldest
    /// first; the expired are removed first.
    pub fn list_tokens(&self, owner: &str) -> Result<Vec<crate::model::TokenInfo>> {
        let conn = self.lock();
        let now = ms(Utc::now());
        conn.execute("DELETE FROM tokens WHERE expires_at < ?1", params![now])?;
        let mut st = conn.prepare_cached(
            "SELECT doc FROM tokens WHERE owner = ?1 AND revoked_at IS NULL ORDER BY created_at, jti",
        )?;
        let docs = st
            .query_map(params![owner], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        docs.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
    }

    /// Revokes `owner`'s token `jti`; false if it has none standing.
    pub fn revoke_token(&self, owner: &str, jti: &str) -> Result<bool> {
        let n = self.lock().execute(
            "UPDATE tokens SET revoked_at = ?3 WHERE owner = ?1 AND jti = ?2 AND revoked_at IS NULL",
            params![owner, jti, ms(Utc::now())],
        )?;
        Ok(n > 0)
    }

    /// The token `jti` as recorded, if it is and is not revoked.
    pub fn standing_token(&self, jti: &str) -> Result<Option<crate::model::TokenInfo>> {
        let doc: Option<String> = self
            .lock()
            .query_row(
                "SELECT doc FROM tokens WHERE jti = ?1 AND revoked_at IS NULL",
                params![jti],
                |r| r.get(0),
            )
            .optional()?;
        match doc {
            Some(d) => Ok(Some(serde_json::from_str(&d)?)),
            None => Ok(None),
        }
    }

    pub fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT id, name, principal, created_at, revoked_at FROM api_keys ORDER BY created_at",
        )?;
        let rows = st.query_map([], |r| {
            Ok(ApiKey {
                id: r.get(0)?,
                name: r.get(1)?,
                principal: r.get(2)?,
                created_at: from_ms(r.get(3)?),
                revoked_at: r.get::<_, Option<i64>>(4)?.map(from_ms),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Revokes a key by id or name; false when none matched.
    pub fn revoke_key(&self, id_or_name: &str) -> Result<bool> {
        let n = self.lock().execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE (id = ?1 OR name = ?1) AND revoked_at IS NULL",
            params![id_or_name, ms(Utc::now())],
        )?;
        Ok(n > 0)
    }

    /// Records a snapshot (409 when its owner has one of that name).
    pub fn put_snapshot(tx: &rusqlite::Transaction<'_>, sn: &Snapshot) -> Result<()> {
        let doc = serde_json::to_string(sn)?;
        let r = tx.execute(
            "INSERT INTO snapshots (id, owner, name, created_at, doc_version, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![sn.id.to_string(), sn.owner, sn.name, ms(sn.created_at), SNAPSHOT_DOC, doc],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::Exists(format!(
                    "a snapshot named {:?} already exists",
                    sn.name.as_deref().unwrap_or_default()
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `owner`'s snapshot named `name`, if there is one.
    pub fn delete_snapshot_named(
        tx: &rusqlite::Transaction<'_>,
        owner: &str,
        name: &str,
    ) -> Result<()> {
        tx.execute(
            "DELETE FROM snapshots WHERE owner = ?1 AND name = ?2",
            params![owner, name],
        )?;
        Ok(())
    }

    /// A snapshot by its id, or by its name among `owner`'s.
    pub fn find_snapshot(&self, owner: &str, id_or_name: &str) -> Result<Option<Snapshot>> {
        let doc = self
            .lock()
            .query_row(
                "SELECT doc_version, doc FROM snapshots WHERE owner = ?1 AND (id = ?2 OR name = ?2)
                 ORDER BY id = ?2 DESC LIMIT 1",
                params![owner, id_or_name],
                versioned,
            )
            .optional()?;
        doc.map(|(v, d)| decode_snapshot(v, &d)).transpose()
    }

    /// `owner`'s snapshots (every one with `None`), oldest first.
    pub fn list_snapshots(&self, owner: Option<&str>) -> Result<Vec<Snapshot>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT doc_version, doc FROM snapshots WHERE ?1 IS NULL OR owner = ?1 ORDER BY created_at, id",
        )?;
        let docs = st
            .query_map(params![owner], versioned)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        docs.iter().map(|(v, d)| decode_snapshot(*v, d)).collect()
    }

    /// Whether there was one to delete.
    pub fn delete_snapshot(&self, owner: &str, id: Uuid) -> Result<bool> {
        Ok(self.lock().execute(
            "DELETE FROM snapshots WHERE owner = ?1 AND id = ?2",
            params![owner, id.to_string()],
        )? > 0)
    }

    /// Records a volume (409 when its owner has one of that name).
    pub fn insert_volume(&self, v: &Volume) -> Result<()> {
        let r = self.lock().execute(
            "INSERT INTO volumes (id, owner, name, created_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                v.id.to_string(),
                v.owner,
                v.name,
                ms(v.created_at),
                serde_json::to_string(v)?
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::Exists(format!(
                    "a volume named {:?} already exists",
                    v.name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One of `owner`'s volumes, by id or name.
    pub fn find_volume(&self, owner: &str, id_or_name: &str) -> Result<Option<Volume>> {
        let doc: Option<String> = self
            .lock()
            .query_row(
                "SELECT doc FROM volumes WHERE owner = ?1 AND (id = ?2 OR name = ?2)
                 ORDER BY id = ?2 DESC LIMIT 1",
                params![owner, id_or_name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
    }

    /// Records a network (a name its owner has, or a second default, is
    /// [`Error::Exists`]).
    pub fn insert_network(&self, n: &Network) -> Result<()> {
        let r = self.lock().execute(
            "INSERT INTO networks (id, owner, name, is_default, created_at, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                n.id,
                n.owner,
                n.name,
                n.is_default,
                ms(n.created_at),
                serde_json::to_string(n)?
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::Exists(match &n.name {
                    Some(name) => format!("a network named {name:?} already exists"),
                    None => "the default network exists already".to_string(),
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One of `owner`'s networks, by id or name.
    pub fn find_network(&self, owner: &str, id_or_name: &str) -> Result<Option<Network>> {
        let doc: Option<String> = self
            .lock()
            .query_row(
                "SELECT doc FROM networks WHERE owner = ?1 AND (id = ?2 OR name = ?2)
                 ORDER BY id = ?2 DESC LIMIT 1",
                params![owner, id_or_name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
    }

    /// `owner`'s default network, if it has one yet.
    pub fn default_network(&self, owner: &str) -> Result<Option<Network>> {
        let doc: Option<String> = self
            .lock()
            .query_row(
                "SELECT doc FROM networks WHERE owner = ?1 AND is_default = 1",
                params![owner],
                |r| r.get(0),
            )
            .optional()?;
        Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
    }

    /// `owner`'s networks (every one with `None`), oldest first.
    pub fn list_networks(&self, owner: Option<&str>) -> Result<Vec<Network>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT doc FROM networks WHERE ?1 IS NULL OR owner = ?1 ORDER BY owner, created_at, id",
        )?;
        let docs = st
            .query_map(params![owner], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        docs.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
    }

    /// The sandboxes (neither destroyed nor failed) on network `id`.
    pub fn network_members(tx: &rusqlite::Connection, id: &str) -> Result<Vec<Sandbox>> {
        let mut st = tx.prepare_cached(
            "SELECT doc_version, doc FROM sandboxes
             WHERE state NOT IN ('destroyed', 'error') AND json_extract(doc, '$.config.network') = ?1
             ORDER BY created_at",
        )?;
        let rows = st
            .query_map(params![id], versioned)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.iter().map(|(v, d)| decode_sandbox(*v, d)).collect()
    }

    /// Refuses (409) a sandbox on a network that is gone: checked in the
    /// transaction that stores it.
    pub fn check_network(tx: &rusqlite::Connection, id: &str) -> Result<()> {
        let there: Option<i64> = tx
            .query_row("SELECT 1 FROM networks WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?;
        match there {
            Some(_) => Ok(()),
            None => Err(Error::Conflict(format!("network {id} was deleted"))),
        }
    }

    /// Deletes a network's record if no sandbox is on it (in one
    /// transaction with that check); its members otherwise.
    pub fn delete_network(&self, id: &str) -> Result<Vec<Sandbox>> {
        self.tx(|tx| {
            let members = Self::network_members(tx, id)?;
            if members.is_empty() {
                tx.execute("DELETE FROM networks WHERE id = ?1", params![id])?;
            }
            Ok(members)
        })
    }

    /// Stores a new workspace; a name the owner has is a conflict.
    pub fn insert_workspace(&self, w: &Workspace) -> Result<()> {
        let r = self.lock().execute(
            "INSERT INTO workspaces (id, owner, name, created_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                w.id.to_string(),
                w.owner,
                w.name,
                ms(w.created_at),
                serde_json::to_string(w)?
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::Exists(format!(
                    "a workspace named {:?} already exists",
                    w.name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a workspace back (by id).
    pub fn update_workspace(&self, w: &Workspace) -> Result<()> {
        self.lock().execute(
            "UPDATE workspaces SET doc = ?2 WHERE id = ?1",
            params![w.id.to_string(), serde_json::to_string(w)?],
        )?;
        Ok(())
    }

    /// `owner`'s workspace of that name (or id).
    pub fn find_workspace(&self, owner: &str, id_or_name: &str) -> Result<Option<Workspace>> {
        let doc: Option<String> = self
            .lock()
            .query_row(
                "SELECT doc FROM workspaces WHERE owner = ?1 AND (id = ?2 OR name = ?2)
                 ORDER BY id = ?2 DESC LIMIT 1",
                params![owner, id_or_name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
    }

    /// A workspace by id, whoever owns it.
    pub fn workspace(&self, id: Uuid) -> Result<Option<Workspace>> {
        let doc: Option<String> = self
            .lock()
            .query_row(
                "SELECT doc FROM workspaces WHERE id = ?1",
                params![id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
    }

    /// `owner`'s workspaces (every one with `None`), by name.
    pub fn list_workspaces(&self, owner: Option<&str>) -> Result<Vec<Workspace>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT doc FROM workspaces WHERE ?1 IS NULL OR owner = ?1 ORDER BY owner, name",
        )?;
        let docs = st
            .query_map(params![owner], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        docs.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
    }

    /// Whether there was one to delete.
    pub fn delete_workspace(&self, id: Uuid) -> Result<bool> {
        Ok(self.lock().execute(
            "DELETE FROM workspaces WHERE id = ?1",
            params![id.to_string()],
        )? > 0)
    }

    /// `owner`'s volumes (every one with `None`), by name.
    pub fn list_volumes(&self, owner: Option<&str>) -> Result<Vec<Volume>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT doc FROM volumes WHERE ?1 IS NULL OR owner = ?1 ORDER BY owner, name",
        )?;
        let docs = st
            .query_map(params![owner], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        docs.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
    }

    /// Deletes a volume's record if no sandbox holds it (in one
    /// transaction with that check); the holders otherwise.
    pub fn delete_volume(&self, v: &Volume) -> Result<Vec<VolumeHolder>> {
        self.tx(|tx| {
            let holders = Self::volume_holders(tx, v.id)?;
            if holders.is_empty() {
                tx.execute(
                    "DELETE FROM volumes WHERE id = ?1",
                    params![v.id.to_string()],
                )?;
            }
            Ok(holders)
        })
    }

    /// The sandboxes (not destroyed, not failed) that mount volume `id`.
    pub fn volume_holders(tx: &rusqlite::Connection, id: Uuid) -> Result<Vec<VolumeHolder>> {
        let mut st = tx.prepare_cached(
            "SELECT s.id, json_extract(v.value, '$.path'), json_extract(v.value, '$.read_only')
             FROM sandboxes s, json_each(json_extract(s.doc, '$.config.volumes')) AS v
             WHERE s.state NOT IN ('destroyed', 'error') AND json_extract(v.value, '$.volume') = ?1",
        )?;
        let rows = st
            .query_map(params![id.to_string()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<bool>>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, path, ro)| {
                Some(VolumeHolder {
                    sandbox_id: Uuid::parse_str(&s).ok()?,
                    path,
                    read_only: ro.unwrap_or(false),
                })
            })
            .collect())
    }

    /// Refuses (409, naming the holder) a read-write mount of a volume
    /// another sandbox than `me` mounts read-write.
    pub fn check_volumes(
        tx: &rusqlite::Connection,
        me: Uuid,
        mounts: &[crate::model::VolumeMount],
    ) -> Result<()> {
        for m in mounts {
            let there: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM volumes WHERE id = ?1",
                    params![m.volume.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if there.is_none() {
                return Err(Error::Conflict(format!("volume {} was deleted", m.name)));
            }
        }
        for m in mounts.iter().filter(|m| !m.read_only) {
            if let Some(h) = Self::volume_holders(tx, m.volume)?
                .into_iter()
                .find(|h| !h.read_only && h.sandbox_id != me)
            {
                return Err(Error::Conflict(format!(
                    "volume {} is mounted read-write by sandbox {}",
                    m.name, h.sandbox_id
                )));
            }
        }
        Ok(())
    }

    /// Sandboxes still marked as a fork's children (the fork is not done).
    pub fn forks_pending(&self) -> Result<Vec<Sandbox>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT doc_version, doc FROM sandboxes WHERE state != 'destroyed' AND json_extract(doc, '$.fork_of') IS NOT NULL",
        )?;
        let docs = st
            .query_map([], versioned)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        docs.iter().map(|(v, d)| decode_sandbox(*v, d)).collect()
    }

    /// The snapshot layers of every sandbox that is not destroyed.
    pub fn sandbox_layers(&self) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT j.value FROM sandboxes, json_each(json_extract(sandboxes.doc, '$.config.layers')) AS j
             WHERE sandboxes.state != 'destroyed'",
        )?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Sandboxes whose state says something may be running.
    pub fn live_sandboxes(&self) -> Result<Vec<Sandbox>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT doc_version, doc FROM sandboxes WHERE state IN ('creating', 'running', 'paused', 'stopped')",
        )?;
        let rows = st.query_map([], versioned)?;
        let mut out = Vec::new();
        for row in rows {
            let (v, d) = row?;
            out.push(decode_sandbox(v, &d)?);
        }
        Ok(out)
    }
}

/// The ingress's records (`engine/ingress.rs`).
impl Store {
    /// A sandbox's proxies, the default first, then by name.
    pub fn proxies(&self, sandbox: Uuid) -> Result<Vec<crate::model::Proxy>> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT name, port, created_at FROM proxies WHERE sandbox = ?1 ORDER BY name",
        )?;
        let rows = st
            .query_map([sandbox.to_string()], |r| {
                Ok(crate::model::Proxy {
                    sandbox,
                    name: r.get(0)?,
                    port: r.get(1)?,
                    created_at: from_ms(r.get(2)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn proxy(&self, sandbox: Uuid, name: &str) -> Result<Option<crate::model::Proxy>> {
        let conn = self.lock();
        let r = conn
            .prepare_cached(
                "SELECT port, created_at FROM proxies WHERE sandbox = ?1 AND name = ?2",
            )?
            .query_row(params![sandbox.to_string(), name], |r| {
                Ok(crate::model::Proxy {
                    sandbox,
                    name: name.to_string(),
                    port: r.get(0)?,
                    created_at: from_ms(r.get(1)?),
                })
            })
            .optional()?;
        Ok(r)
    }

    /// Writes a proxy: a new one (`replace` false: `Exists` when the name
    /// is taken) or a new port for one (made when missing).
    pub fn put_proxy(
        tx: &rusqlite::Transaction<'_>,
        p: &crate::model::Proxy,
        replace: bool,
    ) -> Result<()> {
        let q = if replace {
            "INSERT INTO proxies (sandbox, name, port, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(sandbox, name) DO UPDATE SET port = excluded.port"
        } else {
            "INSERT INTO proxies (sandbox, name, port, created_at) VALUES (?1, ?2, ?3, ?4)"
        };
        let r = tx.prepare_cached(q)?.execute(params![
            p.sandbox.to_string(),
            p.name,
            p.port,
            ms(p.created_at)
        ]);
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::Exists(match p.name.as_str() {
                    "" => format!("sandbox {} already has a default proxy", p.sandbox),
                    n => format!("sandbox {} already has a proxy named {n:?}", p.sandbox),
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn count_proxies(tx: &rusqlite::Transaction<'_>, sandbox: Uuid) -> Result<usize> {
        let n: i64 = tx
            .prepare_cached("SELECT COUNT(*) FROM proxies WHERE sandbox = ?1")?
            .query_row([sandbox.to_string()], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Removes a proxy; whether there was one.
    pub fn delete_proxy(&self, sandbox: Uuid, name: &str) -> Result<bool> {
        let n = self.lock().execute(
            "DELETE FROM proxies WHERE sandbox = ?1 AND name = ?2",
            params![sandbox.to_string(), name],
        )?;
        Ok(n > 0)
    }

    /// Binds a domain (`Exists` when it is bound, to anyone).
    pub fn insert_domain(
        tx: &rusqlite::Transaction<'_>,
        d: &crate::model::DomainBinding,
    ) -> Result<()> {
        let r = tx
            .prepare_cached(
                "INSERT INTO domains (domain, sandbox, owner, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                d.domain,
                d.sandbox.to_string(),
                d.owner,
                ms(d.created_at)
            ]);
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::Exists(format!(
                    "domain {:?} is already bound",
                    d.domain
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn count_domains(tx: &rusqlite::Transaction<'_>, owner: &str) -> Result<usize> {
        let n: i64 = tx
            .prepare_cached("SELECT COUNT(*) FROM domains WHERE owner = ?1")?
            .query_row([owner], |r| r.get(0))?;
        Ok(n as usize)
    }

    fn domain_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<crate::model::DomainBinding> {
        let sandbox: String = r.get(1)?;
        Ok(crate::model::DomainBinding {
            domain: r.get(0)?,
            sandbox: Uuid::parse_str(&sandbox).unwrap_or_default(),
            owner: r.get(2)?,
            created_at: from_ms(r.get(3)?),
        })
    }

    pub fn domain(&self, domain: &str) -> Result<Option<crate::model::DomainBinding>> {
        let conn = self.lock();
        let r = conn
            .prepare_cached(
                "SELECT domain, sandbox, owner, created_at FROM domains WHERE domain = ?1",
            )?
            .query_row([domain], Self::domain_row)
            .optional()?;
        Ok(r)
    }

    /// `owner`'s bindings, by domain.
    pub fn domains(&self, owner: &str) -> Result<Vec<crate::model::DomainBinding>> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT domain, sandbox, owner, created_at FROM domains WHERE owner = ?1 ORDER BY domain",
        )?;
        let rows = st
            .query_map([owner], Self::domain_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Unbinds one of `owner`'s domains; whether it was theirs.
    pub fn delete_domain(&self, owner: &str, domain: &str) -> Result<bool> {
        let n = self.lock().execute(
            "DELETE FROM domains WHERE domain = ?1 AND owner = ?2",
            params![domain, owner],
        )?;
        Ok(n > 0)
    }

    /// The sandbox that holds a host label, if one does.
    pub fn host_name(&self, label: &str) -> Result<Option<Uuid>> {
        let conn = self.lock();
        let r: Option<String> = conn
            .prepare_cached("SELECT sandbox FROM host_names WHERE label = ?1")?
            .query_row([label], |r| r.get(0))
            .optional()?;
        Ok(r.and_then(|s| Uuid::parse_str(&s).ok()))
    }

    /// The host label a sandbox holds, if it does.
    pub fn host_name_of(&self, sandbox: Uuid) -> Result<Option<String>> {
        let conn = self.lock();
        let r = conn
            .prepare_cached("SELECT label FROM host_names WHERE sandbox = ?1")?
            .query_row([sandbox.to_string()], |r| r.get(0))
            .optional()?;
        Ok(r)
    }
}

/// SSH keys (`engine/ssh_keys.rs`).
impl Store {
    /// Records a key (409 when its owner has one of that name).
    pub fn insert_ssh_key(&self, k: &SshKey) -> Result<()> {
        let r = self.lock().execute(
            "INSERT INTO ssh_keys (id, owner, name, fingerprint, sandbox, created_at, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                k.id.to_string(),
                k.owner,
                k.name,
                k.fingerprint,
                k.sandbox.map(|s| s.to_string()),
                ms(k.created_at),
                serde_json::to_string(k)?
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::Exists(format!(
                    "an SSH key named {:?} already exists",
                    k.name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `owner`'s keys, oldest first. Keys of a sandbox that is destroyed
    /// or gone are removed first: they went with it.
    pub fn list_ssh_keys(&self, owner: &str) -> Result<Vec<SshKey>> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM ssh_keys WHERE owner = ?1 AND sandbox IS NOT NULL AND sandbox NOT IN
             (SELECT id FROM sandboxes WHERE owner = ?1 AND state != 'destroyed')",
            params![owner],
        )?;
        let mut st = conn
            .prepare_cached("SELECT doc FROM ssh_keys WHERE owner = ?1 ORDER BY created_at, id")?;
        let docs = st
            .query_map(params![owner], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        docs.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
    }

    /// Every key with this fingerprint, whoever registered it.
    pub fn ssh_keys_by_fingerprint(&self, fingerprint: &str) -> Result<Vec<SshKey>> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT doc FROM ssh_keys WHERE fingerprint = ?1 ORDER BY owner, created_at",
        )?;
        let docs = st
            .query_map(params![fingerprint], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        docs.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
    }

    /// Removes one of `owner`'s keys by id or name; the key removed.
    pub fn delete_ssh_key(&self, owner: &str, id_or_name: &str) -> Result<Option<SshKey>> {
        self.tx(|tx| {
            let doc: Option<(String, String)> = tx
                .query_row(
                    "SELECT id, doc FROM ssh_keys WHERE owner = ?1 AND (id = ?2 OR name = ?2)
                     ORDER BY id = ?2 DESC LIMIT 1",
                    params![owner, id_or_name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((id, doc)) = doc else {
                return Ok(None);
            };
            tx.execute("DELETE FROM ssh_keys WHERE id = ?1", params![id])?;
            Ok(Some(serde_json::from_str(&doc)?))
        })
    }
}

impl Drop for Store {
    /// Deferred events still waiting (a shutdown, the last handle going)
    /// are written, unpublished: nobody is left to see them live.
    fn drop(&mut self) {
        if let Err(e) = self.flush_deferred(|_| {}) {
            tracing::warn!("deferred events lost: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document written before backends had names (version 1, no
    /// `backend`) reads as one with the isolation's default; one from a
    /// newer daemon is an error and stays as it was.
    #[test]
    fn stored_documents_are_upgraded_and_newer_ones_refused() {
        let store = Store::open_in_memory().unwrap();
        let id = Uuid::new_v4();
        let v1 = json!({
            "id": id, "owner": "o", "labels": {}, "state": "stopped",
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "last_active_at": "2026-01-01T00:00:00Z",
            "config": {"isolation": "container", "cpu": 1.0, "memory_mb": 512, "disk_mb": 1024,
                       "pids": 1024, "env": {}, "cwd": "/", "mounts": [], "extra_hosts": [],
                       "ports": [], "tty": false}
        });
        let raw = |v: i64, doc: &serde_json::Value| {
            store.lock().execute(
                "INSERT OR REPLACE INTO sandboxes (id, owner, key, state, created_at, doc, doc_version) VALUES (?1, 'o', NULL, 'stopped', 0, ?2, ?3)",
                params![id.to_string(), doc.to_string(), v],
            ).unwrap();
        };
        raw(1, &v1);
        let sb = match store.get_sandbox(id) {
            Ok(Some(sb)) => sb,
            other => panic!("a version 1 document did not read: {other:?}"),
        };
        assert_eq!(sb.backend, "");
        // Written back, it is this version's.
        store.tx(|tx| Store::put_sandbox(tx, &sb)).unwrap();
        let v: i64 = store
            .lock()
            .query_row(
                "SELECT doc_version FROM sandboxes WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, SANDBOX_DOC);
        raw(SANDBOX_DOC + 1, &v1);
        let e = store.get_sandbox(id).unwrap_err().to_string();
        assert!(e.contains("newer Paddock"), "{e}");
        assert!(store.live_sandboxes().is_err());
        // Templates likewise.
        store
            .lock()
            .execute(
                "INSERT INTO templates (owner, name, created_at, doc, doc_version) VALUES ('o', 't', 0, '{}', ?1)",
                [TEMPLATE_DOC + 1],
            )
            .unwrap();
        let e = store.get_template("o", "t").unwrap_err().to_string();
        assert!(e.contains("newer Paddock"), "{e}");
    }

    fn ev(kind: &str, data: serde_json::Value) -> EventData {
        EventData::decode(kind, data)
    }
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    fn write(
        store: &Store,
        id: Uuid,
        kind: &str,
        published: &mut Vec<(i64, i64, String)>,
    ) -> Result<()> {
        store.tx_events(
            |tx| {
                Ok((
                    (),
                    vec![Store::append_event(tx, id, "o", ev(kind, json!({})))?],
                ))
            },
            |evs| published.extend(evs.into_iter().map(|e| (e.seq, e.id, e.kind))),
        )
    }

    /// A store whose flusher counts the flushes it was asked for.
    fn counted() -> (Store, Arc<AtomicUsize>) {
        let store = Store::open_in_memory().unwrap();
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        store.set_flusher(move || {
            m.fetch_add(1, SeqCst);
        });
        (store, n)
    }

    #[test]
    fn deferred_events_go_first_with_the_next_write_or_a_flush() {
        let (store, asked) = counted();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut published = Vec::new();
        write(&store, a, "exec.request", &mut published).unwrap();
        store.defer_event(a, "o", ev("exec.response", json!({"request_id": 1})));
        assert_eq!(asked.load(SeqCst), 1);
        store.defer_event(b, "o", ev("fs.response", json!({})));
        assert_eq!(asked.load(SeqCst), 1, "a flush is already due");
        assert_eq!(store.last_seq().unwrap(), 1, "not written yet");
        // The next write carries them, before its own event, in order.
        write(&store, a, "exec.request", &mut published).unwrap();
        let got: Vec<_> = published
            .iter()
            .map(|(s, i, k)| (*s, *i, k.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, 1, "exec.request"),
                (2, 2, "exec.response"),
                (3, 1, "fs.response"),
                (4, 3, "exec.request")
            ]
        );
        let stored = store.events_after(None, Some(a), 0, 10).unwrap();
        assert_eq!(stored[1].kind, "exec.response");
        assert_eq!(stored[1].data.to_json()["request_id"], 1);
        // The arranged flush is still due (a write does not cancel it): a
        // new deferred event needs no other; the flush writes it and ends
        // the duty.
        store.defer_event(a, "o", ev("exec.response", json!({})));
        assert_eq!(asked.load(SeqCst), 1);
        let mut flushed = Vec::new();
        store
            .flush_deferred(|evs| flushed.extend(evs.into_iter().map(|e| e.seq)))
            .unwrap();
        assert_eq!(flushed, [5]);
        store
            .flush_deferred(|_| panic!("nothing to publish"))
            .unwrap();
        store.defer_event(b, "o", ev("fs.response", json!({})));
        assert_eq!(asked.load(SeqCst), 2, "a new flush is due");
        store.flush_deferred(|_| {}).unwrap();
        assert_eq!(store.last_seq().unwrap(), 6);
    }

    #[test]
    fn a_failed_write_keeps_the_deferred_events_and_asks_for_a_flush() {
        let (store, asked) = counted();
        let a = Uuid::new_v4();
        let fail = |store: &Store, flush_meanwhile: bool| {
            let r: Result<()> = store.tx_events(
                |_| {
                    if flush_meanwhile {
                        // The flush that was due runs now, finds the queue
                        // taken and ends its duty.
                        store.flush_deferred(|_| {}).unwrap();
                    }
                    Err(Error::Internal("no".into()))
                },
                |_| panic!("rolled back"),
            );
            assert!(r.is_err());
        };
        store.defer_event(a, "o", ev("exec.response", json!({})));
        assert_eq!(asked.load(SeqCst), 1);
        fail(&store, false);
        assert_eq!(
            store.last_seq().unwrap(),
            0,
            "rolled back with the failed write"
        );
        assert_eq!(asked.load(SeqCst), 1, "the flush asked for is still due");
        fail(&store, true);
        assert_eq!(
            asked.load(SeqCst),
            2,
            "put back after the due flush passed: a new one is asked for"
        );
        let mut published = Vec::new();
        write(&store, a, "exec.request", &mut published).unwrap();
        let kinds: Vec<_> = published.iter().map(|(_, _, k)| k.as_str()).collect();
        assert_eq!(kinds, ["exec.response", "exec.request"]);
        fail(&store, true);
        assert_eq!(asked.load(SeqCst), 2, "nothing was put back");
    }

    #[test]
    fn deferred_events_are_written_when_the_store_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let store = Store::open(&path).unwrap();
        store.defer_event(Uuid::new_v4(), "o", ev("exec.response", json!({})));
        drop(store);
        assert_eq!(Store::open(&path).unwrap().last_seq().unwrap(), 1);
    }
}

//! Pens (0.5.0): workspaces that scale to zero, as the engine keeps them
//! (`Engine::*_workspace`). A pen's box is a hogbox made from the pen's
//! spec; `hibernate` snapshots it and destroys it, `wake` makes a new one
//! from the latest snapshot. `on_idle: hibernate` with the spec's
//! `ttl_seconds` hibernates a box idle that long; `wake: on-request` wakes
//! the pen when a request reaches its `web_url`, held until the box
//! answers.

use super::*;
use paddock_core::model::{IdleAction, Workspace, WorkspaceRequest, WorkspaceUpdate};

pub(crate) fn routes() -> Router<Hog> {
    Router::new()
        .route("/pens", post(create_pen).get(list_pens))
        .route(
            "/pens/{name}",
            get(get_pen).patch(update_pen).delete(delete_pen),
        )
        .route("/pens/{name}/hibernate", post(hibernate_pen))
        .route("/pens/{name}/wake", post(wake_pen))
        .route("/pens/{name}/web", any(pen_web_root))
        .route("/pens/{name}/web/", any(pen_web_root))
        .route("/pens/{name}/web/{*rest}", any(pen_web))
}

fn on_idle_of(s: &str) -> HResult<IdleAction> {
    match s {
        "destroy" => Ok(IdleAction::Destroy),
        "hibernate" => Ok(IdleAction::Hibernate),
        other => Err(Problem::invalid(vec![ErrorDetail::new(
            "body.on_idle",
            "expected \"destroy\" or \"hibernate\"",
        )
        .with(other)])),
    }
}

fn wake_of(s: &str) -> HResult<bool> {
    match s {
        "manual" => Ok(false),
        "on-request" => Ok(true),
        other => Err(Problem::invalid(vec![ErrorDetail::new(
            "body.wake",
            "expected \"manual\" or \"on-request\"",
        )
        .with(other)])),
    }
}

/// The engine's spec of a pen's boxes: a box's, whose `ttl_seconds` is
/// its idle timeout (a pen's box has no lifetime of its own).
fn pen_spec(st: &Hog, p: &Principal, spec: &CreateBox) -> HResult<SandboxSpec> {
    if spec.snapshot_id.is_some() {
        return Err(Problem::field(
            "body.spec.snapshot_id",
            "a pen starts from source_alias, then from its latest snapshot",
        ));
    }
    let mut s = sandbox_spec(&st.engine, p, spec, "body.spec")?;
    s.ttl_secs = None;
    s.idle_timeout_secs = spec.ttl_seconds.filter(|t| *t > 0).map(|t| t as u64);
    Ok(s)
}

/// A pen's `BoxSpec`, from the engine's spec of its boxes.
fn spec_echo(s: &SandboxSpec, v: ClientVersion) -> BoxSpec {
    let l = |k: &str| s.labels.get(k);
    let n = |k: &str| l(k).and_then(|v| v.parse::<i64>().ok());
    BoxSpec {
        cpus: l(CPUS_ASKED)
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_CPUS),
        memory_mib: s.memory_mb.unwrap_or(DEFAULT_MEMORY_MIB),
        disk_gib: n(DISK_ASKED).unwrap_or(DEFAULT_DISK_GIB),
        disk_class: "mirrored",
        disk_iops: n(DISK_IOPS_L).unwrap_or(0),
        disk_mbps: n(DISK_MBPS_L).unwrap_or(0),
        net_mbps: l(NET_MBPS_L).and_then(|v| v.parse().ok()).unwrap_or(0.0),
        access_type: l(ACCESS).and_then(|a| Access::parse(a)).map(Access::as_str),
        bootstrap: s.bootstrap.clone(),
        ttl_seconds: s.idle_timeout_secs.map(|t| t as i64),
        env: s.env.clone(),
        tags: l(TAGS)
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default(),
        name: l(NAME).cloned(),
        kind: l(KIND).cloned(),
        snapshot_id: None,
        ssh_public_key: l(SSH_KEY).cloned(),
        cpu_request: s.cpu_request,
        memory_request_mib: s.memory_request_mb,
        web_port: n(WEB_PORT),
    }
    .for_client(v)
}

fn pen_of(h: &HeaderMap, w: &Workspace) -> Pen {
    let spec = spec_echo(&w.spec, client(h));
    Pen {
        id: w.id.to_string(),
        name: w.name.clone(),
        owner_id: w.owner.clone(),
        created_at: w.created_at,
        updated_at: w.updated_at,
        current_box_id: w.current.map(|c| c.to_string()),
        latest_snapshot_id: w.latest_snapshot.map(snapshot_id),
        metadata: w.metadata.clone(),
        on_idle: match w.on_idle {
            IdleAction::Destroy => "destroy",
            // A pen never suspends (its on_idle is destroy or hibernate).
            IdleAction::Hibernate | IdleAction::Suspend => "hibernate",
        },
        wake: if w.wake_on_request {
            "on-request"
        } else {
            "manual"
        },
        source_alias: w.source.clone(),
        web_url: spec
            .web_port
            .map(|_| format!("{}/v1/pens/{}/web/", base_url(h), w.name)),
        spec,
    }
}

/// Engine errors about a workspace's fields, at the pen's names.
fn pen_problem(e: Error) -> Problem {
    match e {
        Error::Invalid { field, reason } => {
            let f = match field.as_str() {
                "source" => "source_alias".to_string(),
                "current" => "current_box_id".to_string(),
                "latest_snapshot" => "latest_snapshot_id".to_string(),
                f => return Problem::field(&location(f), reason),
            };
            Problem::field(&format!("body.{f}"), reason)
        }
        e => e.into(),
    }
}

fn check_pen_name(name: &str) -> HResult<()> {
    if valid_pen_name(name) {
        Ok(())
    } else {
        Err(Problem::invalid(vec![ErrorDetail::new(
            "body.name",
            "expected 1-32 lower-case letters, digits or '-', starting and ending with a letter or digit",
        )
        .with(name)]))
    }
}

fn check_source(st: &Hog, p: &Principal, alias: &str) -> HResult<String> {
    let name = alias.strip_prefix("alias:").unwrap_or(alias);
    let r = snapshot_ref(&format!("alias:{name}"))
        .ok_or_else(|| Problem::field("body.source_alias", "expected a snapshot's name"))?;
    st.engine
        .get_snapshot(p, &r)
        .map_err(|_| Problem::field("body.source_alias", format!("no snapshot named {name:?}")))?;
    Ok(r)
}

async fn create_pen(
    State(st): State<Hog>,
    Extension(p): P,
    headers: HeaderMap,
    Body_(req): Body_<CreatePen>,
) -> HResult<(StatusCode, Json<Pen>)> {
    check_pen_name(&req.name)?;
    let spec_in = req.spec.clone().unwrap_or_default();
    let spec = pen_spec(&st, &p, &spec_in)?;
    let on_idle = on_idle_of(req.on_idle.as_deref().unwrap_or("hibernate"))?;
    let wake = wake_of(req.wake.as_deref().unwrap_or("manual"))?;
    if wake && spec_in.web_port.is_none() {
        return Err(Problem::field(
            "body.wake",
            "wake on-request needs spec.web_port (the port requests arrive at)",
        ));
    }
    let source = match req.source_alias.as_deref().filter(|s| !s.is_empty()) {
        Some(a) => Some(check_source(&st, &p, a)?),
        None => None,
    };
    let w = st
        .engine
        .create_workspace(
            &p,
            WorkspaceRequest {
                name: req.name,
                spec,
                source,
                on_idle,
                wake_on_request: wake,
                metadata: req.metadata.unwrap_or_default(),
            },
        )
        .await
        .map_err(pen_problem)?;
    Ok((StatusCode::CREATED, Json(pen_of(&headers, &w))))
}

async fn get_pen(
    State(st): State<Hog>,
    Extension(p): P,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> HResult<Json<Pen>> {
    Ok(Json(pen_of(&headers, &st.engine.get_workspace(&p, &name)?)))
}

#[derive(serde::Deserialize)]
struct PenListParams {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
}

async fn list_pens(
    State(st): State<Hog>,
    Extension(p): P,
    headers: HeaderMap,
    Query(q): Query<PenListParams>,
) -> HResult<Json<PenList>> {
    let limit = page_limit(q.limit)?;
    // By name; the cursor is the last name given.
    let all = st.engine.workspaces(&p)?;
    let after = q.cursor.filter(|c| !c.is_empty());
    let rest: Vec<&Workspace> = all
        .iter()
        .filter(|w| after.as_ref().is_none_or(|a| &w.name > a))
        .collect();
    let more = rest.len() > limit;
    let page = &rest[..rest.len().min(limit)];
    Ok(Json(PenList {
        items: page.iter().map(|w| pen_of(&headers, w)).collect(),
        next_cursor: more.then(|| page.last().map(|w| w.name.clone())).flatten(),
    }))
}

/// A box id on the wire (`""` clears).
fn box_ref(field: &str, v: &str) -> HResult<Option<uuid::Uuid>> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| Problem::field(&format!("body.{field}"), "not a hogbox id"))
}

async fn update_pen(
    State(st): State<Hog>,
    Extension(p): P,
    headers: HeaderMap,
    Path(name): Path<String>,
    Body_(req): Body_<UpdatePen>,
) -> HResult<Json<Pen>> {
    let mut u = WorkspaceUpdate::default();
    if let Some(c) = &req.current_box_id {
        let id = box_ref("current_box_id", c)?;
        if let Some(id) = id {
            // Only a box of the caller's.
            st.sandbox(&p, &id.to_string())
                .map_err(|_| Problem::field("body.current_box_id", "no such hogbox"))?;
        }
        u.current = Some(id);
    }
    if let Some(s) = &req.latest_snapshot_id {
        u.latest_snapshot = Some(if s.is_empty() {
            None
        } else {
            let r = snapshot_ref(s)
                .and_then(|r| st.engine.get_snapshot(&p, &r).ok())
                .ok_or_else(|| Problem::field("body.latest_snapshot_id", "no such snapshot"))?;
            Some(r.id)
        });
    }
    if let Some(a) = &req.source_alias {
        u.source = Some(if a.is_empty() {
            None
        } else {
            Some(check_source(&st, &p, a)?)
        });
    }
    let current = st.engine.get_workspace(&p, &name)?;
    let web_port = match &req.spec {
        Some(spec) => {
            u.spec = Some(pen_spec(&st, &p, spec)?);
            spec.web_port
        }
        None => current
            .spec
            .labels
            .get(WEB_PORT)
            .and_then(|v| v.parse().ok()),
    };
    if let Some(o) = &req.on_idle {
        u.on_idle = Some(if o.is_empty() {
            IdleAction::Hibernate
        } else {
            on_idle_of(o)?
        });
    }
    if let Some(w) = &req.wake {
        u.wake_on_request = Some(!w.is_empty() && wake_of(w)?);
    }
    let wakes = u.wake_on_request.unwrap_or(current.wake_on_request);
    if wakes && web_port.is_none() {
        return Err(Problem::field(
            "body.wake",
            "wake on-request needs spec.web_port (the port requests arrive at)",
        ));
    }
    u.metadata = req.metadata.clone();
    if let Some(e) = &req.expected_current_box_id {
        u.expected_current = Some(box_ref("expected_current_box_id", e)?);
    }
    if u == WorkspaceUpdate::default() {
        return Err(Problem::field("body", "no field to change"));
    }
    let w = st
        .engine
        .update_workspace(&p, &name, u)
        .await
        .map_err(pen_problem)?;
    Ok(Json(pen_of(&headers, &w)))
}

#[derive(serde::Deserialize)]
struct DeletePenParams {
    #[serde(default)]
    expected_current_box_id: Option<String>,
}

async fn delete_pen(
    State(st): State<Hog>,
    Extension(p): P,
    Path(name): Path<String>,
    Query(q): Query<DeletePenParams>,
) -> HResult<StatusCode> {
    // A fence naming no box of this server's never matches: 409.
    let expected = match q.expected_current_box_id.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(v) => match v.parse::<uuid::Uuid>() {
            Ok(u) => Some(Some(u)),
            Err(_) => {
                let w = st.engine.get_workspace(&p, &name)?;
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    format!(
                        "pen {:?}'s current box is {}, not {v:?}",
                        w.name,
                        w.current.map_or("none".into(), |c| c.to_string())
                    ),
                ));
            }
        },
    };
    st.engine.delete_workspace(&p, &name, expected).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn hibernate_pen(
    State(st): State<Hog>,
    Extension(p): P,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> HResult<Json<Pen>> {
    let w = st.engine.hibernate_workspace(&p, &name).await?;
    Ok(Json(pen_of(&headers, &w)))
}

async fn wake_pen(
    State(st): State<Hog>,
    Extension(p): P,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> HResult<Json<Pen>> {
    let before = st.engine.get_workspace(&p, &name)?.current;
    let w = st.engine.wake_workspace(&p, &name).await?;
    st.register_key(&p, &w, before);
    Ok(Json(pen_of(&headers, &w)))
}

impl Hog {
    /// A pen's box made by a wake opens to the pen's SSH key, as a box
    /// created with one does.
    fn register_key(&self, p: &Principal, w: &Workspace, before: Option<uuid::Uuid>) {
        let (Some(id), Some(key)) = (w.current, w.spec.labels.get(SSH_KEY)) else {
            return;
        };
        if Some(id) == before || w.spec.labels.get(ACCESS).map(String::as_str) == Some("none") {
            return;
        }
        if let Err(e) = self
            .engine
            .add_ssh_key(p, Some(format!("hogbox-{id}")), key, Some(id))
        {
            tracing::warn!(pen = %w.name, "the pen's SSH key for box {id}: {e}");
        }
    }
}

async fn pen_web_root(st: State<Hog>, p: P, Path(name): Path<String>, req: Request) -> Response {
    pen_web_to(st, p, name, String::new(), req).await
}

async fn pen_web(
    st: State<Hog>,
    p: P,
    Path((name, rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    pen_web_to(st, p, name, rest, req).await
}

/// A request to a pen's `web_url`: its box's `web_port`, the pen woken
/// first when it sleeps and wakes on request.
async fn pen_web_to(
    State(st): State<Hog>,
    Extension(p): P,
    name: String,
    rest: String,
    req: Request,
) -> Response {
    let r = async {
        let w = st.engine.get_workspace(&p, &name)?;
        let port = w
            .spec
            .labels
            .get(WEB_PORT)
            .and_then(|v| v.parse::<u16>().ok())
            .ok_or_else(|| Problem::not_found(format_args!("a web_port of pen {name:?}")))?;
        let target = st.engine.workspace_target(&p, &name, port).await?;
        // Read again only when the request woke it into a new box.
        if w.current.is_none() {
            if let Ok(now) = st.engine.get_workspace(&p, &name) {
                st.register_key(&p, &now, None);
            }
        }
        Ok::<_, Problem>(target)
    }
    .await;
    match r {
        Ok(target) => forward(target, &rest, req).await,
        Err(e) => e.into_response(),
    }
}

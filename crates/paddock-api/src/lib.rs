//! The native API: REST under `/v1`, SSE and WebSocket streams, a port
//! proxy, and `/openapi.json`. An adapter over the engine, nothing more.

mod extract;
mod ingress;
mod problem;
pub mod proxy;
pub mod wire;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use paddock_core::model::{
    ExecControl, ExecEvent, ListQuery, Principal, ProgressFn, PullProgress, WriteOptions,
};
use paddock_core::{Engine, Error};
use paddock_http_kit::sse;
use paddock_wire as w;
use serde::Deserialize;
use uuid::Uuid;

use extract::{Json, Query};
use paddock_http_kit::{Accept, Guard};
pub use problem::{status_of, ApiResult, Problem};
use wire::{ToEngine, ToWire};

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// What a request without an API key is.
    pub keyless: Keyless,
}

/// Who a request without an API key is, by the listener it came on.
#[derive(Clone)]
pub enum Keyless {
    /// Nobody: every request needs a key (a listener beyond loopback, or
    /// `paddock serve --require-auth`).
    Refused,
    /// The local principal, once the guard has let the request in: TCP on
    /// loopback, which a web page in a browser on this host can reach.
    Guarded(Guard),
    /// The local principal: the unix socket, whose file's permissions are
    /// the authentication.
    Local,
}

/// What each route takes as a body, for the guard.
fn accept(method: &http::Method, path: &str) -> Accept {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["v1", "sandboxes", _, "proxy", ..] => Accept::Proxy,
        ["v1", "sandboxes", _, "files"] if method == http::Method::PUT => {
            Accept::Only(&["application/octet-stream"])
        }
        _ => Accept::Json,
    }
}

/// Guards requests without a key on loopback TCP (see `paddock_http_kit`);
/// a request with one is the key's, checked by `auth`.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Keyless::Guarded(g) = &st.keyless {
        if bearer(req.headers()).is_none() {
            if let Err(r) = g.check(&req, accept(req.method(), req.uri().path())) {
                return Problem::new(r.status, r.message)
                    .field(r.field)
                    .into_response();
            }
        }
    }
    next.run(req).await
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/sandboxes", post(create).get(list))
        .route("/sandboxes/{id}", get(inspect).delete(destroy))
        .route("/sandboxes/{id}/touch", post(touch))
        .route("/sandboxes/{id}/stop", post(stop))
        .route("/sandboxes/{id}/start", post(start))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/exec", post(exec))
        .route("/sandboxes/{id}/exec/stream", post(exec_sse))
        .route("/sandboxes/{id}/exec/ws", get(exec_ws))
        .route(
            "/sandboxes/{id}/files",
            get(download).put(upload).delete(remove_file),
        )
        .route("/sandboxes/{id}/files/list", get(list_dir))
        .route("/sandboxes/{id}/files/stat", get(stat))
        .route("/sandboxes/{id}/files/mkdir", post(mkdir))
        .route("/sandboxes/{id}/files/rename", post(rename))
        .route("/sandboxes/{id}/ports", get(ports))
        .route("/sandboxes/{id}/proxy/{port}", any(proxy::proxy_root))
        .route("/sandboxes/{id}/proxy/{port}/", any(proxy::proxy_root))
        .route("/sandboxes/{id}/proxy/{port}/{*rest}", any(proxy::proxy))
        .route(
            "/sandboxes/{id}/proxies",
            get(ingress::list_proxies).post(ingress::create_proxy),
        )
        .route(
            "/sandboxes/{id}/proxies/{name}",
            axum::routing::put(ingress::set_proxy_port).delete(ingress::delete_proxy),
        )
        .route(
            "/domains",
            get(ingress::list_domains).post(ingress::bind_domain),
        )
        .route(
            "/domains/{domain}",
            axum::routing::delete(ingress::unbind_domain),
        )
        .route("/ingress", get(ingress::ingress))
        .route("/sandboxes/{id}/metrics", get(metrics))
        .route("/sandboxes/{id}/platform", get(platform))
        .route("/sandboxes/{id}/logs", get(logs))
        .route("/sandboxes/{id}/events", get(sandbox_events))
        .route("/sandboxes/{id}/snapshots", post(snapshot))
        .route("/sandboxes/{id}/fork", post(fork))
        .route("/sandboxes/{id}/volumes", post(attach_volume))
        .route(
            "/sandboxes/{id}/volumes/{name}",
            axum::routing::delete(detach_volume),
        )
        .route("/workspaces", get(list_workspaces).post(create_workspace))
        .route(
            "/workspaces/{name}",
            get(inspect_workspace)
                .patch(update_workspace)
                .delete(delete_workspace),
        )
        .route("/workspaces/{name}/hibernate", post(hibernate_workspace))
        .route("/workspaces/{name}/wake", post(wake_workspace))
        .route(
            "/workspaces/{name}/proxy/{port}",
            any(proxy::workspace_proxy_root),
        )
        .route(
            "/workspaces/{name}/proxy/{port}/",
            any(proxy::workspace_proxy_root),
        )
        .route(
            "/workspaces/{name}/proxy/{port}/{*rest}",
            any(proxy::workspace_proxy),
        )
        .route("/networks", get(list_networks).post(create_network))
        .route(
            "/networks/{id}",
            get(inspect_network).delete(delete_network),
        )
        .route("/volumes", get(list_volumes).post(create_volume))
        .route("/volumes/{id}", get(inspect_volume).delete(delete_volume))
        .route("/snapshots", get(list_snapshots))
        .route(
            "/snapshots/{id}",
            get(inspect_snapshot).delete(delete_snapshot),
        )
        .route("/events", get(all_events))
        .route(
            "/images",
            get(list_images).post(pull_image).delete(remove_image),
        )
        .route("/images/inspect", get(inspect_image))
        .route("/templates", get(list_templates).post(create_template))
        .route("/policies", get(list_policies))
        .route(
            "/policies/{name}",
            axum::routing::put(put_policy).delete(delete_policy),
        )
        .route("/ssh-keys", get(list_ssh_keys).post(add_ssh_key))
        .route("/ssh-keys/{id}", axum::routing::delete(delete_ssh_key))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/rotate-key", post(rotate_token_key))
        .route("/tokens/{jti}", axum::routing::delete(revoke_token))
        .route("/audit", get(audit))
        .route("/usage", get(usage))
        .route("/pools", get(list_pools))
        .route("/backends", get(list_backends))
        .route(
            "/templates/{name}",
            get(inspect_template).delete(delete_template),
        )
        .route("/images/prune", post(prune_images))
        .route("/version", get(version))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .nest("/v1", v1)
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// The API key a request brings, if any: what `auth` checks, and what
/// spares a request the guard.
fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|s| s.trim().to_string())
}

async fn auth(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = bearer(req.headers());
    let principal =
        match token {
            Some(t) => match st.engine.authenticate(&t).await {
                Ok(p) => p.via("api"),
                Err(e) => return Problem::from(e).into_response(),
            },
            None if !matches!(st.keyless, Keyless::Refused) => Principal::local().via("api"),
            None => return Problem::new(
                StatusCode::UNAUTHORIZED,
                "an API key is required: send `Authorization: Bearer <key>` (paddock keys create)",
            )
            .into_response(),
        };
    req.extensions_mut().insert(principal);
    next.run(req).await
}

fn parse_id(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| Problem::from(Error::not_found(format!("sandbox {id}"))))
}

type P = Extension<Principal>;

// ---- sandboxes -----------------------------------------------------------

#[utoipa::path(post, path = "/v1/sandboxes", request_body = w::SandboxSpec,
    responses((status = 201, body = w::Sandbox, description = "created"),
               (status = 200, body = w::Sandbox, description = "an existing sandbox with this key"),
               (status = 400, body = w::Problem),
               (status = 403, body = w::Problem, description = "the operator's policies refuse it: `violations` names each rule broken"),
               (status = 404, body = w::Problem, description = "the snapshot or network it names is not one of yours")))]
async fn create(
    State(st): State<AppState>,
    Extension(p): P,
    Json(spec): Json<w::SandboxSpec>,
) -> ApiResult<Response> {
    let (sb, created) = st.engine.create(&p, spec.engine()).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, axum::Json(sb.wire())).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
struct ListParams {
    state: Option<String>,
    /// `k=v,k2=v2`: sandboxes carrying all these labels.
    labels: Option<String>,
    key: Option<String>,
    limit: Option<usize>,
    /// The `next` of the previous page.
    after: Option<Uuid>,
}

#[utoipa::path(get, path = "/v1/sandboxes", params(ListParams), responses((status = 200, body = w::SandboxList)))]
async fn list(
    State(st): State<AppState>,
    Extension(p): P,
    Query(q): Query<ListParams>,
) -> ApiResult<axum::Json<w::SandboxList>> {
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(paddock_core::model::State::parse(s).ok_or_else(|| {
            Problem::from(Error::invalid("state", format!("unknown state {s:?}")))
        })?),
    };
    let mut labels = BTreeMap::new();
    for kv in q
        .labels
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Problem::from(Error::invalid("labels", "use k=v,k2=v2")))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut items = st.engine.list(
        &p,
        &ListQuery {
            state,
            labels,
            key: q.key,
            include_destroyed: state == Some(paddock_core::model::State::Destroyed),
            limit,
            after: q.after,
        },
    )?;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|s| s.id)
    } else {
        None
    };
    Ok(axum::Json(w::SandboxList {
        sandboxes: items.wire(),
        next,
    }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}", responses((status = 200, body = w::Sandbox), (status = 404, body = w::Problem)))]
async fn inspect(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<w::Sandbox>> {
    Ok(axum::Json(st.engine.get(&p, parse_id(&id)?)?.wire()))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}", responses((status = 200, body = w::Sandbox), (status = 404, body = w::Problem)))]
async fn destroy(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<w::Sandbox>> {
    Ok(axum::Json(
        st.engine.destroy(&p, parse_id(&id)?).await?.wire(),
    ))
}

macro_rules! lifecycle {
    ($name:ident, $method:ident, $path:literal) => {
        #[utoipa::path(post, path = $path, responses((status = 200, body = w::Sandbox), (status = 404, body = w::Problem), (status = 409, body = w::Problem)))]
        async fn $name(State(st): State<AppState>, Extension(p): P, Path(id): Path<String>) -> ApiResult<axum::Json<w::Sandbox>> {
            Ok(axum::Json(st.engine.$method(&p, parse_id(&id)?).await?.wire()))
        }
    };
}
lifecycle!(touch, touch, "/v1/sandboxes/{id}/touch");
lifecycle!(stop, stop, "/v1/sandboxes/{id}/stop");
lifecycle!(start, start, "/v1/sandboxes/{id}/start");
lifecycle!(pause, pause, "/v1/sandboxes/{id}/pause");
lifecycle!(resume, resume, "/v1/sandboxes/{id}/resume");

// ---- snapshots and forks ---------------------------------------------------

/// Captures the sandbox's filesystem (a running one is frozen for the
/// copy): a snapshot new sandboxes start from (`"snapshot"` in a create).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/snapshots", request_body = w::SnapshotRequest,
    responses((status = 201, body = w::Snapshot), (status = 404, body = w::Problem),
              (status = 409, body = w::Problem), (status = 501, body = w::Problem)))]
async fn snapshot(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    extract::JsonOrEmpty(req): extract::JsonOrEmpty<w::SnapshotRequest>,
) -> ApiResult<Response> {
    let sn = st.engine.snapshot(&p, parse_id(&id)?, req.engine()).await?;
    Ok((StatusCode::CREATED, axum::Json(sn.wire())).into_response())
}

/// Copies a sandbox into `count` new running ones, each with its
/// filesystem at one instant and its configuration: all or none.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/fork", request_body = w::ForkRequest,
    responses((status = 201, body = w::ForkResult), (status = 400, body = w::Problem),
              (status = 403, body = w::Problem, description = "the operator's policies refuse it"),
              (status = 404, body = w::Problem), (status = 501, body = w::Problem)))]
async fn fork(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    extract::JsonOrEmpty(req): extract::JsonOrEmpty<w::ForkRequest>,
) -> ApiResult<Response> {
    let children = st
        .engine
        .fork(&p, parse_id(&id)?, req.count, req.memory)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(w::ForkResult {
            sandboxes: children.wire(),
        }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/snapshots", responses((status = 200, body = w::SnapshotList)))]
async fn list_snapshots(
    State(st): State<AppState>,
    Extension(p): P,
) -> ApiResult<axum::Json<w::SnapshotList>> {
    Ok(axum::Json(w::SnapshotList {
        snapshots: st.engine.snapshots(&p)?.wire(),
    }))
}

/// A snapshot by its id or its name.
#[utoipa::path(get, path = "/v1/snapshots/{id}", responses((status = 200, body = w::Snapshot), (status = 404, body = w::Problem)))]
async fn inspect_snapshot(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<w::Snapshot>> {
    Ok(axum::Json(st.engine.get_snapshot(&p, &id)?.wire()))
}

/// Deletes a snapshot (by id or name); sandboxes started from it keep
/// their files.
#[utoipa::path(delete, path = "/v1/snapshots/{id}", responses((status = 204), (status = 404, body = w::Problem)))]
async fn delete_snapshot(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.engine.delete_snapshot(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- workspaces --------------------------------------------------------------

fn workspace_wire(w: paddock_core::model::Workspace) -> w::Workspace {
    w::Workspace {
        id: w.id,
        owner: w.owner,
        name: w.name,
        spec: w.spec.wire(),
        source: w.source,
        sandbox: w.current,
        latest_snapshot: w.latest_snapshot,
        on_idle: w.on_idle.wire(),
        wake_on_request: w.wake_on_request,
        metadata: w.metadata,
        created_at: w.created_at,
        updated_at: w.updated_at,
    }
}

/// Makes a workspace: a name whose sandbox scales to zero. It has none
/// until it is woken.
#[utoipa::path(post, path = "/v1/workspaces", request_body = w::WorkspaceCreate,
    responses((status = 201, body = w::Workspace), (status = 400, body = w::Problem), (status = 409, body = w::Problem)))]
async fn create_workspace(
    State(st): State<AppState>,
    Extension(p): P,
    Json(req): Json<w::WorkspaceCreate>,
) -> ApiResult<Response> {
    let ws = st
        .engine
        .create_workspace(
            &p,
            paddock_core::model::WorkspaceRequest {
                name: req.name,
                spec: req.spec.engine(),
                source: req.source,
                on_idle: req.on_idle.engine(),
                wake_on_request: req.wake_on_request,
                metadata: req.metadata,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(workspace_wire(ws))).into_response())
}

#[utoipa::path(get, path = "/v1/workspaces", responses((status = 200, body = w::WorkspaceList)))]
async fn list_workspaces(
    State(st): State<AppState>,
    Extension(p): P,
) -> ApiResult<axum::Json<w::WorkspaceList>> {
    Ok(axum::Json(w::WorkspaceList {
        workspaces: st
            .engine
            .workspaces(&p)?
            .into_iter()
            .map(workspace_wire)
            .collect(),
    }))
}

#[utoipa::path(get, path = "/v1/workspaces/{name}", responses((status = 200, body = w::Workspace), (status = 404, body = w::Problem)))]
async fn inspect_workspace(
    State(st): State<AppState>,
    Extension(p): P,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<w::Workspace>> {
    Ok(axum::Json(workspace_wire(
        st.engine.get_workspace(&p, &name)?,
    )))
}

/// `""` (none) or a sandbox id.
fn expected_sandbox(v: &str, field: &str) -> ApiResult<Option<uuid::Uuid>> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        Problem::from(paddock_core::Error::invalid(
            field,
            "a sandbox id, or \"\" for none",
        ))
    })
}

/// Changes a workspace; with `expected_sandbox`, only while that is its
/// sandbox (409 otherwise).
#[utoipa::path(patch, path = "/v1/workspaces/{name}", request_body = w::WorkspaceUpdate,
    responses((status = 200, body = w::Workspace), (status = 400, body = w::Problem),
              (status = 404, body = w::Problem), (status = 409, body = w::Problem)))]
async fn update_workspace(
    State(st): State<AppState>,
    Extension(p): P,
    Path(name): Path<String>,
    Json(req): Json<w::WorkspaceUpdate>,
) -> ApiResult<axum::Json<w::Workspace>> {
    let u = paddock_core::model::WorkspaceUpdate {
        spec: req.spec.map(|s| s.engine()),
        source: req.source.map(|s| (!s.is_empty()).then_some(s)),
        on_idle: req.on_idle.map(|a| a.engine()),
        wake_on_request: req.wake_on_request,
        metadata: req.metadata,
        expected_current: req
            .expected_sandbox
            .as_deref()
            .map(|v| expected_sandbox(v, "expected_sandbox"))
            .transpose()?,
        ..Default::default()
    };
    Ok(axum::Json(workspace_wire(
        st.engine.update_workspace(&p, &name, u).await?,
    )))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
struct DeleteWorkspaceParams {
    /// Only while this is its sandbox (`""`: none); 409 otherwise.
    #[serde(default)]
    expected_sandbox: Option<String>,
}

/// Deletes a workspace and its sandbox; its snapshots stay yours.
#[utoipa::path(delete, path = "/v1/workspaces/{name}", params(DeleteWorkspaceParams),
    responses((status = 204), (status = 404, body = w::Problem), (status = 409, body = w::Problem)))]
async fn delete_workspace(
    State(st): State<AppState>,
    Extension(p): P,
    Path(name): Path<String>,
    Query(q): Query<DeleteWorkspaceParams>,
) -> ApiResult<StatusCode> {
    let expected = q
        .expected_sandbox
        .as_deref()
        .map(|v| expected_sandbox(v, "expected_sandbox"))
        .transpose()?;
    st.engine.delete_workspace(&p, &name, expected).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Snapshots the workspace's sandbox, then destroys it (nothing to do
/// when it sleeps).
#[utoipa::path(post, path = "/v1/workspaces/{name}/hibernate", responses((status = 200, body = w::Workspace), (status = 404, body = w::Problem)))]
async fn hibernate_workspace(
    State(st): State<AppState>,
    Extension(p): P,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<w::Workspace>> {
    Ok(axum::Json(workspace_wire(
        st.engine.hibernate_workspace(&p, &name).await?,
    )))
}

/// Gives the workspace a running sandbox: from its latest snapshot when it
/// sleeps.
#[utoipa::path(post, path = "/v1/workspaces/{name}/wake", responses((status = 200, body = w::Workspace), (status = 404, body = w::Problem)))]
async fn wake_workspace(
    State(st): State<AppState>,
    Extension(p): P,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<w::Workspace>> {
    Ok(axum::Json(workspace_wire(
        st.engine.wake_workspace(&p, &name).await?,
    )))
}

// ---- networks ----------------------------------------------------------------

/// Makes a private network (a bridge and subnet of its own): sandboxes
/// created with `"network"` naming it reach each other by address and by
/// name, and no other sandbox.
#[utoipa::path(post, path = "/v1/networks", request_body = w::NetworkCreate,
    responses((status = 201, body = w::Network), (status = 400, body = w::Problem), (status = 409, body = w::Problem), (status = 429, body = w::Problem)))]
async fn create_network(
    State(st): State<AppState>,
    Extension(p): P,
    Json(req): Json<w::NetworkCreate>,
) -> ApiResult<Response> {
    let n = st.engine.create_network(&p, req.name.as_deref()).await?;
    Ok((StatusCode::CREATED, axum::Json(n.wire())).into_response())
}

/// Your networks, oldest first (your default network once made).
#[utoipa::path(get, path = "/v1/networks", responses((status = 200, body = w::NetworkList)))]
async fn list_networks(
    State(st): State<AppState>,
    Extension(p): P,
) -> ApiResult<axum::Json<w::NetworkList>> {
    Ok(axum::Json(w::NetworkList {
        networks: st.engine.networks(&p)?.wire(),
    }))
}

/// A network by its id or name (`default`: your default network).
#[utoipa::path(get, path = "/v1/networks/{id}", responses((status = 200, body = w::Network), (status = 404, body = w::Problem)))]
async fn inspect_network(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<w::Network>> {
    Ok(axum::Json(st.engine.get_network(&p, &id)?.wire()))
}

/// Deletes a network; 409 while a sandbox is on it.
#[utoipa::path(delete, path = "/v1/networks/{id}", responses((status = 204), (status = 404, body = w::Problem), (status = 409, body = w::Problem)))]
async fn delete_network(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.engine.delete_network(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- volumes -----------------------------------------------------------------

fn volume_wire(st: paddock_core::model::VolumeStatus) -> w::Volume {
    let v = st.volume;
    w::Volume {
        id: v.id,
        owner: v.owner,
        name: v.name,
        size_mb: v.size_mb,
        labels: v.labels,
        created_at: v.created_at,
        attached: st.holders.wire(),
        used_bytes: st.usage.map(|u| u.0),
        total_bytes: st.usage.map(|u| u.1),
    }
}

/// Makes a named, sized volume (an ext4 filesystem of its own) that
/// outlives sandboxes.
#[utoipa::path(post, path = "/v1/volumes", request_body = w::VolumeCreate,
    responses((status = 201, body = w::Volume), (status = 400, body = w::Problem), (status = 409, body = w::Problem)))]
async fn create_volume(
    State(st): State<AppState>,
    Extension(p): P,
    Json(req): Json<w::VolumeCreate>,
) -> ApiResult<Response> {
    let v = st
        .engine
        .create_volume(&p, &req.name, req.size_mb, req.labels)
        .await?;
    let st = paddock_core::model::VolumeStatus {
        volume: v,
        holders: Vec::new(),
        usage: None,
    };
    Ok((StatusCode::CREATED, axum::Json(volume_wire(st))).into_response())
}

#[utoipa::path(get, path = "/v1/volumes", responses((status = 200, body = w::VolumeList)))]
async fn list_volumes(
    State(st): State<AppState>,
    Extension(p): P,
) -> ApiResult<axum::Json<w::VolumeList>> {
    let mut out = Vec::new();
    for v in st.engine.volumes(&p)? {
        out.push(volume_wire(st.engine.get_volume(&p, &v.id.to_string())?));
    }
    Ok(axum::Json(w::VolumeList { volumes: out }))
}

/// A volume by its id or name, with who mounts it and its use.
#[utoipa::path(get, path = "/v1/volumes/{id}", responses((status = 200, body = w::Volume), (status = 404, body = w::Problem)))]
async fn inspect_volume(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<w::Volume>> {
    Ok(axum::Json(volume_wire(st.engine.get_volume(&p, &id)?)))
}

/// Deletes a volume and its data; 409 while a sandbox mounts it.
#[utoipa::path(delete, path = "/v1/volumes/{id}", responses((status = 204), (status = 404, body = w::Problem), (status = 409, body = w::Problem)))]
async fn delete_volume(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.engine.delete_volume(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mounts a volume in a sandbox (running: at once; stopped: at its next
/// start). Read-write by one sandbox at a time: 409 names the holder.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/volumes", request_body = w::VolumeRequest,
    responses((status = 200, body = w::Sandbox), (status = 400, body = w::Problem),
              (status = 404, body = w::Problem), (status = 409, body = w::Problem)))]
async fn attach_volume(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Json(req): Json<w::VolumeRequest>,
) -> ApiResult<axum::Json<w::Sandbox>> {
    Ok(axum::Json(
        st.engine
            .attach_volume(&p, parse_id(&id)?, req.engine())
            .await?
            .wire(),
    ))
}

/// Unmounts a volume (by name or id) from a sandbox.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/volumes/{name}",
    responses((status = 200, body = w::Sandbox), (status = 404, body = w::Problem)))]
async fn detach_volume(
    State(st): State<AppState>,
    Extension(p): P,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<axum::Json<w::Sandbox>> {
    Ok(axum::Json(
        st.engine
            .detach_volume(&p, parse_id(&id)?, &name)
            .await?
            .wire(),
    ))
}

// ---- exec ------------------------------------------------------------------

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", request_body = w::ExecRequest,
    responses((status = 200, body = w::ExecResult), (status = 400, body = w::Problem), (status = 409, body = w::Problem)))]
async fn exec(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Json(req): Json<w::ExecRequest>,
) -> ApiResult<axum::Json<w::ExecResult>> {
    Ok(axum::Json(
        st.engine
            .exec(&p, parse_id(&id)?, &req.engine())
            .await?
            .wire(),
    ))
}

/// Decodes a command's output for SSE, whose `data` is text: a UTF-8
/// character cut between two chunks is joined again.
#[derive(Default)]
struct SseText {
    stdout: paddock_core::text::Utf8Chunks,
    stderr: paddock_core::text::Utf8Chunks,
}

impl SseText {
    fn events(&mut self, ev: Result<ExecEvent, Error>) -> Vec<SseEvent> {
        // Output as text; none while a chunk held only part of a character.
        let text = |kind: &str, s: String| {
            (!s.is_empty()).then(|| {
                SseEvent::default()
                    .event(kind)
                    .json_data(w::OutputChunk { data: s })
            })
        };
        let evs: Vec<_> = match ev {
            Ok(ExecEvent::Started { pid }) => vec![SseEvent::default()
                .event("started")
                .json_data(w::Started { pid })],
            Ok(ExecEvent::Stdout(b)) => text("stdout", self.stdout.push(&b)).into_iter().collect(),
            Ok(ExecEvent::Stderr(b)) => text("stderr", self.stderr.push(&b)).into_iter().collect(),
            Ok(ExecEvent::Exit(r)) => {
                // What is left is no complete character: as U+FFFD.
                let mut v: Vec<_> = [("stdout", &mut self.stdout), ("stderr", &mut self.stderr)]
                    .into_iter()
                    .filter_map(|(kind, d)| text(kind, d.finish()))
                    .collect();
                v.push(SseEvent::default().event("exit").json_data(r.wire()));
                v
            }
            Err(e) => vec![SseEvent::default()
                .event("error")
                .json_data(Problem::from(e))],
        };
        evs.into_iter()
            .map(|e| {
                e.unwrap_or_else(|_| SseEvent::default().event("error").data("unencodable event"))
            })
            .collect()
    }
}

/// Streams a command's output as server-sent events: `started`, `stdout`,
/// `stderr` (`{"data": "..."}`) and one `exit` (an ExecResult).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/stream", request_body = w::ExecRequest,
    responses((status = 200, description = "text/event-stream"), (status = 409, body = w::Problem)))]
async fn exec_sse(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Json(req): Json<w::ExecRequest>,
) -> ApiResult<Response> {
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let s = st
        .engine
        .exec_stream(&p, parse_id(&id)?, &req.engine(), rx)
        .await?;
    // Keep the control sender alive as long as the stream.
    let mut text = SseText::default();
    let s = s.flat_map(move |ev| {
        let _keep = &_tx;
        futures::stream::iter(text.events(ev).into_iter().map(Ok::<_, Infallible>))
    });
    Ok(sse::response(s, Some(sse::KEEP_ALIVE)))
}

/// Interactive exec over WebSocket. The client's first message is a JSON
/// ExecRequest (text). Then: binary frames are stdin; text frames are JSON
/// `{"type":"resize","rows":R,"cols":C}`, `{"type":"signal","signal":N}` or
/// `{"type":"eof"}`. The server sends binary frames whose first byte is 1
/// (stdout) or 2 (stderr), and text frames `{"type":"started","pid":N}`,
/// `{"type":"exit",...ExecResult}` or `{"type":"error",...Problem}`.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/exec/ws", responses((status = 101, description = "WebSocket")))]
async fn exec_ws(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    st.engine.get(&p, id)?;
    Ok(ws.on_upgrade(move |socket| ws_session(st, p, id, socket)))
}

async fn ws_session(st: AppState, p: Principal, id: Uuid, mut socket: WebSocket) {
    let send_err = |e: Problem| {
        let mut v = serde_json::to_value(&e).unwrap_or_default();
        v["type"] = "error".into();
        Message::Text(v.to_string().into())
    };
    let req = match socket.recv().await {
        Some(Ok(Message::Text(t))) => match serde_json::from_str::<w::ExecRequest>(&t) {
            Ok(r) => r.engine(),
            Err(e) => {
                let _ = socket
                    .send(send_err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        e.to_string(),
                    )))
                    .await;
                return;
            }
        },
        _ => return,
    };
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(64);
    let mut out = match st.engine.exec_stream(&p, id, &req, ctl_rx).await {
        Ok(s) => Box::pin(s),
        Err(e) => {
            let _ = socket.send(send_err(e.into())).await;
            return;
        }
    };
    let (mut sink, mut stream) = socket.split();
    use futures::SinkExt;
    let mut reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let ctl = match msg {
                Message::Binary(b) => ExecControl::Stdin(b),
                Message::Text(t) => match serde_json::from_str::<w::WsControl>(&t) {
                    Ok(w::WsControl::Resize { rows, cols }) => {
                        ExecControl::Resize(paddock_core::model::PtySize { rows, cols })
                    }
                    Ok(w::WsControl::Signal { signal }) => ExecControl::Signal(signal),
                    Ok(w::WsControl::Eof) => ExecControl::CloseStdin,
                    Ok(w::WsControl::Stdin { data }) => ExecControl::Stdin(Bytes::from(data)),
                    Err(_) => continue,
                },
                Message::Close(_) => break,
                _ => continue,
            };
            // Once the command is gone, keep reading (and dropping) until the
            // client closes, so that closing never resets the connection.
            let _ = ctl_tx.send(ctl).await;
        }
    });
    while let Some(ev) = out.next().await {
        let msg = match ev {
            Ok(ExecEvent::Started { pid }) => Message::Text(
                serde_json::json!({"type": "started", "pid": pid})
                    .to_string()
                    .into(),
            ),
            Ok(ExecEvent::Stdout(b)) => Message::Binary([&[1u8][..], &b].concat().into()),
            Ok(ExecEvent::Stderr(b)) => Message::Binary([&[2u8][..], &b].concat().into()),
            Ok(ExecEvent::Exit(r)) => {
                let mut v = serde_json::to_value(r.wire()).unwrap_or_default();
                v["type"] = "exit".into();
                Message::Text(v.to_string().into())
            }
            Err(e) => send_err(e.into()),
        };
        if sink.send(msg).await.is_err() {
            break;
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    // The closing handshake: wait for the client's close (briefly), so that
    // the exit frame is not lost to a reset connection.
    if tokio::time::timeout(Duration::from_secs(5), &mut reader)
        .await
        .is_err()
    {
        tracing::debug!("websocket client did not close");
        reader.abort();
    }
}

// ---- files -------------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
struct PathParams {
    path: String,
    #[serde(default)]
    recursive: bool,
}

#[derive(Deserialize, utoipa::IntoParams)]
struct UploadParams {
    path: String,
    /// Octal, such as `755`.
    mode: Option<String>,
    /// Create missing parent directories (default true).
    parents: Option<bool>,
    /// Write a temporary file and rename it into place (default true).
    atomic: Option<bool>,
    #[serde(default)]
    append: bool,
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", params(PathParams),
    responses((status = 200, description = "the file's bytes (symlinks followed inside the sandbox)"),
        (status = 400, description = "not a regular file (a directory, FIFO, socket or device)", body = w::Problem),
        (status = 404, body = w::Problem)))]
async fn download(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Query(q): Query<PathParams>,
) -> ApiResult<Response> {
    let (size, s) = st.engine.read_file(&p, parse_id(&id)?, &q.path).await?;
    let body = Body::from_stream(s.map(|r| r.map_err(std::io::Error::other)));
    let mut r = Response::builder().header(header::CONTENT_TYPE, "application/octet-stream");
    // Without a size (a file of /proc), the body is chunked to its end.
    if let Some(n) = size {
        r = r.header(header::CONTENT_LENGTH, n);
    }
    Ok(r.body(body).unwrap_or_default())
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", params(UploadParams),
    responses((status = 201, body = w::FileInfo), (status = 400, body = w::Problem)))]
async fn upload(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Query(q): Query<UploadParams>,
    body: Body,
) -> ApiResult<Response> {
    let mode = match &q.mode {
        Some(m) => Some(
            u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .map_err(|_| Problem::from(Error::invalid("mode", "must be octal, such as 644")))?,
        ),
        None => None,
    };
    let upload = paddock_http_kit::upload::Upload::new(body);
    let opts = WriteOptions {
        mode,
        mkdir_parents: q.parents.unwrap_or(true),
        atomic: q.atomic.unwrap_or(true) && !q.append,
        append: q.append,
        size: upload.size,
    };
    let res = st
        .engine
        .write_file(&p, parse_id(&id)?, &q.path, &opts, upload.stream("body"))
        .await;
    if res.is_err() {
        upload.drain().await;
    }
    Ok((StatusCode::CREATED, axum::Json(res?.wire())).into_response())
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", params(PathParams), responses((status = 204), (status = 404, body = w::Problem)))]
async fn remove_file(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Query(q): Query<PathParams>,
) -> ApiResult<StatusCode> {
    st.engine
        .remove(&p, parse_id(&id)?, &q.path, q.recursive)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", params(PathParams), responses((status = 200, body = w::DirListing)))]
async fn list_dir(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Query(q): Query<PathParams>,
) -> ApiResult<axum::Json<w::DirListing>> {
    let entries = st
        .engine
        .list_dir(&p, parse_id(&id)?, &q.path)
        .await?
        .wire();
    Ok(axum::Json(w::DirListing {
        path: q.path,
        entries,
    }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", params(PathParams), responses((status = 200, body = w::FileInfo)))]
async fn stat(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Query(q): Query<PathParams>,
) -> ApiResult<axum::Json<w::FileInfo>> {
    Ok(axum::Json(
        st.engine.stat(&p, parse_id(&id)?, &q.path).await?.wire(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct MkdirParams {
    path: String,
    parents: Option<bool>,
    mode: Option<String>,
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", params(MkdirParams), responses((status = 201)))]
async fn mkdir(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Query(q): Query<MkdirParams>,
) -> ApiResult<StatusCode> {
    let mode = match &q.mode {
        Some(m) => Some(
            u32::from_str_radix(m, 8)
                .map_err(|_| Problem::from(Error::invalid("mode", "must be octal, such as 755")))?,
        ),
        None => None,
    };
    st.engine
        .mkdir(&p, parse_id(&id)?, &q.path, q.parents.unwrap_or(true), mode)
        .await?;
    Ok(StatusCode::CREATED)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/rename", request_body = w::RenameBody, responses((status = 204)))]
async fn rename(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Json(b): Json<w::RenameBody>,
) -> ApiResult<StatusCode> {
    st.engine.rename(&p, parse_id(&id)?, &b.from, &b.to).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- ports, metrics, logs ------------------------------------------------------

#[utoipa::path(get, path = "/v1/sandboxes/{id}/ports", responses((status = 200, body = w::PortList)))]
async fn ports(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<w::PortList>> {
    Ok(axum::Json(w::PortList {
        ports: st.engine.ports(&p, parse_id(&id)?).await?.wire(),
    }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/metrics", responses((status = 200, body = w::Metrics)))]
async fn metrics(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<w::Metrics>> {
    Ok(axum::Json(
        st.engine.metrics(&p, parse_id(&id)?).await?.wire(),
    ))
}

/// uname(2) as the sandbox sees it.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/platform", responses((status = 200, body = w::Platform)))]
async fn platform(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<w::Platform>> {
    Ok(axum::Json(
        st.engine.platform(&p, parse_id(&id)?).await?.wire(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct LogParams {
    #[serde(default)]
    offset: u64,
    /// Keep the response open and send what is appended.
    #[serde(default)]
    follow: bool,
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/logs", params(LogParams), responses((status = 200, description = "text/plain")))]
async fn logs(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Query(q): Query<LogParams>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let first = st.engine.logs(&p, id, q.offset).await?;
    if !q.follow {
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], first).into_response());
    }
    let engine = st.engine.clone();
    let offset = q.offset + first.len() as u64;
    let rest = futures::stream::unfold((engine, p, offset), move |(engine, p, off)| async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            match engine.logs(&p, id, off).await {
                Ok(b) if b.is_empty() => continue,
                Ok(b) => {
                    let n = b.len() as u64;
                    return Some((Ok::<_, Infallible>(Bytes::from(b)), (engine, p, off + n)));
                }
                Err(_) => return None,
            }
        }
    });
    let body = futures::stream::iter([Ok(Bytes::from(first))]).chain(rest);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response())
}

// ---- events -----------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
struct EventParams {
    /// Resume after this event id (as `Last-Event-ID` does).
    after: Option<i64>,
}

fn resume_from(headers: &HeaderMap, q: &EventParams) -> i64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(q.after)
        .unwrap_or(0)
}

fn event_sse(
    s: impl Stream<Item = paddock_core::model::Event> + Send + 'static,
    per_sandbox: bool,
) -> Response {
    let s = s.map(move |e| {
        let id = if per_sandbox { e.id } else { e.seq };
        let e = e.wire();
        Ok::<_, Infallible>(
            SseEvent::default()
                .id(id.to_string())
                .event(e.kind.clone())
                .json_data(&e)
                .unwrap_or_default(),
        )
    });
    sse::response(s, Some(sse::KEEP_ALIVE))
}

/// A sandbox's lifecycle and activity events; ids are per sandbox.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/events", params(EventParams), responses((status = 200, description = "text/event-stream of Event")))]
async fn sandbox_events(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<EventParams>,
) -> ApiResult<Response> {
    let s = st
        .engine
        .events(&p, Some(parse_id(&id)?), resume_from(&headers, &q))?;
    Ok(event_sse(s, true))
}

/// Every event of the caller's sandboxes; ids are the daemon-wide sequence.
#[utoipa::path(get, path = "/v1/events", params(EventParams), responses((status = 200, description = "text/event-stream of Event")))]
async fn all_events(
    State(st): State<AppState>,
    Extension(p): P,
    headers: HeaderMap,
    Query(q): Query<EventParams>,
) -> ApiResult<Response> {
    let s = st.engine.events(&p, None, resume_from(&headers, &q))?;
    Ok(event_sse(s, false))
}

/// The images the caller pulled (the operator: every cached image).
#[utoipa::path(get, path = "/v1/images", responses((status = 200, body = w::ImageList)))]
async fn list_images(
    State(st): State<AppState>,
    Extension(p): P,
) -> ApiResult<axum::Json<w::ImageList>> {
    Ok(axum::Json(w::ImageList {
        images: st.engine.list_images(&p)?.wire(),
    }))
}

/// Pulls an image (again); layers already cached are not downloaded.
///
/// With `Accept: text/event-stream` the answer is a stream instead:
/// `progress` events (a PullProgress each, downloads at most every 100 ms),
/// then one `pulled` event with the ImageInfo, or one `error` event with a
/// Problem.
#[utoipa::path(post, path = "/v1/images", request_body = w::PullBody,
    responses((status = 200, body = w::ImageInfo, description = "the image; or, with Accept: text/event-stream, `progress` events (PullProgress) then `pulled` (ImageInfo) or `error` (Problem)"),
        (status = 403, description = "the pull policy, or the registry, refuses it (the daemon's registry credentials are the operator's)", body = w::Problem),
        (status = 404, body = w::Problem), (status = 503, body = w::Problem)))]
async fn pull_image(
    State(st): State<AppState>,
    Extension(p): P,
    headers: HeaderMap,
    Json(b): Json<w::PullBody>,
) -> ApiResult<Response> {
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !streaming {
        let info = st.engine.pull_image(&p, &b.reference, None).await?;
        return Ok(axum::Json(info.wire()).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<SseEvent>();
    let progress_tx = tx.clone();
    let progress: ProgressFn = Arc::new(move |pp: PullProgress| {
        let ev = SseEvent::default()
            .event("progress")
            .json_data(pp.wire())
            .unwrap_or_default();
        let _ = progress_tx.send(ev);
    });
    tokio::spawn(async move {
        let ev = match st.engine.pull_image(&p, &b.reference, Some(progress)).await {
            Ok(info) => SseEvent::default().event("pulled").json_data(info.wire()),
            Err(e) => SseEvent::default()
                .event("error")
                .json_data(Problem::from(e)),
        };
        let _ = tx.send(ev.unwrap_or_default());
    });
    let s = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(sse::response(s, Some(sse::KEEP_ALIVE)))
}

/// Stores a template: `name` plus any fields of a sandbox spec (image, cpu,
/// memory_mb, env, ttl_secs, ports, labels...) but `key` and `template`.
/// Its image is pulled now.
#[utoipa::path(post, path = "/v1/templates", request_body = w::SandboxSpec,
    responses((status = 201, body = w::Template), (status = 400, body = w::Problem), (status = 409, body = w::Problem)))]
async fn create_template(
    State(st): State<AppState>,
    Extension(p): P,
    Json(body): Json<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<(StatusCode, axum::Json<w::Template>)> {
    let mut body = body;
    let name = match body.remove("name") {
        Some(serde_json::Value::String(n)) => n,
        Some(_) => return Err(Error::invalid("name", "must be a string").into()),
        None => return Err(Error::invalid("name", "missing field `name`").into()),
    };
    let warm_pool = match body.remove("warm_pool") {
        None | Some(serde_json::Value::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(n) => n.min(usize::MAX as u64) as usize,
            None => {
                return Err(Error::invalid("warm_pool", "must be a non-negative integer").into())
            }
        },
    };
    let defaults: w::SandboxSpec =
        match serde_json::from_value(serde_json::Value::Object(body.clone())) {
            Ok(d) => d,
            Err(e) => {
                let msg = e.to_string();
                // serde_json names no path here: find the field that fails alone.
                let field = extract::detail_field(&msg).or_else(|| {
                    body.iter().find_map(|(k, v)| {
                        let one = serde_json::json!({ k.as_str(): v });
                        serde_json::from_value::<w::SandboxSpec>(one)
                            .is_err()
                            .then(|| k.clone())
                    })
                });
                return Err(Error::invalid(field.unwrap_or_else(|| "defaults".into()), msg).into());
            }
        };
    let t = st
        .engine
        .create_template(&p, &name, defaults.engine(), warm_pool)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(t.wire())))
}

/// The warm pools (`paddock serve --warm-pool`, and your templates'
/// `warm_pool`): how many sandboxes each keeps ready, and how many it has.
#[utoipa::path(get, path = "/v1/pools", responses((status = 200, body = w::PoolList)))]
async fn list_pools(State(st): State<AppState>, Extension(p): P) -> axum::Json<w::PoolList> {
    axum::Json(w::PoolList {
        pools: st.engine.pools(&p).wire(),
    })
}

/// The backends this daemon runs sandboxes on (`crun`, `runc`, ...), each
/// with its isolation, whether creates of that isolation get it, and what
/// it can do (pause, snapshots, fork, whether it shares the host kernel).
#[utoipa::path(get, path = "/v1/backends", responses((status = 200, body = w::BackendList)))]
async fn list_backends(State(st): State<AppState>) -> axum::Json<w::BackendList> {
    axum::Json(w::BackendList {
        backends: st.engine.backends().wire(),
    })
}

#[utoipa::path(get, path = "/v1/templates", responses((status = 200, body = w::TemplateList)))]
async fn list_templates(
    State(st): State<AppState>,
    Extension(p): P,
) -> ApiResult<axum::Json<w::TemplateList>> {
    Ok(axum::Json(w::TemplateList {
        templates: st.engine.list_templates(&p)?.wire(),
    }))
}

#[utoipa::path(get, path = "/v1/templates/{name}", responses((status = 200, body = w::Template), (status = 404, body = w::Problem)))]
async fn inspect_template(
    State(st): State<AppState>,
    Extension(p): P,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<w::Template>> {
    Ok(axum::Json(st.engine.get_template(&p, &name)?.wire()))
}

// ---- governance --------------------------------------------------------

#[utoipa::path(get, path = "/v1/policies", responses((status = 200, body = w::PolicyList)))]
async fn list_policies(
    State(st): State<AppState>,
    Extension(p): P,
) -> ApiResult<axum::Json<w::PolicyList>> {
    Ok(axum::Json(w::PolicyList {
        policies: st
            .engine
            .policies(&p)?
            .into_iter()
            .map(|(x, src)| wire::policy(x, Some(src)))
            .collect(),
    }))
}

/// Writes a policy (the operator's call; the settings file's are 409).
#[utoipa::path(put, path = "/v1/policies/{name}", request_body = w::Policy,
    responses((status = 200, body = w::Policy), (status = 400, body = w::Problem),
               (status = 403, body = w::Problem), (status = 409, body = w::Problem)))]
async fn put_policy(
    State(st): State<AppState>,
    Extension(p): P,
    Path(name): Path<String>,
    Json(mut body): Json<w::Policy>,
) -> ApiResult<axum::Json<w::Policy>> {
    if !body.name.is_empty() && body.name != name {
        return Err(Problem::from(Error::invalid(
            "name",
            format!("the body names {:?}, the path {name:?}", body.name),
        )));
    }
    body.name = name;
    let x = st.engine.put_policy(&p, wire::policy_engine(body))?;
    Ok(axum::Json(wire::policy(
        x,
        Some(paddock_core::policy::PolicySource::Api),
    )))
}

#[utoipa::path(delete, path = "/v1/policies/{name}", responses((status = 204), (status = 403, body = w::Problem), (status = 404, body = w::Problem)))]
async fn delete_policy(
    State(st): State<AppState>,
    Extension(p): P,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    st.engine.delete_policy(&p, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- SSH keys --------------------------------------------------------------

fn ssh_key_wire(k: paddock_core::model::SshKey) -> w::SshKey {
    w::SshKey {
        id: k.id,
        name: k.name,
        public_key: k.public_key,
        fingerprint: k.fingerprint,
        sandbox: k.sandbox,
        created_at: k.created_at,
    }
}

/// The caller's SSH public keys (those of destroyed sandboxes went with
/// them).
#[utoipa::path(get, path = "/v1/ssh-keys", responses((status = 200, body = w::SshKeyList)))]
async fn list_ssh_keys(
    State(st): State<AppState>,
    Extension(p): P,
) -> ApiResult<axum::Json<w::SshKeyList>> {
    Ok(axum::Json(w::SshKeyList {
        ssh_keys: st
            .engine
            .ssh_keys(&p)?
            .into_iter()
            .map(ssh_key_wire)
            .collect(),
    }))
}

/// Registers an SSH public key: it opens the SSH gateway to every sandbox
/// of the caller, or to `sandbox` alone. A malformed key is 400 naming
/// `public_key`; the same key twice for the same scope, or a name taken,
/// 409.
#[utoipa::path(post, path = "/v1/ssh-keys", request_body = w::SshKeyCreate,
    responses((status = 201, body = w::SshKey), (status = 400, body = w::Problem), (status = 409, body = w::Problem)))]
async fn add_ssh_key(
    State(st): State<AppState>,
    Extension(p): P,
    Json(req): Json<w::SshKeyCreate>,
) -> ApiResult<Response> {
    let k = st
        .engine
        .add_ssh_key(&p, req.name, &req.public_key, req.sandbox)?;
    Ok((StatusCode::CREATED, axum::Json(ssh_key_wire(k))).into_response())
}

/// Removes one of the caller's SSH keys, by id or name.
#[utoipa::path(delete, path = "/v1/ssh-keys/{id}", responses((status = 204), (status = 404, body = w::Problem)))]
async fn delete_ssh_key(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.engine.delete_ssh_key(&p, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- tokens ------------------------------------------------------------------

fn token_wire(t: paddock_core::model::TokenInfo) -> w::TokenInfo {
    w::TokenInfo {
        jti: t.jti,
        created_at: t.created_at,
        expires_at: t.expires_at,
        scope: w::TokenScope {
            read_only: t.scope.read_only,
            sandboxes: t.scope.sandboxes,
        },
    }
}

/// The caller's standing tokens (never the tokens themselves).
#[utoipa::path(get, path = "/v1/tokens", responses((status = 200, body = w::TokenList)))]
async fn list_tokens(
    State(st): State<AppState>,
    Extension(p): P,
) -> ApiResult<axum::Json<w::TokenList>> {
    Ok(axum::Json(w::TokenList {
        tokens: st.engine.tokens(&p)?.into_iter().map(token_wire).collect(),
    }))
}

/// Makes a bearer token (a JWT the daemon signs) for the caller, living
/// `ttl_secs` (a day by default, 30 days at most), narrowed to read-only
/// and/or to some of the caller's sandboxes. Shown once; revoked by its
/// `jti`. A token made with a token is at most as wide as it.
#[utoipa::path(post, path = "/v1/tokens", request_body = w::TokenCreate,
    responses((status = 201, body = w::TokenCreated), (status = 400, body = w::Problem), (status = 403, body = w::Problem), (status = 404, body = w::Problem)))]
async fn create_token(
    State(st): State<AppState>,
    Extension(p): P,
    Json(req): Json<w::TokenCreate>,
) -> ApiResult<Response> {
    let t = st.engine.create_token(
        &p,
        req.ttl_secs,
        paddock_core::tokens::TokenScope {
            read_only: req.read_only,
            sandboxes: req.sandboxes,
        },
    )?;
    Ok((
        StatusCode::CREATED,
        axum::Json(w::TokenCreated {
            token: t.token,
            info: token_wire(t.info),
        }),
    )
        .into_response())
}

/// Revokes one of the caller's tokens: refused from then on.
#[utoipa::path(delete, path = "/v1/tokens/{jti}", responses((status = 204), (status = 404, body = w::Problem)))]
async fn revoke_token(
    State(st): State<AppState>,
    Extension(p): P,
    Path(jti): Path<String>,
) -> ApiResult<StatusCode> {
    st.engine.revoke_token(&p, &jti)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing key for the daemon's tokens (the operator's); tokens
/// signed before stay valid until they expire.
#[utoipa::path(post, path = "/v1/tokens/rotate-key", responses((status = 200, body = w::KeyRotated), (status = 403, body = w::Problem)))]
async fn rotate_token_key(
    State(st): State<AppState>,
    Extension(p): P,
) -> ApiResult<axum::Json<w::KeyRotated>> {
    Ok(axum::Json(w::KeyRotated {
        kid: st.engine.rotate_token_key(&p)?,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    /// Records about this sandbox.
    sandbox: Option<String>,
    /// Actions starting with this (`sandbox.`, `file.write`).
    action: Option<String>,
    /// This principal's (the operator's call; anyone else sees their own).
    principal: Option<String>,
    /// Records before this `seq` (the last page's `next`).
    before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/audit", params(AuditParams), responses((status = 200, body = w::AuditList), (status = 400, body = w::Problem), (status = 404, body = w::Problem, description = "no such sandbox of yours")))]
async fn audit(
    State(st): State<AppState>,
    Extension(p): P,
    Query(q): Query<AuditParams>,
) -> ApiResult<axum::Json<w::AuditList>> {
    let sandbox = match &q.sandbox {
        Some(s) => Some(st.engine.find(&p, s)?.id),
        None => None,
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::from(Error::invalid("limit", "from 1 to 1000")));
    }
    let records = st.engine.audit_log(
        &p,
        &paddock_core::audit::AuditQuery {
            principal: q.principal,
            sandbox,
            action: q.action,
            before: q.before,
            limit,
        },
    )?;
    let next = (records.len() == limit)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    Ok(axum::Json(w::AuditList {
        records: records.into_iter().map(wire::audit).collect(),
        next,
    }))
}

#[utoipa::path(get, path = "/v1/usage", responses((status = 200, body = w::Usage)))]
async fn usage(State(st): State<AppState>, Extension(p): P) -> ApiResult<axum::Json<w::Usage>> {
    let u = st.engine.usage(&p)?;
    Ok(axum::Json(w::Usage {
        total: u.total,
        by_state: u.by_state,
        by_template: u.by_template,
        avg_startup_ms: u.avg_startup_ms,
        startup_samples: u.startup_samples,
    }))
}

/// Deletes a template; sandboxes created from it are not touched.
#[utoipa::path(delete, path = "/v1/templates/{name}", responses((status = 204), (status = 404, body = w::Problem)))]
async fn delete_template(
    State(st): State<AppState>,
    Extension(p): P,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    st.engine.delete_template(&p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
struct ImageRef {
    reference: String,
}

#[utoipa::path(get, path = "/v1/images/inspect", params(ImageRef), responses((status = 200, body = w::ImageInfo), (status = 404, body = w::Problem)))]
async fn inspect_image(
    State(st): State<AppState>,
    Extension(p): P,
    Query(q): Query<ImageRef>,
) -> ApiResult<axum::Json<w::ImageInfo>> {
    Ok(axum::Json(
        st.engine.inspect_image(&p, &q.reference)?.wire(),
    ))
}

/// Drops the caller's claim on an image (the operator's: every claim); the
/// cache entry goes with the last claim, its layers stay until a prune.
#[utoipa::path(delete, path = "/v1/images", params(ImageRef), responses((status = 204), (status = 404, body = w::Problem)))]
async fn remove_image(
    State(st): State<AppState>,
    Extension(p): P,
    Query(q): Query<ImageRef>,
) -> ApiResult<StatusCode> {
    st.engine.remove_image(&p, &q.reference)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes cached layers no image and no sandbox needs.
#[utoipa::path(post, path = "/v1/images/prune", responses((status = 200, body = w::Pruned),
    (status = 403, description = "the operator's alone", body = w::Problem)))]
async fn prune_images(
    State(st): State<AppState>,
    Extension(p): P,
) -> ApiResult<axum::Json<w::Pruned>> {
    Ok(axum::Json(w::Pruned {
        removed_layers: st.engine.prune_images(&p).await? as u64,
    }))
}

#[utoipa::path(get, path = "/v1/version", responses((status = 200, body = w::Version)))]
async fn version() -> axum::Json<w::Version> {
    axum::Json(w::Version {
        version: env!("CARGO_PKG_VERSION").into(),
        api: "v1".into(),
    })
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Paddock native API",
        description = "Sandboxes for AI agents. Errors are RFC 7807 problem+json."
    ),
    paths(
        create,
        list,
        inspect,
        destroy,
        touch,
        stop,
        start,
        pause,
        resume,
        exec,
        exec_sse,
        exec_ws,
        download,
        upload,
        remove_file,
        list_dir,
        stat,
        mkdir,
        rename,
        ports,
        metrics,
        platform,
        logs,
        sandbox_events,
        all_events,
        snapshot,
        fork,
        list_snapshots,
        inspect_snapshot,
        delete_snapshot,
        create_workspace,
        list_workspaces,
        inspect_workspace,
        update_workspace,
        delete_workspace,
        hibernate_workspace,
        wake_workspace,
        proxy::workspace_proxy,
        create_network,
        list_networks,
        inspect_network,
        delete_network,
        create_volume,
        list_volumes,
        inspect_volume,
        delete_volume,
        attach_volume,
        detach_volume,
        proxy::proxy,
        list_images,
        pull_image,
        inspect_image,
        remove_image,
        prune_images,
        create_template,
        list_templates,
        list_pools,
        list_backends,
        inspect_template,
        delete_template,
        list_policies,
        put_policy,
        delete_policy,
        list_ssh_keys,
        list_tokens,
        create_token,
        revoke_token,
        rotate_token_key,
        add_ssh_key,
        delete_ssh_key,
        ingress::list_proxies,
        ingress::create_proxy,
        ingress::set_proxy_port,
        ingress::delete_proxy,
        ingress::list_domains,
        ingress::bind_domain,
        ingress::unbind_domain,
        ingress::ingress,
        audit,
        usage,
        version
    ),
    components(schemas(
        w::SandboxSpec,
        w::Sandbox,
        w::SandboxConfig,
        w::State,
        w::Isolation,
        w::IdleAction,
        w::RestartPolicy,
        w::ExecRequest,
        w::ExecResult,
        w::OutputChunk,
        w::Started,
        w::PtySize,
        w::FileInfo,
        w::Port,
        w::Metrics,
        w::Platform,
        w::PoolList,
        w::PoolStatus,
        w::BackendList,
        w::BackendInfo,
        w::Capabilities,
        w::Event,
        w::Problem,
        w::Violation,
        w::Policy,
        w::PolicyList,
        w::SshKey,
        w::SshKeyCreate,
        w::SshKeyList,
        w::TokenScope,
        w::TokenCreate,
        w::TokenInfo,
        w::TokenCreated,
        w::TokenList,
        w::KeyRotated,
        w::Proxy,
        w::ProxyList,
        w::ProxyCreate,
        w::ProxyPort,
        w::Domain,
        w::DomainList,
        w::DomainBind,
        w::Ingress,
        w::AuditRecord,
        w::AuditList,
        w::Usage,
        w::SandboxList,
        w::DirListing,
        w::PortList,
        w::RenameBody,
        w::ImageInfo,
        w::ImageList,
        w::PullBody,
        w::PullProgress,
        w::Pruned,
        w::Template,
        w::TemplateList,
        w::Snapshot,
        w::SnapshotList,
        w::SnapshotRequest,
        w::ForkRequest,
        w::ForkResult,
        w::Workspace,
        w::WorkspaceList,
        w::WorkspaceCreate,
        w::WorkspaceUpdate,
        w::Network,
        w::NetworkList,
        w::NetworkCreate,
        w::Volume,
        w::VolumeList,
        w::VolumeCreate,
        w::VolumeRequest,
        w::VolumeMount,
        w::VolumeHolder,
        w::Version
    )),
    modifiers(&ErrorResponses)
)]
struct ApiDoc;

/// Documents on every operation the problems the engine may answer it with
/// beyond its own annotations: a bad parameter or body (400), no or a
/// wrong API key off loopback (401), what the operator does not allow
/// (403); for one sandbox or template, it not existing (404), its state
/// (409) and its agent not answering (503); a create's refusals (an
/// isolation this daemon lacks 501, an image that cannot be had 502/503,
/// a quota 429); a command's timeout (504).
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for (path, item) in api.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let scoped = path.contains('{');
            let creates = path == "/v1/sandboxes" || path == "/v1/templates";
            let runs = path.contains("/exec") || path.contains("/files") || path.contains("/proxy");
            let ops = [
                (&mut item.get, false),
                (&mut item.put, true),
                (&mut item.post, true),
                (&mut item.delete, true),
                (&mut item.patch, true),
            ];
            for (op, writes) in ops {
                let Some(op) = op.as_mut() else { continue };
                let mut codes = vec![
                    (
                        "400",
                        "a parameter or the body is invalid (`field` names it)",
                    ),
                    ("401", "an API key is required, or it is not valid"),
                    ("403", "not allowed (`field` names what)"),
                ];
                if scoped {
                    codes.extend([
                        ("404", "no such sandbox, template or path"),
                        ("409", "the sandbox's state does not allow it"),
                        ("503", "the sandbox's agent is not answering"),
                    ]);
                }
                if creates && writes {
                    codes.extend([
                        ("404", "no such template"),
                        ("409", "a conflict (a template of that name exists)"),
                        ("429", "a quota is reached"),
                        ("501", "the isolation is not available on this daemon"),
                        ("502", "the image's registry failed"),
                        ("503", "the image cannot be had now"),
                    ]);
                }
                if runs {
                    codes.push(("504", "the command or the agent timed out"));
                }
                for (code, what) in codes {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| problem(what).into());
                }
            }
        }
    }
}

async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(<ApiDoc as utoipa::OpenApi>::openapi())
}

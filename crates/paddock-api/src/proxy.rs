//! HTTP and WebSocket proxy to a port inside a sandbox.

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::Extension;
use paddock_core::model::Principal;
use paddock_http_kit::proxy::{forward_to, parse_port};

use crate::problem::{ApiResult, Problem};
use crate::{parse_id, AppState};
use paddock_wire as w;

pub async fn proxy_root(
    st: State<AppState>,
    p: Extension<Principal>,
    Path((id, port)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    forward(st, p, Target::Sandbox(id), port, String::new(), req).await
}

/// Forwards any method to `http://<sandbox>:{port}/{rest}`; WebSocket
/// upgrades are passed through.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/proxy/{port}/{rest}",
    responses((status = 200, description = "whatever the sandbox's server answers"), (status = 502, body = w::Problem)))]
pub async fn proxy(
    st: State<AppState>,
    p: Extension<Principal>,
    Path((id, port, rest)): Path<(String, String, String)>,
    req: Request,
) -> ApiResult<Response> {
    forward(st, p, Target::Sandbox(id), port, rest, req).await
}

/// What a proxied request goes to.
enum Target {
    Sandbox(String),
    /// A workspace's sandbox, woken when it sleeps and wakes on request.
    Workspace(String),
}

async fn forward(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    to: Target,
    port: String,
    rest: String,
    req: Request,
) -> ApiResult<Response> {
    let port =
        parse_port(&port).map_err(|(status, msg)| Problem::new(status, msg).field("port"))?;
    let target = match to {
        Target::Sandbox(id) => st.engine.proxy_target(&p, parse_id(&id)?, port).await?,
        Target::Workspace(name) => st.engine.workspace_target(&p, &name, port).await?,
    };
    forward_to(target, &rest, req)
        .await
        .map_err(|(status, msg)| Problem::new(status, msg))
}

pub async fn workspace_proxy_root(
    st: State<AppState>,
    p: Extension<Principal>,
    Path((name, port)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    forward(st, p, Target::Workspace(name), port, String::new(), req).await
}

/// Forwards any method to a port of the workspace's sandbox; one that
/// sleeps and wakes on request is woken first, the request held until the
/// port answers.
#[utoipa::path(get, path = "/v1/workspaces/{name}/proxy/{port}/{rest}",
    responses((status = 200, description = "whatever the sandbox's server answers"),
              (status = 409, body = w::Problem), (status = 502, body = w::Problem)))]
pub async fn workspace_proxy(
    st: State<AppState>,
    p: Extension<Principal>,
    Path((name, port, rest)): Path<(String, String, String)>,
    req: Request,
) -> ApiResult<Response> {
    forward(st, p, Target::Workspace(name), port, rest, req).await
}

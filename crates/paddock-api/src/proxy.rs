//! HTTP and WebSocket proxy to a port inside a sandbox.

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use paddock_core::model::Principal;
use paddock_core::Error;

use crate::problem::{ApiResult, Problem};
use crate::{parse_id, AppState};

fn client() -> &'static Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    static C: OnceLock<Client<hyper_util::client::legacy::connect::HttpConnector, Body>> =
        OnceLock::new();
    C.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

pub async fn proxy_root(
    st: State<AppState>,
    p: Extension<Principal>,
    Path((id, port)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    forward(st, p, id, port, String::new(), req).await
}

/// Forwards any method to `http://<sandbox>:{port}/{rest}`; WebSocket
/// upgrades are passed through.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/proxy/{port}/{rest}",
    responses((status = 200, description = "whatever the sandbox's server answers"), (status = 502, body = Problem)))]
pub async fn proxy(
    st: State<AppState>,
    p: Extension<Principal>,
    Path((id, port, rest)): Path<(String, String, String)>,
    req: Request,
) -> ApiResult<Response> {
    forward(st, p, id, port, rest, req).await
}

async fn forward(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    id: String,
    port: String,
    rest: String,
    req: Request,
) -> ApiResult<Response> {
    let port: u16 = port.parse().map_err(|_| {
        Problem::from(Error::invalid(
            "port",
            format!("{port:?} is not a port number"),
        ))
    })?;
    let target = st.engine.proxy_target(&p, parse_id(&id)?, port).await?;
    forward_to(target, &rest, req)
        .await
        .map_err(|(status, msg)| Problem::new(status, msg))
}

/// Forwards `req` to `http://{target}/{rest}` (its query kept), passing
/// WebSocket upgrades through. For every dialect's port proxy.
pub async fn forward_to(
    target: std::net::SocketAddr,
    rest: &str,
    mut req: Request,
) -> Result<Response, (StatusCode, String)> {
    let port = target.port();
    let pq = match req.uri().query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    let uri: Uri = format!("http://{target}{pq}").parse().map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            "path: not a valid URI path".to_string(),
        )
    })?;
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let inbound_upgrade = if upgrade {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    if !upgrade {
        for h in HOP {
            parts.headers.remove(*h);
        }
    }
    parts.headers.remove(header::AUTHORIZATION);
    if let Ok(v) = HeaderValue::from_str(&target.to_string()) {
        parts.headers.insert(header::HOST, v);
    }
    let out = Request::from_parts(parts, body);
    let mut resp = client().request(out).await.map_err(|e| {
        (
            StatusCode::BAD_GATEWAY,
            format!("nothing answered on port {port} in the sandbox: {e}"),
        )
    })?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(inbound) = inbound_upgrade {
            let outbound = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(a), Ok(b)) = (inbound.await, outbound.await) {
                    let mut a = TokioIo::new(a);
                    let mut b = TokioIo::new(b);
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = resp.into_parts();
    for h in HOP {
        parts.headers.remove(*h);
    }
    Ok(Response::from_parts(parts, Body::new(body)).into_response())
}

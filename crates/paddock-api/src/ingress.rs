//! The ingress's records: sandboxes' proxies and bound domains, and where
//! the ingress is (`GET /v1/ingress`, with Paddock's CA).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use paddock_core::model::{DomainBinding, Principal, Proxy, Sandbox};
use paddock_core::Engine;
use paddock_wire as w;

use crate::extract::Json;
use crate::problem::ApiResult;
use crate::{parse_id, AppState};

type P = Extension<Principal>;

fn proxy_wire(e: &Engine, sb: &Sandbox, p: Proxy) -> w::Proxy {
    w::Proxy {
        url: e.ingress_url(sb, &p.name),
        name: match p.name.as_str() {
            "" => "default".into(),
            n => n.into(),
        },
        port: p.port,
        created_at: p.created_at,
    }
}

fn domain_wire(d: DomainBinding) -> w::Domain {
    w::Domain {
        domain: d.domain,
        sandbox: d.sandbox,
        created_at: d.created_at,
    }
}

/// The sandbox's proxies, the default first.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/proxies",
    responses((status = 200, body = w::ProxyList), (status = 404, body = w::Problem)))]
pub async fn list_proxies(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<w::ProxyList>> {
    let id = parse_id(&id)?;
    let sb = st.engine.get(&p, id)?;
    let proxies = st.engine.proxies(&p, id)?;
    Ok(axum::Json(w::ProxyList {
        proxies: proxies
            .into_iter()
            .map(|x| proxy_wire(&st.engine, &sb, x))
            .collect(),
    }))
}

/// Publishes a port of the sandbox through the ingress under a name
/// (`default`, or no name: the default proxy, `<box>.<zone>`). A name
/// that is not a DNS label is 400 naming `name`; one the sandbox has, 409.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/proxies", request_body = w::ProxyCreate,
    responses((status = 201, body = w::Proxy), (status = 400, body = w::Problem),
              (status = 404, body = w::Problem), (status = 409, body = w::Problem)))]
pub async fn create_proxy(
    State(st): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Json(req): Json<w::ProxyCreate>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let x = st.engine.create_proxy(&p, id, &req.name, req.port).await?;
    let sb = st.engine.get(&p, id)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(proxy_wire(&st.engine, &sb, x)),
    )
        .into_response())
}

/// Points a proxy at another port (`default` is made when missing).
#[utoipa::path(put, path = "/v1/sandboxes/{id}/proxies/{name}", request_body = w::ProxyPort,
    responses((status = 200, body = w::Proxy), (status = 400, body = w::Problem), (status = 404, body = w::Problem)))]
pub async fn set_proxy_port(
    State(st): State<AppState>,
    Extension(p): P,
    Path((id, name)): Path<(String, String)>,
    Json(req): Json<w::ProxyPort>,
) -> ApiResult<axum::Json<w::Proxy>> {
    let id = parse_id(&id)?;
    let x = st.engine.set_proxy_port(&p, id, &name, req.port).await?;
    let sb = st.engine.get(&p, id)?;
    Ok(axum::Json(proxy_wire(&st.engine, &sb, x)))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/proxies/{name}",
    responses((status = 204), (status = 404, body = w::Problem)))]
pub async fn delete_proxy(
    State(st): State<AppState>,
    Extension(p): P,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    st.engine.delete_proxy(&p, parse_id(&id)?, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's bound domains.
#[utoipa::path(get, path = "/v1/domains", responses((status = 200, body = w::DomainList)))]
pub async fn list_domains(
    State(st): State<AppState>,
    Extension(p): P,
) -> ApiResult<axum::Json<w::DomainList>> {
    Ok(axum::Json(w::DomainList {
        domains: st
            .engine
            .domains(&p)?
            .into_iter()
            .map(domain_wire)
            .collect(),
    }))
}

/// Binds an external domain to one of the caller's sandboxes: the ingress
/// routes requests for it to the sandbox's default proxy. A domain that
/// does not parse, or lies under the ingress's zone, is 400 naming
/// `domain`; one bound already (to anyone), 409.
#[utoipa::path(post, path = "/v1/domains", request_body = w::DomainBind,
    responses((status = 201, body = w::Domain), (status = 400, body = w::Problem),
              (status = 404, body = w::Problem), (status = 409, body = w::Problem)))]
pub async fn bind_domain(
    State(st): State<AppState>,
    Extension(p): P,
    Json(req): Json<w::DomainBind>,
) -> ApiResult<Response> {
    let d = st.engine.bind_domain(&p, &req.domain, req.sandbox).await?;
    Ok((StatusCode::CREATED, axum::Json(domain_wire(d))).into_response())
}

#[utoipa::path(delete, path = "/v1/domains/{domain}",
    responses((status = 204), (status = 400, body = w::Problem), (status = 404, body = w::Problem)))]
pub async fn unbind_domain(
    State(st): State<AppState>,
    Extension(p): P,
    Path(domain): Path<String>,
) -> ApiResult<StatusCode> {
    st.engine.unbind_domain(&p, &domain).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where the ingress listens, its zone, and Paddock's CA to trust.
#[utoipa::path(get, path = "/v1/ingress", responses((status = 200, body = w::Ingress)))]
pub async fn ingress(State(st): State<AppState>) -> axum::Json<w::Ingress> {
    let c = st.engine.ingress_config();
    axum::Json(w::Ingress {
        enabled: c.is_some(),
        zone: c.map(|c| c.zone.clone()),
        port: c.map(|c| c.port),
        scheme: c.map(|c| c.scheme.to_string()),
        ca_pem: c.and_then(|c| c.ca_pem.clone()),
    })
}

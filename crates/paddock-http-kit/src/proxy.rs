//! Forwarding a request to a port inside a sandbox: the native API's
//! `/proxy/{port}/...`, hiver's, and those to come. The dialect resolves
//! the sandbox and port to an address (`Engine::proxy_target`) and maps the
//! error to its own body.

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

fn client() -> &'static HttpClient {
    static C: OnceLock<HttpClient> = OnceLock::new();
    C.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

/// Hop-by-hop headers, dropped both ways (kept on an upgrade, which needs
/// `connection`).
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// A port in a path, or a 400 naming the field.
pub fn parse_port(port: &str) -> Result<u16, (StatusCode, String)> {
    port.parse().map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            format!("port: {port:?} is not a port number"),
        )
    })
}

/// Forwards `req` to `http://{target}/{rest}` (its query kept), passing
/// WebSocket upgrades through. The caller's `Authorization` is not passed
/// on (it is the daemon's key, not the sandbox's business). Errors: 400 for
/// a path that makes no URI, 502 when nothing answers on the port.
pub async fn forward_to(
    target: std::net::SocketAddr,
    rest: &str,
    req: Request,
) -> Result<Response, (StatusCode, String)> {
    let pq = match req.uri().query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    forward(target, &pq, req, &Forward::default()).await
}

/// How [`forward`] treats a request besides its path.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Keep the client's `Host` (the ingress: the server sees the name it
    /// was reached by) rather than the target's address.
    pub keep_host: bool,
    /// Drop the client's `Authorization` (a daemon's credential).
    pub strip_auth: bool,
    /// Mark answers `Content-Security-Policy: sandbox` ([`SANDBOXED`]):
    /// pages shown on the daemon's own origin.
    pub sandboxed: bool,
    /// `X-Forwarded-For`, `-Host` and `-Proto` to set: the client's
    /// address, the `Host` it asked for and its scheme.
    pub forwarded: Option<(std::net::IpAddr, String, &'static str)>,
}

impl Default for Forward {
    fn default() -> Forward {
        Forward {
            keep_host: false,
            strip_auth: true,
            sandboxed: true,
            forwarded: None,
        }
    }
}

/// Forwards `req` to `http://{target}{pq}` (`pq`: a path and query),
/// passing WebSocket upgrades through, as `how` says. Errors: 400 for a
/// path that makes no URI, 502 when nothing answers on the port.
pub async fn forward(
    target: std::net::SocketAddr,
    pq: &str,
    mut req: Request,
    how: &Forward,
) -> Result<Response, (StatusCode, String)> {
    let port = target.port();
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
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    parts.uri = uri;
    if !upgrade {
        for h in HOP {
            parts.headers.remove(*h);
        }
    }
    if how.strip_auth {
        parts.headers.remove(header::AUTHORIZATION);
    }
    match (how.keep_host, host) {
        (true, Some(h)) => {
            parts.headers.insert(header::HOST, h);
        }
        _ => {
            if let Ok(v) = HeaderValue::from_str(&target.to_string()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    if let Some((ip, host, proto)) = &how.forwarded {
        // Ours alone: what the client sent under these names is not
        // passed on as if we had said it.
        parts.headers.remove("forwarded");
        for (name, v) in [
            ("x-forwarded-for", ip.to_string()),
            ("x-forwarded-host", host.clone()),
            ("x-forwarded-proto", proto.to_string()),
        ] {
            parts.headers.remove(name);
            if let Ok(v) = HeaderValue::from_str(&v) {
                parts.headers.insert(name, v);
            }
        }
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
    if how.sandboxed {
        parts.headers.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SANDBOXED),
        );
    }
    Ok(Response::from_parts(parts, Body::new(body)).into_response())
}

/// What every proxied answer carries: a page a sandbox serves is shown on
/// the daemon's own origin (its API's), so a browser must not treat it as
/// that origin. A CSP `sandbox` without `allow-same-origin` gives it an
/// opaque one: its scripts run, but they cannot read the API's answers,
/// and what they send carries `Origin: null`, which the guard refuses on
/// keyless requests. (Cookies and storage of the page's own do not work
/// there; a server that needs them is reached on its port directly.)
pub const SANDBOXED: &str = "sandbox allow-scripts allow-forms allow-popups allow-modals \
     allow-downloads allow-pointer-lock allow-presentation";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxied_pages_get_no_origin_of_the_daemons() {
        assert!(SANDBOXED.starts_with("sandbox "));
        assert!(!SANDBOXED.contains("allow-same-origin"));
        assert!(!SANDBOXED.contains("allow-top-navigation"));
        HeaderValue::from_static(SANDBOXED);
    }

    #[test]
    fn a_port_is_a_number_or_a_named_400() {
        assert_eq!(parse_port("8080"), Ok(8080));
        let (s, m) = parse_port("http").unwrap_err();
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(m.starts_with("port:"), "{m}");
        assert!(parse_port("70000").is_err());
    }
}

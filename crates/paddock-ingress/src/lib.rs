//! The ingress: HTTPS (and, when asked, plain HTTP) requests routed by
//! `Host` to sandboxes, HTTP and WebSocket alike. Which sandbox and port a
//! host reaches, and who may use it, is the engine's
//! (`Engine::ingress_route`, `ingress_authorize`, `ingress_target`); this
//! crate terminates TLS (`tls.rs`), asks, and forwards through
//! `paddock_http_kit::proxy`.

pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use paddock_core::{Engine, Error};
use paddock_http_kit::proxy::{forward, Forward};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// How long a client has for its TLS handshake and its request's head.
const HANDSHAKE: Duration = Duration::from_secs(10);
const HEADERS: Duration = Duration::from_secs(30);

/// Serves the ingress over TLS on `l` until `stop` resolves.
pub async fn serve_tls(
    l: TcpListener,
    engine: Arc<Engine>,
    tls: Arc<rustls::ServerConfig>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    accept_loop(l, stop, move |tcp, peer| {
        let (acceptor, engine) = (acceptor.clone(), engine.clone());
        async move {
            match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => serve_conn(s, peer, engine, "https").await,
                Ok(Err(e)) => tracing::debug!(%peer, "ingress TLS handshake: {e}"),
                Err(_) => tracing::debug!(%peer, "ingress TLS handshake timed out"),
            }
        }
    })
    .await
}

/// Serves the ingress over plain HTTP on `l` until `stop` resolves.
pub async fn serve_http(
    l: TcpListener,
    engine: Arc<Engine>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    accept_loop(l, stop, move |tcp, peer| {
        serve_conn(tcp, peer, engine.clone(), "http")
    })
    .await
}

async fn accept_loop<F, Fut>(
    l: TcpListener,
    stop: impl std::future::Future<Output = ()>,
    conn: F,
) -> std::io::Result<()>
where
    F: Fn(tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => return Ok(()),
            r = l.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Out of descriptors and the like: wait, go on.
                    tracing::warn!("ingress accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(conn(tcp, peer));
    }
}

async fn serve_conn<S>(io: S, peer: SocketAddr, engine: Arc<Engine>, scheme: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let engine = engine.clone();
        async move {
            let req = req.map(Body::new);
            Ok::<_, Infallible>(handle(&engine, peer, scheme, req).await)
        }
    });
    let r = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADERS)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await;
    if let Err(e) = r {
        tracing::debug!(%peer, "ingress connection: {e}");
    }
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{}\n", msg.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn engine_error(e: Error) -> Response<Body> {
    let status = paddock_http_kit::status_of(&e);
    let mut r = plain(status, e.to_string());
    if matches!(e, Error::Unauthenticated(_)) {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// One request: the host checked first (one that is not the ingress's is
/// refused before anything else), then who may use its route, then the
/// sandbox's port; forwarded with the client's `Host` and
/// `X-Forwarded-*`, without its `Authorization` where that was the
/// owner's bearer.
async fn handle(
    engine: &Engine,
    peer: SocketAddr,
    scheme: &'static str,
    req: Request<Body>,
) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host) = host else {
        return plain(StatusCode::BAD_REQUEST, "no Host");
    };
    let route = match engine.ingress_route(&host) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return plain(
                StatusCode::MISDIRECTED_REQUEST,
                format!("{host:?} is not a host of this ingress"),
            )
        }
        Err(e) => return engine_error(e),
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Err(e) = engine.ingress_authorize(&route, bearer).await {
        return engine_error(e);
    }
    let target = match engine.ingress_target(&route).await {
        Ok(t) => t,
        Err(e) => return engine_error(e),
    };
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let how = Forward {
        keep_host: true,
        strip_auth: route.needs_owner,
        sandboxed: false,
        forwarded: Some((peer.ip(), host, scheme)),
    };
    match forward(target, &pq, req, &how).await {
        Ok(r) => r,
        Err((status, msg)) => plain(status, msg),
    }
}

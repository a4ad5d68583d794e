//! [`Guard`], which keeps web pages from driving a listener that serves
//! without credentials.
//!
//! A listener on loopback that needs no key (the native API's keyless
//! requests, hiver, flash) trusts whoever can connect to it, and a browser
//! on the same host can: a page on a foreign site that rebinds its name to
//! 127.0.0.1 sends requests with its own `Host`, and any page can send
//! cross-site requests (form posts, `fetch` without CORS, WebSocket
//! upgrades) that carry its `Origin`. The guard refuses
//!
//! - a `Host` (or HTTP/2 `:authority`) that is not a loopback address
//!   (127.0.0.0/8, `[::1]`), `localhost` or a name the operator allows
//!   (`paddock serve --allowed-host`), any port: 403; none at all on
//!   HTTP/1.1 and later: 400;
//! - an `Origin` whose host is not allowed the same way (`null` included),
//!   WebSocket upgrades too: 403;
//! - on the API's own routes (not a port proxy, whose server inside the
//!   sandbox decides): requests a browser's script or form makes
//!   (`Sec-Fetch-Mode` other than a plain GET navigation), and bodies of
//!   any content type but those the route's SDK sends (a form post or a
//!   `text/plain` fetch needs no CORS preflight): 403 and 415.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready};
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::Body;

/// The names besides loopback ones that a guarded listener answers to.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allowed: Arc<[String]>,
}

/// What a route takes as a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// `application/json` (or `application/...+json`).
    Json,
    /// One of these media types (lower case, no parameters).
    Only(&'static [&'static str]),
    /// Anything, from anyone the `Host` and `Origin` rules let in: a port
    /// proxy, whose server inside the sandbox answers.
    Proxy,
}

/// Why the guard refused a request: the status and a message for the
/// client, for each dialect to put in its own error body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// The header at fault: `Host`, `Origin`, `Sec-Fetch-Mode` or
    /// `Content-Type`.
    pub field: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, field: &'static str, message: String) -> Refusal {
        Refusal {
            status,
            field,
            message,
        }
    }
}

/// Which route takes what, by method and path.
pub type Rules = fn(&Method, &str) -> Accept;

impl Guard {
    /// A guard that also lets in `names` (host names or addresses, any
    /// case, with or without a port, which is ignored).
    pub fn new<I, S>(names: I) -> Result<Guard, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut allowed = Vec::new();
        for n in names {
            let n = n.as_ref().trim();
            let host = split_host(n)
                .filter(|h| !h.is_empty() && !h.contains(['/', '@', ' ', '*']))
                .ok_or_else(|| format!("allowed host {n:?}: give a host name or an address"))?;
            allowed.push(host);
        }
        Ok(Guard {
            allowed: allowed.into(),
        })
    }

    /// Whether a request may name `host` (a `Host` value, port and all).
    pub fn allows_host(&self, host: &str) -> bool {
        let Some(h) = split_host(host) else {
            return false;
        };
        if h == "localhost" {
            return true;
        }
        if let Ok(ip) = h.parse::<IpAddr>() {
            if ip.to_canonical().is_loopback() {
                return true;
            }
        }
        self.allowed.contains(&h)
    }

    /// Checks `req` against the rules; `accept` is what its route takes.
    pub fn check<B: Body>(&self, req: &Request<B>, accept: Accept) -> Result<(), Refusal> {
        self.check_host(req)?;
        self.check_origin(req.headers())?;
        if accept == Accept::Proxy {
            return Ok(());
        }
        check_browser(req.method(), req.headers())?;
        let body = req.body();
        let empty = body.is_end_stream() || body.size_hint().exact() == Some(0);
        if !empty {
            check_content_type(req.headers(), accept)?;
        }
        Ok(())
    }

    fn check_host<B>(&self, req: &Request<B>) -> Result<(), Refusal> {
        let hosts = req.headers().get_all(header::HOST);
        if hosts.iter().count() > 1 {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "Host",
                "Host: more than one Host header".into(),
            ));
        }
        let mut names = Vec::new();
        if let Some(a) = req.uri().authority() {
            names.push(a.as_str().to_string());
        }
        for h in hosts {
            let h = h.to_str().map_err(|_| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "Host",
                    "Host: not a valid host".into(),
                )
            })?;
            names.push(h.to_string());
        }
        if names.is_empty() {
            if req.version() >= Version::HTTP_11 {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "Host",
                    "Host: the header is required".into(),
                ));
            }
            return Ok(());
        }
        for n in names {
            if !self.allows_host(&n) {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "Host",
                    format!(
                        "Host: {n:?} is not allowed: this listener answers to loopback addresses, \
                         localhost and the names given with `paddock serve --allowed-host` \
                         (a guard against DNS rebinding)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        for o in headers.get_all(header::ORIGIN) {
            let text = String::from_utf8_lossy(o.as_bytes());
            let host = text
                .split_once("://")
                .filter(|(scheme, _)| !scheme.is_empty())
                .map(|(_, rest)| rest.split('/').next().unwrap_or(rest));
            if !host.is_some_and(|h| self.allows_host(h)) {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "Origin",
                    format!(
                        "Origin: {text:?} is not allowed: cross-site requests are refused; \
                         pages may call this listener only from loopback origins and the names \
                         given with `paddock serve --allowed-host`"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A tower layer that checks every request with `rules` and answers
    /// a refused one with `refuse`'s response.
    pub fn layer<F>(&self, rules: Rules, refuse: F) -> GuardLayer<F> {
        GuardLayer {
            guard: self.clone(),
            rules,
            refuse,
        }
    }
}

/// Requests a page's script or form sends: a browser marks them with
/// `Sec-Fetch-Mode` (to loopback, a trustworthy origin); no SDK does.
/// A GET or HEAD navigation (a link, the address bar) may pass.
fn check_browser(method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(mode) = headers.get("sec-fetch-mode") else {
        return Ok(());
    };
    let mode = String::from_utf8_lossy(mode.as_bytes());
    if mode == "navigate" && (method == Method::GET || method == Method::HEAD) {
        return Ok(());
    }
    Err(Refusal::new(
        StatusCode::FORBIDDEN,
        "Sec-Fetch-Mode",
        format!(
            "Sec-Fetch-Mode: {mode:?}: a web page's scripts and forms may not call this API \
             (it needs no key on loopback); use an SDK or the CLI"
        ),
    ))
}

/// The media type of `Content-Type`, lower case, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?;
    let v = String::from_utf8_lossy(v.as_bytes());
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

fn check_content_type(headers: &HeaderMap, accept: Accept) -> Result<(), Refusal> {
    let wanted: &[&str] = match accept {
        Accept::Json => &["application/json"],
        Accept::Only(types) => types,
        Accept::Proxy => return Ok(()),
    };
    let got = media_type(headers);
    let json_suffix =
        |g: &str| accept == Accept::Json && g.starts_with("application/") && g.ends_with("+json");
    if got
        .as_deref()
        .is_some_and(|g| wanted.contains(&g) || json_suffix(g))
    {
        return Ok(());
    }
    let want = wanted.join(" or ");
    Err(Refusal::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Content-Type",
        match got {
            Some(g) => format!("Content-Type: {g:?} is not accepted here: send {want}"),
            None => format!("Content-Type: a request body needs Content-Type {want}"),
        },
    ))
}

/// The host of `host[:port]` or `[v6]:port`, lower case, without a
/// trailing dot; None when it is malformed.
fn split_host(s: &str) -> Option<String> {
    let s = s.trim();
    let host = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        v6
    } else {
        match s.rsplit_once(':') {
            Some((h, port)) if is_port(port) && !h.contains(':') => h,
            Some(_) if s.parse::<std::net::Ipv6Addr>().is_ok() => s,
            Some(_) => return None,
            None => s,
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

fn is_port(p: &str) -> bool {
    p.is_empty() || (p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// [`Guard::layer`].
#[derive(Clone)]
pub struct GuardLayer<F> {
    guard: Guard,
    rules: Rules,
    refuse: F,
}

impl<S, F: Clone> tower::Layer<S> for GuardLayer<F> {
    type Service = GuardService<S, F>;
    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            guard: self.guard.clone(),
            rules: self.rules,
            refuse: self.refuse.clone(),
        }
    }
}

/// A service behind the guard.
#[derive(Clone)]
pub struct GuardService<S, F> {
    inner: S,
    guard: Guard,
    rules: Rules,
    refuse: F,
}

impl<S, F, B, RB> tower::Service<Request<B>> for GuardService<S, F>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    F: Fn(Refusal) -> Response<RB>,
    B: Body,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<RB>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let accept = (self.rules)(req.method(), req.uri().path());
        match self.guard.check(&req, accept) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(r) => Either::Left(futures::future::ready(Ok((self.refuse)(r)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: Option<&str>, extra: &[(&str, &str)], body: &'static str) -> Request<String> {
        let mut b = Request::builder().method(Method::POST).uri("/x");
        if let Some(h) = host {
            b = b.header("host", h);
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(body.to_string()).unwrap()
    }

    #[test]
    fn hosts() {
        let g = Guard::new(["Box.Example", "10.0.0.5:7070"]).unwrap();
        for ok in [
            "127.0.0.1:7070",
            "127.9.9.9",
            "localhost",
            "LOCALHOST:10000",
            "[::1]:8080",
            "[::1]",
            "box.example:1",
            "box.example.",
            "10.0.0.5",
        ] {
            assert!(g.allows_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:10000",
            "localhost.evil.example",
            "128.0.0.1",
            "0.0.0.0",
            "[::2]:1",
            "127.0.0.1:x",
            "",
            "[::1]x",
            "a:b:c",
        ] {
            assert!(!g.allows_host(bad), "{bad}");
        }
        assert!(Guard::new(["a/b"]).is_err());
    }

    #[test]
    fn checks() {
        let g = Guard::default();
        let json = [("content-type", "application/json; charset=utf-8")];
        assert!(g
            .check(&req(Some("127.0.0.1:1"), &json, "{}"), Accept::Json)
            .is_ok());
        let r = g.check(&req(None, &json, "{}"), Accept::Json).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = g
            .check(&req(Some("evil.example"), &json, "{}"), Accept::Json)
            .unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        for origin in [
            "http://evil.example",
            "null",
            "evil",
            "http://evil.example:1/",
        ] {
            let h = [("origin", origin), json[0]];
            let r = g.check(&req(Some("localhost"), &h, "{}"), Accept::Json);
            assert_eq!(r.unwrap_err().status, StatusCode::FORBIDDEN, "{origin}");
        }
        let h = [("origin", "http://localhost:3000"), json[0]];
        assert!(g
            .check(&req(Some("localhost"), &h, "{}"), Accept::Json)
            .is_ok());
        let plain = [("content-type", "text/plain")];
        let r = g.check(&req(Some("localhost"), &plain, "{}"), Accept::Json);
        assert_eq!(r.unwrap_err().status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let r = g.check(&req(Some("localhost"), &[], "{}"), Accept::Json);
        assert_eq!(r.unwrap_err().status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(g
            .check(&req(Some("localhost"), &[], ""), Accept::Json)
            .is_ok());
        assert!(g
            .check(&req(Some("localhost"), &plain, "x"), Accept::Proxy)
            .is_ok());
        let fetch = [("sec-fetch-mode", "cors"), json[0]];
        let r = g.check(&req(Some("localhost"), &fetch, "{}"), Accept::Json);
        assert_eq!(r.unwrap_err().status, StatusCode::FORBIDDEN);
    }
}

//! Test harness: real `paddock serve` daemons on loopback, each with its
//! own data dir, bridge and subnet, driving real sandboxes (needs root).
#![allow(dead_code)]

pub mod registry;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use paddock_client::wire;
use serde_json::Value;

/// The daemon under test: this build's, or `PADDOCK_TEST_BIN` (to run the
/// suite against another build, e.g. an older one to see an attack test
/// fail while its hole is open).
pub fn bin() -> String {
    std::env::var("PADDOCK_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_paddock").into())
}

pub fn agent() -> PathBuf {
    if let Ok(p) = std::env::var("PADDOCK_TEST_AGENT") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Only the static build: the daemon refuses a dynamically linked agent.
    let p = root.join("target/x86_64-unknown-linux-gnu/release/paddock-agent");
    if p.is_file() {
        return p;
    }
    panic!("no static paddock-agent built: run scripts/build.sh or set PADDOCK_TEST_AGENT")
}

/// A gateway whose /16 no interface routes yet and no daemon of this
/// process has: every daemon gets a subnet of its own.
fn free_subnet(pid: u32, n: u32) -> String {
    static TAKEN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    let routes = Command::new("ip")
        .args(["-o", "route", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut taken = TAKEN.lock().unwrap();
    for i in 0..140 {
        let x = 110 + (pid + n * 7 + i) % 140;
        if x == 88 || taken.contains(&x) || routes.contains(&format!("10.{x}.0.0/16")) {
            continue;
        }
        taken.push(x);
        return format!("10.{x}.0.1");
    }
    panic!("no free 10.x.0.0/16 subnet left for a test daemon");
}

/// A port nothing listens on now and that this process has not handed out
/// before, below the kernel's ephemeral range (32768 and up here): a port
/// from that range, free when probed, could be taken as the source port of
/// any outgoing connection (another test's client, say) before the daemon
/// binds it. Below it, only an explicit bind can take a port; each process
/// starts at its own place so that two test binaries seldom meet.
pub fn free_port() -> u16 {
    const LOW: u32 = 20000;
    const SPAN: u32 = 12000;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for i in 0..SPAN {
        let port = (LOW + (start + i) % SPAN) as u16;
        if given.contains(&port) {
            continue;
        }
        // Free on every address (a daemon may listen on any of them).
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}

/// How many lines of `log` contain `line`.
fn logged(log: &str, line: &str) -> usize {
    log.lines().filter(|l| l.contains(line)).count()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Daemon {
    pub url: String,
    pub listen: String,
    pub data: PathBuf,
    pub bridge: String,
    pub gateway: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    child: Mutex<Option<Child>>,
    /// `stop_for_good` ran.
    gone: std::sync::atomic::AtomicBool,
    /// Starts again after the port was still held (see `spawn`).
    bind_retries: AtomicU32,
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_on("127.0.0.1")
    }

    /// A daemon listening on `host` (not loopback: keys required).
    pub fn start_on(host: &str) -> Daemon {
        Self::start_with(host, &[])
    }

    /// A daemon with extra `paddock serve` arguments.
    pub fn start_with(host: &str, extra: &[&str]) -> Daemon {
        Self::start_with_env(host, extra, &[])
    }

    /// A daemon with extra arguments and environment variables.
    pub fn start_with_env(host: &str, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{}{}", pid % 100000, n);
        let data = std::env::temp_dir().join(format!("paddock-test-{tag}"));
        let _ = std::fs::remove_dir_all(&data);
        let port = free_port();
        let d = Daemon {
            url: format!("http://127.0.0.1:{port}"),
            listen: format!("{host}:{port}"),
            data,
            bridge: format!("pdt{tag}").chars().take(15).collect(),
            gateway: free_subnet(pid, n),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: Mutex::new(None),
            gone: Default::default(),
            bind_retries: AtomicU32::new(0),
        };
        d.spawn();
        d
    }

    fn spawn(&self) {
        // The daemon dies with the test process: PR_SET_PDEATHSIG fires when
        // the spawning *thread* exits, so spawn from a thread that never does.
        let (tx, rx) = std::sync::mpsc::channel();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            self.listen.clone(),
            "--data-dir".into(),
            self.data.to_string_lossy().into(),
            "--agent".into(),
            agent().to_string_lossy().into(),
            "--bridge".into(),
            self.bridge.clone(),
            "--gateway".into(),
            self.gateway.clone(),
            "--reap-interval".into(),
            "0.2".into(),
        ];
        // The installed daemon's socket is not ours: each daemon has its own.
        if !self.extra.iter().any(|a| a == "--socket") {
            args.extend(["--socket".into(), self.socket().to_string_lossy().into()]);
        }
        // The dialects' default ports are the installed daemon's: off
        // unless a test asks for them.
        for flag in [
            "--hiver-listen",
            "--flash-http-listen",
            "--flash-grpc-listen",
            "--agenttier-listen",
            "--hogland-listen",
            "--boxd-listen",
            "--ssh-listen",
            "--ingress-listen",
        ] {
            if !self.extra.iter().any(|a| a == flag) {
                args.extend([flag.into(), "off".into()]);
            }
        }
        args.extend(self.extra.iter().cloned());
        let env = self.env.clone();
        let log = self.data.with_extension("log");
        let log_before = self.log();
        std::thread::spawn(move || {
            let logf = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            // The harness reads the daemon's "serving ... on" line: keep
            // it whatever filter the caller's PADDOCK_LOG sets.
            let filter = std::env::var("PADDOCK_LOG").unwrap_or_else(|_| "info".into());
            let mut cmd = Command::new(bin());
            cmd.args(&args)
                .env("PADDOCK_LOG", format!("{filter},paddock::serve=info"))
                .envs(env)
                .stdin(Stdio::null())
                .stdout(logf.try_clone().unwrap())
                .stderr(logf);
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            tx.send(cmd.spawn().unwrap()).unwrap();
            loop {
                std::thread::park();
            }
        });
        let child = rx.recv().unwrap();
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        // A healthy answer on our port counts only once this daemon says it
        // listens there (the log is appended to across restarts): another
        // process may hold the port, and this daemon then fails to bind.
        let serving = format!("serving the native API on {}", self.listen);
        let before = logged(&log_before, &serving);
        loop {
            if let Ok(r) = reqwest::blocking::get(format!("{}/healthz", self.url)) {
                if r.status().is_success() && logged(&self.log(), &serving) > before {
                    return;
                }
            }
            let exited = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .unwrap()
                .try_wait()
                .unwrap();
            if let Some(st) = exited {
                // Right after a kill -9 the old daemon's port may still be
                // the kernel's for a moment (its connections closing):
                // the daemon says so and exits; it is started again.
                let log = self.log();
                let fresh = &log[log_before.len().min(log.len())..];
                if fresh.contains("Address already in use")
                    && self.bind_retries.fetch_add(1, Ordering::SeqCst) < 20
                {
                    std::thread::sleep(Duration::from_millis(500));
                    return self.spawn();
                }
                panic!("paddock serve exited ({st}): {log}");
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The native API's unix socket (under the data dir).
    pub fn socket(&self) -> PathBuf {
        self.data.join("paddock.sock")
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// Stops the daemon for good: kill -9, then `paddock serve --cleanup`
    /// (every sandbox destroyed, the bridge and NAT rules removed).
    pub fn stop_for_good(&self) {
        if self.gone.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        self.kill9();
        let out = Command::new(bin())
            .args(["serve", "--cleanup", "--data-dir"])
            .arg(&self.data)
            .args(["--agent"])
            .arg(agent())
            .args(["--bridge", &self.bridge, "--gateway", &self.gateway])
            .output();
        // Said, not asserted (a drop must not panic): what a failed
        // clean-up leaves on the host is named here.
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "paddock serve --cleanup of {} failed: {}",
                self.data.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("paddock serve --cleanup of {}: {e}", self.data.display()),
        }
    }

    /// `kill -9` of the daemon, leaving its sandboxes running.
    pub fn kill9(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn restart(&self) {
        self.kill9();
        self.spawn();
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url, None)
    }

    pub fn api_with_key(&self, key: &str) -> Api {
        Api::new(&self.url, Some(key))
    }

    /// Runs the CLI against this daemon, asserting success; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        stdout_of(args, self.cli(args))
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .env("PADDOCK_HOST", &self.url)
            .env("PADDOCK_DATA_DIR", &self.data)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Destroy whatever the tests left behind.
        self.stop_for_good();
        if std::env::var_os("PADDOCK_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.data);
            let _ = std::fs::remove_file(self.data.with_extension("log"));
        }
    }
}

/// Daemons kept in statics, cleaned up when the test binary exits.
static AT_EXIT: Mutex<Vec<&'static Daemon>> = Mutex::new(Vec::new());

/// Has `d`, a daemon in a static (never dropped), stopped and its
/// sandboxes, network and data dir removed when the test binary exits:
/// else its namespaces and bridge stay on the host.
pub fn clean_up_at_exit(d: &'static Daemon) {
    extern "C" fn cleanup() {
        let all = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()));
        for d in all {
            d.stop_for_good();
            if std::env::var_os("PADDOCK_TEST_KEEP").is_none() {
                let _ = std::fs::remove_dir_all(&d.data);
                let _ = std::fs::remove_file(d.data.with_extension("log"));
            }
        }
    }
    let mut v = AT_EXIT.lock().unwrap();
    if v.is_empty() {
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(cleanup) };
    }
    v.push(d);
}

/// One daemon shared by the tests of a test binary.
pub fn shared() -> &'static Daemon {
    static D: OnceLock<Daemon> = OnceLock::new();
    let mut fresh = false;
    let d = D.get_or_init(|| {
        fresh = true;
        Daemon::start()
    });
    if fresh {
        clean_up_at_exit(d);
    }
    d
}

/// The native API, for tests: the typed client (`paddock_client`, what
/// the CLI and the bench speak) for what a client does, and raw requests
/// (`req`, `get`, `post`, ...) for what no client would send.
pub struct Api {
    pub base: String,
    pub key: Option<String>,
    pub http: reqwest::blocking::Client,
    pub client: paddock_client::Client,
}

/// The runtime the typed client's calls run on (tests are synchronous).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Api {
    pub fn new(url: &str, key: Option<&str>) -> Api {
        Api {
            base: format!("{url}/v1"),
            key: key.map(String::from),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            client: paddock_client::Client::new(
                paddock_client::Endpoint::Url(url.to_string()),
                key.map(String::from),
            ),
        }
    }

    /// Runs a typed client call to its end.
    pub fn call<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        runtime().block_on(f)
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        r
    }

    pub fn send(&self, rb: reqwest::blocking::RequestBuilder) -> Resp {
        let r = rb.send().unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        Resp {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.send(self.req(reqwest::Method::GET, path))
    }
    pub fn post(&self, path: &str, body: Value) -> Resp {
        self.send(self.req(reqwest::Method::POST, path).json(&body))
    }
    pub fn delete(&self, path: &str) -> Resp {
        self.send(self.req(reqwest::Method::DELETE, path))
    }

    /// Creates a sandbox through the client (asserting it is new and
    /// running) and returns it. The spec is JSON for brevity; it must be a
    /// `wire::SandboxSpec`.
    pub fn create_sandbox(&self, spec: Value) -> wire::Sandbox {
        let spec: wire::SandboxSpec =
            serde_json::from_value(spec.clone()).unwrap_or_else(|e| panic!("spec {spec}: {e}"));
        let (sb, created) = self
            .call(self.client.create(&spec))
            .unwrap_or_else(|e| panic!("create: {e}"));
        assert!(created, "create: an existing sandbox {}", sb.id);
        assert_eq!(sb.state, wire::State::Running, "{sb:?}");
        sb
    }

    /// Creates a sandbox (asserting success) and returns its id.
    pub fn create(&self, spec: Value) -> String {
        self.create_sandbox(spec).id.to_string()
    }

    /// Runs a command through the client (asserting the API answered).
    pub fn run(&self, id: &str, req: &wire::ExecRequest) -> wire::ExecResult {
        self.call(self.client.exec(id, req))
            .unwrap_or_else(|e| panic!("exec {req:?}: {e}"))
    }

    /// `run`, with the request and the result as JSON for brevity.
    pub fn exec(&self, id: &str, req: Value) -> Value {
        let typed: wire::ExecRequest =
            serde_json::from_value(req.clone()).unwrap_or_else(|e| panic!("exec {req}: {e}"));
        serde_json::to_value(self.run(id, &typed)).unwrap()
    }

    pub fn sh(&self, id: &str, script: &str) -> Value {
        serde_json::to_value(self.run(id, &wire::ExecRequest::shell(script))).unwrap()
    }

    pub fn destroy(&self, id: &str) {
        let sb = self
            .call(self.client.destroy(id))
            .unwrap_or_else(|e| panic!("destroy {id}: {e}"));
        assert_eq!(sb.state, wire::State::Destroyed, "{sb:?}");
    }
}

/// Destroys the sandbox when dropped, so that a failing test leaks nothing.
pub struct Sb<'a> {
    pub api: &'a Api,
    pub id: String,
}

impl<'a> Sb<'a> {
    pub fn new(api: &'a Api, spec: Value) -> Sb<'a> {
        Sb {
            id: api.create(spec),
            api,
        }
    }
    pub fn path(&self, rest: &str) -> String {
        format!("/sandboxes/{}{rest}", self.id)
    }
    pub fn sh(&self, script: &str) -> Value {
        self.api.sh(&self.id, script)
    }
}

impl Drop for Sb<'_> {
    fn drop(&mut self) {
        let _ = self.api.call(self.api.client.destroy(&self.id));
    }
}

/// The pid of a sandbox's init, from its directory.
pub fn init_pid(dir: &std::path::Path) -> i32 {
    std::fs::read_to_string(dir.join("init.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Polls `f` until it returns Some, for at most `secs`.
pub fn eventually<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {secs}s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads SSE frames from a streaming response until `n` events arrived.
pub fn read_events(resp: reqwest::blocking::Response, n: usize) -> Vec<(i64, Value)> {
    let mut out = Vec::new();
    let mut id = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(resp)) {
        let line = line.unwrap();
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse::<i64>().unwrap());
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((id.take().unwrap(), serde_json::from_str(d).unwrap()));
            if out.len() == n {
                break;
            }
        }
    }
    out
}

pub fn stream(api: &Api, path: &str, last: Option<i64>) -> reqwest::blocking::Response {
    let mut rb = api.req(reqwest::Method::GET, path);
    if let Some(l) = last {
        rb = rb.header("Last-Event-ID", l.to_string());
    }
    rb.send().unwrap()
}

/// The test virtualenv's interpreter (scripts/pyenv.sh makes it), with the
/// published SDKs pinned in tests/python/requirements.txt.
pub fn python() -> String {
    std::env::var("PADDOCK_TEST_PYTHON").unwrap_or_else(|_| {
        let p =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python");
        p.to_string_lossy().into_owned()
    })
}

/// The interpreter of the second virtualenv scripts/pyenv.sh makes,
/// target/pyenv-agenttier-0.1.1 (agenttier's first release, from
/// tests/python/requirements-agenttier-0.1.1.txt), beside `python()`'s:
/// with `PADDOCK_TEST_PYTHON` set (`<target>/pyenv/bin/python`), that
/// venv's sibling.
pub fn python_agenttier_0_1_1() -> String {
    python_in("pyenv-agenttier-0.1.1")
}

/// The interpreter of the virtualenv `venv` that scripts/pyenv.sh makes
/// beside `python()`'s (under target/).
pub fn python_in(venv: &str) -> String {
    let bin = match std::env::var("PADDOCK_TEST_PYTHON") {
        Ok(p) => std::path::Path::new(&p)
            .parent()
            .expect("PADDOCK_TEST_PYTHON: a path to an interpreter")
            .to_path_buf(),
        Err(_) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin"),
    };
    bin.join(format!("../../{venv}/bin/python"))
        .to_string_lossy()
        .into_owned()
}

/// Runs tests/python/`script` against `d` with `env`, and asserts that it
/// succeeded and printed `done`; on failure shows its output and the end
/// of the daemon's log.
pub fn run_sdk_script(script: &str, env: &[(&str, &str)], done: &str, d: &Daemon) {
    run_sdk_script_with(&python(), script, env, done, d)
}

/// `run_sdk_script` under the interpreter `python`.
pub fn run_sdk_script_with(
    python: &str,
    script: &str,
    env: &[(&str, &str)],
    done: &str,
    d: &Daemon,
) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python")
        .join(script);
    let out = Command::new(python)
        .arg(&path)
        .envs(env.iter().copied())
        .env("PADDOCK_URL", &d.url)
        .env("PADDOCK_DATA", &d.data)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (scripts/pyenv.sh makes the test virtualenvs)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains(done),
        "{script} failed:\n{stdout}\n{stderr}\ndaemon log:\n{}",
        d.log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `PUT /sandboxes/{id}/files?path=...` with `query` appended (`&mode=600`).
pub fn put_file(api: &Api, id: &str, path: &str, query: &str, body: Vec<u8>) -> Resp {
    api.send(
        api.req(
            reqwest::Method::PUT,
            &format!("/sandboxes/{id}/files?path={path}{query}"),
        )
        .header("content-type", "application/octet-stream")
        .body(body),
    )
}

/// `GET /sandboxes/{id}/files?path=...`: status and bytes.
pub fn get_file(api: &Api, id: &str, path: &str) -> (u16, Vec<u8>) {
    let r = api
        .req(
            reqwest::Method::GET,
            &format!("/sandboxes/{id}/files?path={path}"),
        )
        .send()
        .unwrap();
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

/// Bytes of a download, through a client that gives up after `secs` (so
/// that a download that hangs fails the test instead of holding it).
pub fn get_file_within(api: &Api, id: &str, path: &str, secs: u64) -> (u16, Vec<u8>) {
    let http = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(secs))
        .build()
        .unwrap();
    let r = http
        .get(format!("{}/sandboxes/{id}/files?path={path}", api.base))
        .send()
        .unwrap_or_else(|e| panic!("{path}: no answer within {secs}s: {e}"));
    let status = r.status().as_u16();
    let body = r
        .bytes()
        .unwrap_or_else(|e| panic!("{path}: body cut off or not within {secs}s: {e:?}"));
    (status, body.to_vec())
}

/// Splits a text/event-stream body into (event, JSON data) pairs.
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|frame| {
            // As the SSE spec reads a frame: `event` defaults to "message",
            // a space after the colon is optional, data lines are joined
            // with newlines, and a frame without data is none (a comment).
            let mut event = "message".to_string();
            let mut data: Vec<&str> = Vec::new();
            for line in frame.lines() {
                let field = |name: &str| {
                    let v = line.strip_prefix(name)?.strip_prefix(':')?;
                    Some(v.strip_prefix(' ').unwrap_or(v))
                };
                if let Some(e) = field("event") {
                    event = e.to_string();
                } else if let Some(d) = field("data") {
                    data.push(d);
                }
            }
            let data = data.join("\n");
            (!data.is_empty()).then(|| {
                let v = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("event {event}: data is not JSON ({e}): {data}"));
                (event, v)
            })
        })
        .collect()
}

/// The stdout events' text, joined.
pub fn sse_stdout(evs: &[(String, Value)]) -> String {
    evs.iter()
        .filter(|e| e.0 == "stdout")
        .map(|e| e.1["data"].as_str().unwrap())
        .collect()
}

/// Runs `paddock serve` with `args` (after loopback ports of its own and no
/// dialects or socket) until it
/// exits, or for `secs` (then kills it): its exit status (None: it served)
/// and what it printed.
pub fn serve_briefly(args: &[&str], secs: u64) -> (Option<std::process::ExitStatus>, String) {
    let log = std::env::temp_dir().join(format!(
        "paddock-second-{}-{}.log",
        std::process::id(),
        free_port()
    ));
    let f = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["serve", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--hiver-listen", "off", "--flash-http-listen", "off"])
        .args(["--flash-grpc-listen", "off", "--agenttier-listen", "off"])
        .args(["--hogland-listen", "off", "--boxd-listen", "off"])
        .args(["--ssh-listen", "off"])
        .args(["--ingress-listen", "off"])
        .args(["--socket", "off"])
        .args(args)
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (status, text)
}

/// A CLI run's stdout, asserting it succeeded (its output in the message).
pub fn stdout_of(args: &[&str], out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A new API key (`pdk_...`) of principal `name`, made by the CLI.
pub fn api_key(d: &Daemon, name: &str) -> String {
    let out = d.cli(&["keys", "create", "--name", name]);
    assert!(
        out.status.success(),
        "keys create {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let k = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(k.starts_with("pdk_"), "keys create {name}: {k}");
    k
}

/// Writes an RSA private key (PKCS#8 PEM) to `key` and the JWKS of its
/// public half, under `kid`, to `jwks`, with `python`'s `cryptography`
/// (a test virtualenv's): an OIDC issuer's keys for tests that sign
/// tokens.
pub fn oidc_key_pair(python: &str, key: &std::path::Path, jwks: &std::path::Path, kid: &str) {
    const GEN: &str = r#"
import base64, json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

key, jwks, kid = sys.argv[1:]
k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
with open(key, "wb") as f:
    f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()))
n = k.public_key().public_numbers()
b64 = lambda i: base64.urlsafe_b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
with open(jwks, "w") as f:
    json.dump({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                         "n": b64(n.n), "e": b64(n.e)}]}, f)
"#;
    let out = Command::new(python)
        .args(["-c", GEN])
        .arg(key)
        .arg(jwks)
        .arg(kid)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (scripts/pyenv.sh makes the test virtualenvs)"));
    assert!(
        out.status.success(),
        "key pair: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A WebSocket echo server (Python, no library): a box's port 9001
/// answering the upgrade and echoing each short text frame unmasked.
pub const WS_ECHO: &str = r#"
import socket, base64, hashlib
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9001)); s.listen(5)
while True:
    c, _ = s.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        req += c.recv(4096)
    key = [l.split(b": ")[1] for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    while True:
        d = c.recv(4096)
        if len(d) < 6: break
        n = d[1] & 0x7f
        mask = d[2:6]
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(d[6:6 + n]))
        c.sendall(bytes([d[0], n]) + payload)
    c.close()
"#;

/// An ed25519 key pair made by OpenSSH's `ssh-keygen` in `dir`; its
/// public line.
pub fn ssh_keygen(dir: &std::path::Path, comment: &str) -> String {
    let key = dir.join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen (openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

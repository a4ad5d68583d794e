//! A real registry for tests: Debian's docker-registry on loopback, and
//! small images built here with umoci and pushed with skopeo.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::eventually;

pub fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-ec").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Registry {
    pub addr: String,
    pub dir: PathBuf,
    creds: Option<(String, String)>,
    child: std::sync::Mutex<Option<Child>>,
}

impl Registry {
    pub fn start(dir: &Path) -> Registry {
        Self::start_with_auth(dir, None)
    }

    /// A registry that wants `user:password` (htpasswd, bcrypt).
    pub fn start_with_auth(dir: &Path, creds: Option<(&str, &str)>) -> Registry {
        let port = super::free_port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::create_dir_all(dir).unwrap();
        let mut auth = String::new();
        if let Some((u, p)) = creds {
            let out = Command::new("/usr/bin/python3")
                .args(["-c", &format!("import crypt; print(crypt.crypt('{p}', crypt.mksalt(crypt.METHOD_BLOWFISH)))")])
                .output()
                .unwrap();
            let hash = String::from_utf8(out.stdout).unwrap();
            std::fs::write(dir.join("htpasswd"), format!("{u}:{}\n", hash.trim())).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.join("htpasswd").display()
            );
        }
        std::fs::write(dir.join("config.yml"), format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{auth}",
            dir.join("data").display())).unwrap();
        let r = Registry {
            addr,
            dir: dir.to_path_buf(),
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
            child: std::sync::Mutex::new(None),
        };
        r.up();
        r
    }

    pub fn up(&self) {
        let access = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("access.log"))
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdout(access)
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/deps.sh installs it)");
        *self.child.lock().unwrap() = Some(child);
        eventually(20, || {
            std::net::TcpStream::connect(&self.addr).ok().map(|_| ())
        });
    }

    pub fn down(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Builds a busybox image of two layers and pushes it as `name`. Each
    /// name's layers are its own: a tar records times to the second, and
    /// two images built in the same second had the same first layer (a
    /// test that wanted to see it downloaded found it cached).
    pub fn push_busybox(&self, work: &Path, name: &str) {
        let oci = work.join(format!("oci-{}", name.replace(['/', ':'], "-")));
        let bundle = oci.with_extension("bundle");
        let _ = std::fs::remove_dir_all(&oci);
        let _ = std::fs::remove_dir_all(&bundle);
        let (o, b) = (oci.display(), bundle.display());
        sh(&format!("umoci init --layout {o} && umoci new --image {o}:img && umoci unpack --image {o}:img {b}"));
        sh(&format!("mkdir -p {b}/rootfs/bin {b}/rootfs/etc {b}/rootfs/tmp && cp /bin/busybox {b}/rootfs/bin/ && \
            for c in sh ls cat echo id pwd env sleep wc stat head tail tr md5sum test uname hostname; do ln -sf busybox {b}/rootfs/bin/$c; done && \
            echo 'root:x:0:0:root:/root:/bin/sh' > {b}/rootfs/etc/passwd && echo 'app:x:1000:1000::/home/app:/bin/sh' >> {b}/rootfs/etc/passwd && \
            echo deleted-later > {b}/rootfs/etc/gone && mkdir -p {b}/rootfs/srv && echo keep > {b}/rootfs/srv/keep && \
            echo {name} > {b}/rootfs/etc/image-name && \
            umoci repack --image {o}:img {b}"));
        // A second layer: one deletion (a whiteout) and one new file.
        sh(&format!(
            "rm -rf {b} && umoci unpack --image {o}:img {b} && rm {b}/rootfs/etc/gone && \
            echo layer2 > {b}/rootfs/srv/second && echo {name} > {b}/rootfs/srv/name && \
            umoci repack --image {o}:img {b}"
        ));
        sh(&format!("umoci config --image {o}:img --config.env GREETING=from-image --config.workingdir /srv \
            --config.cmd sleep --config.cmd 600 --config.exposedports 8080/tcp --config.user app"));
        let creds = match &self.creds {
            Some((u, p)) => format!("--dest-creds {u}:{p}"),
            None => String::new(),
        };
        sh(&format!(
            "skopeo copy --quiet --dest-tls-verify=false {creds} oci:{o}:img docker://{}/{name}",
            self.addr
        ));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.down();
    }
}

impl Registry {
    /// Pushes a python3 image built from the host's own interpreter: its
    /// binary, standard library and the shared libraries it needs.
    pub fn push_python(&self, work: &Path, name: &str, exposed: &[u16]) {
        let tag = name.replace(['/', ':'], "-");
        let oci = work.join(format!("oci-py-{tag}"));
        let b = work.join(format!("oci-py-{tag}.bundle"));
        let _ = std::fs::remove_dir_all(&oci);
        let _ = std::fs::remove_dir_all(&b);
        let (o, bd) = (oci.display(), b.display());
        let ports: String = exposed
            .iter()
            .map(|p| format!(" --config.exposedports {p}/tcp"))
            .collect();
        sh(&format!("umoci init --layout {o} && umoci new --image {o}:img && umoci unpack --image {o}:img {bd}"));
        sh(&format!(
            "r={bd}/rootfs; py=$(readlink -f /usr/bin/python3); v=$(basename $py); \
             mkdir -p $r/usr/bin $r/usr/lib $r/tmp $r/etc $r/bin && cp $py $r/usr/bin/ && ln -s $v $r/usr/bin/python3 && \
             cp /bin/busybox $r/bin/ && for c in sh ls cat echo sleep mkdir rm env id pwd test head tail tr wc nohup kill ps grep uname hostname timeout; do ln -s busybox $r/bin/$c; done && \
             tar -C / --exclude=__pycache__ --exclude=test --exclude=tests --exclude=idlelib --exclude=tkinter \
                 --exclude=ensurepip --exclude=lib2to3 --exclude=pydoc_data --exclude=dist-packages \
                 -cf - usr/lib/$v | tar -C $r -xf - && \
             for l in $(ldd $py | grep -o '/[^ ]*'); do mkdir -p $r$(dirname $l) && cp -L $l $r$l; done && \
             for d in lib lib64; do [ -L /$d ] && ln -sfn usr/$d $r/$d || true; done && \
             echo 'root:x:0:0:root:/root:/bin/sh' > $r/etc/passwd && mkdir -p $r/root $r/workspace && \
             umoci repack --image {o}:img {bd} && \
             umoci config --image {o}:img --config.env PATH=/usr/bin:/bin --config.cmd sleep --config.cmd 600 {ports}"
        ));
        sh(&format!(
            "skopeo copy --quiet --dest-tls-verify=false oci:{o}:img docker://{}/{name}",
            self.addr
        ));
    }
}

//! Starts a private PostgreSQL server for a test binary: `initdb` into a temporary directory,
//! `postgres` on a free loopback port (and a unix socket in that directory), stopped by its own
//! pid when dropped. Never touches a server the test did not start (never port 5432).
//!
//! The binaries are found in `$PG_BIN` if set, then `PATH`, `/usr/lib/postgresql/*/bin` and
//! `/usr/local/bin`. PostgreSQL refuses to run as root: when the tests run as root, the data
//! directory belongs to the `postgres` OS user and the server runs as it (`runuser`).

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis_server::free_port;

/// A running `postgres` owned by the test.
pub struct PgServer {
    child: Option<Child>,
    /// Sends the server SIGQUIT and removes its directory when this process exits without
    /// dropping us (a static server shared by a test binary): it waits for its stdin, which
    /// closes with us.
    watchdog: Option<Child>,
    port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// Where the PostgreSQL binaries are, or a panic saying where we looked.
pub fn find_bin() -> PathBuf {
    let mut looked = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("PG_BIN") {
        candidates.push(PathBuf::from(dir));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut v: Vec<PathBuf> = versions
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .collect();
        v.sort();
        v.reverse();
        candidates.extend(v);
    }
    candidates.push(PathBuf::from("/usr/local/bin"));
    for dir in candidates {
        if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            return dir;
        }
        looked.push(dir.display().to_string());
    }
    panic!(
        "initdb and postgres not found (looked in $PG_BIN, PATH, /usr/lib/postgresql/*/bin, \
         /usr/local/bin: {}); run scripts/test, which installs Debian's postgresql package",
        looked.join(", ")
    )
}

/// `id` with these arguments, as a number.
fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn is_root() -> bool {
    id(&["-u"]) == Some(0)
}

/// A command run as the `postgres` OS user when we are root (its own pid, no wrapper), as
/// ourselves otherwise.
fn command(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    if is_root() {
        let (uid, gid) = id(&["-u", "postgres"])
            .zip(id(&["-g", "postgres"]))
            .expect("the postgres OS user exists (Debian's postgresql package creates it)");
        c.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    c
}

impl PgServer {
    /// Initialise a fresh cluster and start a server on it.
    pub fn start() -> PgServer {
        let bin = find_bin();
        let dir = tempfile::Builder::new()
            .prefix("huey-pg-")
            .tempdir()
            .expect("create a temp dir for postgres");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(status.success(), "chown the postgres temp dir");
        }
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "huey", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            child: None,
            watchdog: None,
            port: 0,
            bin,
            dir,
        };
        for _ in 0..10 {
            server.port = loop {
                let p = free_port();
                if p != 5432 {
                    break p;
                }
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("postgres found no free port after 10 tries");
    }

    /// The TCP URL of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://huey@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL through the unix socket in the server's directory.
    pub fn unix_url(&self) -> String {
        format!(
            "postgresql://huey@/postgres?host={}&port={}",
            self.dir.path().display(),
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stop the server at once (SIGQUIT: immediate shutdown, as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop and start again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "postgres did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run SQL through `psql` as the superuser; returns its output (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        // Beside the server if there, else on PATH (a bin dir may hold only the server).
        let psql = Some(self.bin.join("psql"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let out = command(&psql)
            .args(["-X", "-A", "-t", "-h"])
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "huey", "-d", "postgres", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Turn TLS on: a test CA and a server certificate for 127.0.0.1 and localhost made with
    /// `openssl`, loaded by a configuration reload. Returns the CA's PEM file (for
    /// `sslrootcert=`) once the server takes TLS connections.
    pub fn enable_tls(&self) -> PathBuf {
        let dir = self.dir.path();
        let script = "set -e
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
              -keyout ca.key -out ca.crt -days 2 -subj /CN=huey-test-ca 2>/dev/null
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
              -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > ext
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
              -out server.crt -days 2 -extfile ext 2>/dev/null
            chmod 600 server.key; chmod 644 ca.crt";
        let out = command(Path::new("sh"))
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "make test certificates: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (key, file) in [
            ("ssl_cert_file", "server.crt"),
            ("ssl_key_file", "server.key"),
        ] {
            self.psql(&format!(
                "ALTER SYSTEM SET {key} = '{}'",
                dir.join(file).display()
            ));
        }
        self.psql("ALTER SYSTEM SET ssl = on");
        self.psql("SELECT pg_reload_conf()");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.psql("SHOW ssl") != "on" {
            assert!(Instant::now() < deadline, "postgres did not turn TLS on");
            std::thread::sleep(Duration::from_millis(50));
        }
        dir.join("ca.crt")
    }

    /// Start the server and wait until it accepts connections; false if the port was taken.
    fn spawn(&mut self) -> bool {
        let log = self.dir.path().join("postgres.log");
        let mut child = command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=200", "-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = std::fs::write(&log, &err);
                if err.contains("already in use") || err.contains("could not bind") {
                    return false;
                }
                panic!("postgres exited at start: {err}");
            }
            if self.accepts() {
                // Keep draining stderr so the server never blocks on a full pipe.
                if let Some(mut e) = child.stderr.take() {
                    std::thread::spawn(move || {
                        let mut sink = Vec::new();
                        let _ = e.read_to_end(&mut sink);
                    });
                }
                self.watchdog = Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "read _; kill -QUIT {pid} 2>/dev/null; \
                         while kill -0 {pid} 2>/dev/null; do sleep 0.1; done; rm -rf '{dir}'",
                        pid = child.id(),
                        dir = self.dir.path().display()
                    ))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok();
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("postgres on port {} did not accept connections", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server takes a real connection (the port alone opens before it is ready).
    fn accepts(&self) -> bool {
        if TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            return false;
        }
        postgres::Client::connect(&self.url(), postgres::NoTls)
            .and_then(|mut c| c.simple_query("SELECT 1"))
            .is_ok()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The server the tests of one binary share (stopped when the binary exits).
pub fn shared() -> &'static PgServer {
    static SERVER: std::sync::OnceLock<PgServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

/// A schema name no other test of this binary uses.
pub fn fresh_schema() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The URL of a fresh schema on the shared server.
pub fn fresh_schema_url() -> String {
    format!("{}?schema={}", shared().url(), fresh_schema())
}

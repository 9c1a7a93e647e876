//! Connecting to PostgreSQL: the URL and its options, a small pool of connections, the schema
//! and its version, and database errors as sentences.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::postgres::config::SslMode;
use ::postgres::{Client, Config, NoTls, Transaction};
use parking_lot::Mutex;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The schema version this build writes and reads.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "huey";

/// Connections kept open between calls (more are opened when needed, then closed).
const IDLE: usize = 16;

/// A pooled connection idle this long is checked (one round trip) before a one-statement write
/// goes out on it (see [`Pool::once`]); one used more recently is not, and a write on it that
/// meets the server's goodbye is an error.
const CHECK_AFTER: Duration = Duration::from_millis(100);

/// Tables and indexes, created in the storage's own schema (the connection's search path).
const TABLES: &str = "
CREATE TABLE IF NOT EXISTS meta(key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS queue(
    seq bigserial PRIMARY KEY,
    id text NOT NULL,
    queue text NOT NULL,
    priority integer NOT NULL,
    payload bytea NOT NULL,
    deliveries integer NOT NULL DEFAULT 0,
    lease_owner text,
    lease_token bigint,
    lease_until bigint
);
CREATE INDEX IF NOT EXISTS queue_order ON queue(queue, priority DESC, seq);
CREATE INDEX IF NOT EXISTS queue_id ON queue(id);
CREATE TABLE IF NOT EXISTS schedule(
    seq bigserial PRIMARY KEY,
    id text NOT NULL,
    queue text NOT NULL,
    priority integer NOT NULL,
    eta bigint NOT NULL,
    payload bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS schedule_eta ON schedule(eta, seq);
CREATE INDEX IF NOT EXISTS schedule_id ON schedule(id);
CREATE TABLE IF NOT EXISTS results(id text PRIMARY KEY, value bytea NOT NULL, expires bigint);
CREATE INDEX IF NOT EXISTS results_expires ON results(expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv(
    ns text NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    expires bigint,
    PRIMARY KEY(ns, key)
);
CREATE INDEX IF NOT EXISTS kv_expires ON kv(expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters(key text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE IF NOT EXISTS dead(
    seq bigserial PRIMARY KEY,
    id text NOT NULL,
    queue text NOT NULL,
    payload bytea NOT NULL,
    error text NOT NULL,
    at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_id ON dead(id);
";

/// A parsed `postgres://` or `postgresql://` URL: the client's settings and our schema.
#[derive(Clone)]
pub struct PgTarget {
    pub(super) config: Config,
    pub(super) schema: String,
    /// What errors call the server (host and database, never the password).
    pub(super) name: String,
    /// Set for `sslmode=require` (or `verify-ca`, `verify-full`): connections use TLS and check
    /// the server's certificate.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl PgTarget {
    /// Parse a URL; `schema=NAME` in its query picks the schema (default `huey`), the rest is
    /// the client's (`host=/socket/dir`, `sslmode=`, `connect_timeout=`, `options=`, …).
    ///
    /// `sslmode=require`, `verify-ca` and `verify-full` connect with TLS and verify the server's
    /// certificate and host name against the system's roots, plus the PEM file
    /// `sslrootcert=PATH` names (stricter than libpq's `require`, which checks nothing).
    /// `disable` and `prefer` (the default) connect without TLS.
    pub fn parse(url: &str) -> std::result::Result<PgTarget, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("expected postgres://user@host:port/db or postgresql://…".into());
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut schema = DEFAULT_SCHEMA.to_string();
        let mut rest = Vec::new();
        let (mut verify, mut root_cert) = (false, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", v)) => schema = v.to_string(),
                Some(("sslmode", "verify-ca" | "verify-full")) => verify = true,
                Some(("sslrootcert", v)) => root_cert = Some(v.to_string()),
                _ => rest.push(pair),
            }
        }
        check_schema(&schema)?;
        let client_url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = Config::from_str(&client_url).map_err(|e| e.to_string())?;
        if verify {
            config.ssl_mode(SslMode::Require);
        }
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Some(Arc::new(tls_config(root_cert.as_deref())?)),
            _ => None,
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // Named per schema, so an operator (or a test) can tell whose connections these are.
        config.application_name(&format!("huey/{schema}"));
        // The URL's own `options=` (e.g. `-c statement_timeout=5000`) are kept. Dequeue takes
        // rows in index order whatever the statistics say: right after a bulk enqueue (before
        // autovacuum has analysed the table) the planner otherwise reads every ready row of the
        // queue and sorts them, for each dequeue, which makes draining a backlog quadratic. Set
        // for the session (these connections run only this storage's statements, all served by
        // indexes), so a dequeue is one statement and one round trip. No JIT: these statements
        // are short, and a plan costed with sorts disabled would otherwise be compiled each time.
        let ours = format!(
            "-c search_path={schema} -c enable_bitmapscan=off -c enable_sort=off -c jit=off"
        );
        let options = match config.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} {ours}"),
            _ => ours,
        };
        config.options(&options);
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                ::postgres::config::Host::Tcp(h) => h.clone(),
                ::postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let db = config.get_dbname().unwrap_or("").to_string();
        Ok(PgTarget {
            config,
            name: format!("postgres {host}/{db} schema {schema}"),
            schema,
            tls,
        })
    }

    /// The schema the storage lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub(super) fn connect(&self) -> std::result::Result<Client, ::postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(MakeRustlsConnect::new((**tls).clone())),
            None => self.config.connect(NoTls),
        }
    }
}

/// The TLS settings for `sslmode=require`: the system's roots plus those in `root_cert`.
fn tls_config(root_cert: Option<&str>) -> std::result::Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    // A system without a readable store still connects with `sslrootcert=`.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = root_cert {
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(path).map_err(|e| format!("sslrootcert={path}: {e}"))?;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format!("sslrootcert={path}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("sslrootcert={path}: no PEM certificate in it"));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("sslrootcert={path}: {e}"))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "sslmode=require: no trusted root certificates (the system has none \
                    readable); name one with sslrootcert=PATH"
                .into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("sslmode=require: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `url` with its `schema=` replaced by (or, when absent, given) `schema`: what
/// `--pg-schema` (or `HUEY_PG_SCHEMA`) does to the storage URL. An error names what is wrong
/// when `url` is not a `postgres://` URL or `schema` is not a plain identifier.
pub fn with_schema(url: &str, schema: &str) -> std::result::Result<String, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "--pg-schema (HUEY_PG_SCHEMA) {schema}: the storage is not a postgres:// URL"
        ));
    }
    check_schema(schema).map_err(|e| format!("--pg-schema (HUEY_PG_SCHEMA): {e}"))?;
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("schema="))
        .map(str::to_string)
        .collect();
    pairs.push(format!("schema={schema}"));
    Ok(format!("{base}?{}", pairs.join("&")))
}

/// Schema names are plain identifiers, so they are never quoted or injected.
fn check_schema(s: &str) -> std::result::Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schema={s:?}: expected a lowercase identifier (letters, digits, _)"
        ))
    }
}

pub(super) fn storage_err(message: String) -> Error {
    Error::Storage {
        backend: "postgres",
        message,
    }
}

/// A database error as a sentence naming the server.
pub(super) fn describe(name: &str, e: &::postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let hint = match code {
            "25006" => " (the server is read-only: is this a standby? point huey at the primary)",
            "57014" => " (a statement timeout or a cancel stopped it; nothing of it was written)",
            "57P01" | "57P02" | "57P03" => " (the server is shutting down or restarting)",
            "53300" => " (too many connections: raise max_connections or use fewer consumers)",
            "3F000" | "42P01" => " (the schema or its tables are missing)",
            _ => "",
        };
        return format!("{name}: {} [{code}]{hint}", db.message());
    }
    if e.is_closed() {
        return format!("{name}: the connection was closed ({e})");
    }
    let detail = std::error::Error::source(e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    format!("{name}: {e}{detail}")
}

/// How many times a transaction rolled back as a deadlock victim or a serialization failure
/// is run again before its error is returned.
const RERUNS: u32 = 8;

/// A deadlock victim or a serialization failure: the server rolled the transaction back, and
/// running it again may succeed.
fn is_transient(e: &::postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| matches!(db.code().code(), "40P01" | "40001"))
}

/// The server ended the session before it read anything more from it: an administrator's
/// termination, a shutdown or a crash (the FATAL message a backend leaves as it goes).
fn closed_while_idle(e: &::postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| matches!(db.code().code(), "57P01" | "57P02" | "57P03"))
}

/// The server cannot be reached, or ended or refused the session because it is shutting down,
/// starting or crashed (`57P01`–`57P03`, a connection exception `08…`), or the connection
/// broke: what a restart looks like from the client.
fn unreachable(e: &::postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return matches!(code, "57P01" | "57P02" | "57P03") || code.starts_with("08");
    }
    e.is_closed()
        || std::error::Error::source(e)
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
}

/// A few open connections shared by the threads of one storage handle.
pub(super) struct Pool {
    pub(super) target: PgTarget,
    idle: Mutex<Vec<(Client, Instant)>>,
}

impl Pool {
    pub(super) fn new(target: PgTarget) -> Pool {
        Pool {
            target,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn err(&self, e: &::postgres::Error) -> Error {
        storage_err(describe(&self.target.name, e))
    }

    /// A pooled connection and how long it sat idle, or a new one (`None`).
    fn take(&self) -> Result<(Client, Option<Duration>)> {
        self.take_raw().map_err(|e| self.err(&e))
    }

    fn take_raw(&self) -> std::result::Result<(Client, Option<Duration>), ::postgres::Error> {
        if let Some((c, since)) = self.idle.lock().pop() {
            return Ok((c, Some(since.elapsed())));
        }
        Ok((self.target.connect()?, None))
    }

    fn put(&self, c: Client) {
        if c.is_closed() {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < IDLE {
            idle.push((c, Instant::now()));
        }
    }

    /// Run `f` in one transaction and commit it. A pooled connection that turns out closed
    /// when the transaction begins (a server restart, `pg_terminate_backend`) is replaced and
    /// the transaction begun again: nothing was sent yet. A transaction the server rolled back
    /// as a deadlock victim or a serialization failure (writers taking the same rows in
    /// different orders, such as unique tasks' claims) is run again from the start, a few
    /// times: nothing of it was written. Other errors are returned (and the transaction rolled
    /// back, or never committed).
    pub(super) fn tx<T>(
        &self,
        mut f: impl FnMut(&mut Transaction<'_>) -> std::result::Result<T, ::postgres::Error>,
    ) -> Result<T> {
        let mut tries = 0;
        let mut reruns = 0u32;
        loop {
            let (mut client, idle_for) = self.take()?;
            let pooled = idle_for.is_some();
            let out = match client.transaction() {
                Ok(mut tx) => f(&mut tx).and_then(|v| tx.commit().map(|_| v)),
                Err(e) => {
                    tries += 1;
                    if pooled && tries <= IDLE + 1 {
                        continue; // a stale pooled connection: try the next one
                    }
                    Err(e)
                }
            };
            match out {
                Err(e) if is_transient(&e) && reruns < RERUNS => {
                    self.put(client);
                    reruns += 1;
                    // Apart a little, at random, so the same writers do not collide again.
                    let ms = 1 + (uuid::Uuid::new_v4().as_u128() % 20) as u64 * u64::from(reruns);
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                out => {
                    let out = out.map_err(|e| self.err(&e));
                    self.put(client);
                    return out;
                }
            }
        }
    }

    /// Run the one statement `f` sends, in its own implicit transaction (the statement commits
    /// or writes nothing). It is sent once: after any error it may have committed, so the error
    /// is returned. Even the server's goodbye (`pg_terminate_backend`, a shutdown) read as the
    /// answer says nothing: the client reads a reply together with a goodbye that followed it
    /// and is told only of the goodbye, so an enqueue sent again would be written twice and a
    /// take sent again would lose its result. A pooled connection that sat idle for
    /// [`CHECK_AFTER`] or longer (long enough for a restart, or a termination, to have ended its
    /// session meanwhile) is checked first with an empty query, and replaced if it is gone.
    pub(super) fn once<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> std::result::Result<T, ::postgres::Error>,
    ) -> Result<T> {
        let mut tries = 0;
        loop {
            let (mut client, idle_for) = self.take()?;
            if idle_for.is_some_and(|d| d >= CHECK_AFTER) {
                let timeout = self
                    .target
                    .config
                    .get_connect_timeout()
                    .copied()
                    .unwrap_or(Duration::from_secs(10));
                if client.is_valid(timeout).is_err() && tries <= IDLE {
                    tries += 1;
                    continue; // gone while idle: nothing was sent on it
                }
            }
            let out = f(&mut client).map_err(|e| self.err(&e));
            self.put(client);
            return out;
        }
    }

    /// Run `f` on a connection outside a transaction, where running it again is safe: a read,
    /// a lease (a row leased by a call whose answer was lost is delivered again once that
    /// lease expires), or the delete of one row version. A failure on a pooled connection that the server ended (its goodbye
    /// read as the answer, or the connection already seen closed) runs again on another one.
    pub(super) fn read<T>(
        &self,
        f: impl FnMut(&mut Client) -> std::result::Result<T, ::postgres::Error>,
    ) -> Result<T> {
        self.read_raw(f).map_err(|e| self.err(&e))
    }

    /// [`read`](Self::read) for a caller that waits until `deadline` anyway (a result wait):
    /// while the server cannot be reached or is going away or starting (a restart), it tries
    /// again, less often as the outage lasts, and returns the error only once `deadline` has
    /// passed. Other errors are returned at once. Without a deadline, [`read`](Self::read).
    pub(super) fn read_until<T>(
        &self,
        deadline: Option<Instant>,
        mut f: impl FnMut(&mut Client) -> std::result::Result<T, ::postgres::Error>,
    ) -> Result<T> {
        let Some(deadline) = deadline else {
            return self.read(f);
        };
        let mut pause = Duration::from_millis(20);
        loop {
            match self.read_raw(&mut f) {
                Err(e) if unreachable(&e) && Instant::now() + pause < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                out => return out.map_err(|e| self.err(&e)),
            }
        }
    }

    fn read_raw<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> std::result::Result<T, ::postgres::Error>,
    ) -> std::result::Result<T, ::postgres::Error> {
        let again =
            |e: &::postgres::Error, client: &Client| closed_while_idle(e) || client.is_closed();
        let mut tries = 0;
        loop {
            let (mut client, idle_for) = self.take_raw()?;
            let pooled = idle_for.is_some();
            match f(&mut client) {
                Ok(v) => {
                    self.put(client);
                    return Ok(v);
                }
                Err(e) if pooled && again(&e, &client) && tries <= IDLE => tries += 1,
                Err(e) => {
                    self.put(client);
                    return Err(e);
                }
            }
        }
    }
}

/// Whether the schema `url` names holds the storage (its `meta` table), without creating it.
pub(crate) fn schema_exists(url: &str) -> Result<bool> {
    let target = PgTarget::parse(url).map_err(|reason| Error::StorageUrl {
        url: url.to_string(),
        reason,
    })?;
    let err = |e: ::postgres::Error| storage_err(describe(&target.name, &e));
    let mut client = target.connect().map_err(err)?;
    let row = client
        .query_one(
            "SELECT to_regclass(format('%I.meta', $1::text)) IS NOT NULL",
            &[&target.schema],
        )
        .map_err(err)?;
    Ok(row.get(0))
}

/// Create the schema and its tables, or check the version of those already there. Runs under
/// an advisory lock, so many processes starting at once create it once.
pub(super) fn migrate(pool: &Pool) -> Result<()> {
    let schema = pool.target.schema.clone();
    // Already in place at our version (the usual case): nothing to write, so a process opening
    // it takes no lock, and a read-only server still serves reads.
    let current = pool.read(|c| {
        let exists = c
            .query_opt(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 \
                 AND table_name = 'meta'",
                &[&schema],
            )?
            .is_some();
        if !exists {
            return Ok(false);
        }
        let v = c.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])?;
        Ok(v.is_some_and(|r| r.get::<_, String>(0) == SCHEMA_VERSION.to_string()))
    })?;
    if current {
        return Ok(());
    }
    let found: Option<String> = pool.tx(|tx| {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('huey schema ' || $1))",
            &[&schema],
        )?;
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))?;
        let exists = tx
            .query_opt(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 \
                 AND table_name = 'meta'",
                &[&schema],
            )?
            .is_some();
        if exists {
            let v = tx.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])?;
            if let Some(v) = v {
                let v: String = v.get(0);
                if v.parse::<i64>().ok() != Some(SCHEMA_VERSION) {
                    return Ok(Some(v));
                }
            }
        }
        tx.batch_execute(TABLES)?;
        tx.execute(
            "INSERT INTO meta(key, value) VALUES('schema_version', $1) ON CONFLICT DO NOTHING",
            &[&SCHEMA_VERSION.to_string()],
        )?;
        Ok(None)
    })?;
    match found {
        None => Ok(()),
        Some(v) => Err(storage_err(format!(
            "{}: the schema has version {v}, but this build reads version {SCHEMA_VERSION}; \
             use a matching huey build",
            pool.target.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::with_schema;

    #[test]
    fn with_schema_replaces_or_adds_the_schema() {
        let u = "postgres://h/db?schema=a&connect_timeout=3";
        assert_eq!(
            with_schema(u, "b").unwrap(),
            "postgres://h/db?connect_timeout=3&schema=b"
        );
        assert_eq!(
            with_schema("postgresql://h/db", "b").unwrap(),
            "postgresql://h/db?schema=b"
        );
        assert!(with_schema("redis://h/0", "b").is_err());
        assert!(with_schema("postgres://h/db", "B-").is_err());
    }
}

//! Storage URLs: parsed once into a [`StorageUrl`] (the one place that knows the schemes),
//! written back in a form that parses to the same value, and opened by [`open`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
#[cfg(feature = "sqlite")]
use std::time::Duration;

#[cfg(feature = "postgres")]
use super::PostgresStorage;
#[cfg(feature = "redis")]
use super::RedisStorage;
use super::{MemoryStorage, Storage};
#[cfg(feature = "sqlite")]
use super::{SqliteOptions, SqliteStorage, Synchronous};
use crate::error::{Error, Result};

/// The storage used when none is named: a SQLite file in the working directory.
pub const DEFAULT_URL: &str = "sqlite:huey.db";

/// A parsed storage URL: `sqlite:PATH[?synchronous=off|normal|full&busy_timeout=SECS]`
/// (also `sqlite://PATH`), `memory:`, `redis://…`, `rediss://…`, `redis+unix://…`, or
/// `postgres://user@host:port/db[?schema=huey&sslmode=…&host=/socket/dir]` (also
/// `postgresql://`).
///
/// ```
/// use huey::storage::StorageUrl;
///
/// let url: StorageUrl = "sqlite:q.db?busy_timeout=2.5".parse()?;
/// assert_eq!(url.backend(), "sqlite");
/// assert_eq!(url.to_string().parse::<StorageUrl>()?, url);
/// # Ok::<(), huey::Error>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct StorageUrl(Kind);

#[derive(Clone, PartialEq)]
enum Kind {
    Memory,
    #[cfg(feature = "sqlite")]
    Sqlite {
        path: String,
        options: SqliteOptions,
    },
    /// Kept as written: the Redis client parses it again when it connects.
    #[cfg(feature = "redis")]
    Redis(String),
    /// Kept as written (checked when parsed): parsed again when it connects.
    #[cfg(feature = "postgres")]
    Postgres(String),
}

impl StorageUrl {
    /// The backend it names ("sqlite", "redis", "memory").
    pub fn backend(&self) -> &'static str {
        match &self.0 {
            Kind::Memory => "memory",
            #[cfg(feature = "sqlite")]
            Kind::Sqlite { .. } => "sqlite",
            #[cfg(feature = "redis")]
            Kind::Redis(_) => "redis",
            #[cfg(feature = "postgres")]
            Kind::Postgres(_) => "postgres",
        }
    }

    /// The database file of a `sqlite:` URL (`None` for other backends).
    pub fn sqlite_path(&self) -> Option<&str> {
        match &self.0 {
            #[cfg(feature = "sqlite")]
            Kind::Sqlite { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The schema of a `postgres://` URL (`None` for other backends).
    pub fn postgres_schema(&self) -> Option<String> {
        match &self.0 {
            #[cfg(feature = "postgres")]
            Kind::Postgres(url) => super::PgTarget::parse(url)
                .ok()
                .map(|t| t.schema().to_string()),
            _ => None,
        }
    }

    /// For a `postgres://` URL, whether its schema holds a storage (a connection to the
    /// server, creating nothing); `None` for other backends.
    pub(crate) fn postgres_schema_exists(&self) -> Result<Option<bool>> {
        match &self.0 {
            #[cfg(feature = "postgres")]
            Kind::Postgres(url) => super::postgres::schema_exists(url).map(Some),
            _ => Ok(None),
        }
    }

    /// Open the storage for the app `app` (backends that several apps may share, Redis,
    /// prefix their keys with it).
    pub fn open(&self, app: &str) -> Result<Arc<dyn Storage>> {
        Ok(match &self.0 {
            Kind::Memory => {
                let _ = app;
                Arc::new(MemoryStorage::new())
            }
            #[cfg(feature = "sqlite")]
            Kind::Sqlite { path, options } => Arc::new(SqliteStorage::open(path, options.clone())?),
            #[cfg(feature = "redis")]
            Kind::Redis(url) => Arc::new(RedisStorage::open(url, app)?),
            #[cfg(feature = "postgres")]
            Kind::Postgres(url) => Arc::new(PostgresStorage::open(url)?),
        })
    }
}

/// Open a storage from a URL (a [`StorageUrl`] or text to parse as one) for the app `app`.
pub fn open(url: impl IntoStorageUrl, app: &str) -> Result<Arc<dyn Storage>> {
    url.into_storage_url()?.open(app)
}

/// A storage URL, or text parsed as one: what [`open`] and [`crate::Huey::open`] take.
pub trait IntoStorageUrl {
    /// The parsed URL, or why it does not parse.
    fn into_storage_url(self) -> Result<StorageUrl>;
}

impl IntoStorageUrl for StorageUrl {
    fn into_storage_url(self) -> Result<StorageUrl> {
        Ok(self)
    }
}

impl IntoStorageUrl for &StorageUrl {
    fn into_storage_url(self) -> Result<StorageUrl> {
        Ok(self.clone())
    }
}

impl IntoStorageUrl for &str {
    fn into_storage_url(self) -> Result<StorageUrl> {
        self.parse()
    }
}

impl IntoStorageUrl for &String {
    fn into_storage_url(self) -> Result<StorageUrl> {
        self.parse()
    }
}

impl FromStr for StorageUrl {
    type Err = Error;

    fn from_str(url: &str) -> Result<StorageUrl> {
        let bad = |reason: &str| Error::StorageUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if url == "memory:" || url == "memory://" {
            return Ok(StorageUrl(Kind::Memory));
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            #[cfg(not(feature = "sqlite"))]
            {
                let _ = rest;
                return Err(Error::Unsupported("sqlite"));
            }
            #[cfg(feature = "sqlite")]
            {
                let rest = rest.strip_prefix("//").unwrap_or(rest);
                let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
                if path.is_empty() {
                    return Err(bad("expected sqlite:PATH, e.g. sqlite:huey.db"));
                }
                let options = sqlite_options(query).map_err(|e| bad(&e))?;
                return Ok(StorageUrl(Kind::Sqlite {
                    path: path.to_string(),
                    options,
                }));
            }
        }
        if url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://")
        {
            #[cfg(not(feature = "redis"))]
            return Err(Error::Unsupported("redis"));
            #[cfg(feature = "redis")]
            {
                use ::redis::IntoConnectionInfo;
                redis_client_url(url)
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| bad(&format!("{e}; {REDIS_FORMS}")))?;
                return Ok(StorageUrl(Kind::Redis(url.to_string())));
            }
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(not(feature = "postgres"))]
            return Err(Error::Unsupported("postgres"));
            #[cfg(feature = "postgres")]
            {
                super::PgTarget::parse(url).map_err(|e| bad(&e))?;
                return Ok(StorageUrl(Kind::Postgres(url.to_string())));
            }
        }
        Err(bad(
            "unknown scheme; expected sqlite:PATH, memory:, redis://host:port/db or \
             postgres://user@host:port/db",
        ))
    }
}

/// How the Redis URL forms are named in errors.
#[cfg(feature = "redis")]
pub(crate) const REDIS_FORMS: &str =
    "expected redis://host:port/db, rediss://… or redis+unix:///path";

#[cfg(feature = "redis")]
/// A Redis URL as the Redis client spells it (`redis+unix://` is its `unix://`).
pub(crate) fn redis_client_url(url: &str) -> String {
    match url.strip_prefix("redis+unix://") {
        Some(rest) => format!("unix://{rest}"),
        None => url.to_string(),
    }
}

#[cfg(feature = "sqlite")]
/// SQLite options from a URL's query: `synchronous=off|normal|full`, `busy_timeout=SECS`.
fn sqlite_options(query: &str) -> std::result::Result<SqliteOptions, String> {
    let mut opts = SqliteOptions::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "synchronous" => {
                opts.synchronous = match v.to_ascii_lowercase().as_str() {
                    "off" => Synchronous::Off,
                    "normal" => Synchronous::Normal,
                    "full" => Synchronous::Full,
                    _ => return Err(format!("synchronous={v}: expected off, normal or full")),
                }
            }
            "busy_timeout" => {
                opts.busy_timeout = seconds(v)
                    .ok_or_else(|| format!("busy_timeout={v}: expected a number of seconds"))?;
                if opts.busy_timeout > MAX_BUSY_TIMEOUT {
                    return Err(format!(
                        "busy_timeout={v}: at most {} seconds",
                        MAX_BUSY_TIMEOUT.as_secs()
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "unknown option {k:?}; SQLite URLs take synchronous and busy_timeout"
                ))
            }
        }
    }
    Ok(opts)
}

/// SQLite takes its busy timeout in milliseconds as a 32-bit number.
#[cfg(feature = "sqlite")]
const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// A non-negative number of seconds: decimals exactly (so what [`StorageUrl`]'s `Display`
/// writes reads back the same), anything else a float parses as closely as a float can.
#[cfg(feature = "sqlite")]
fn seconds(v: &str) -> Option<Duration> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !whole.is_empty() && digits(whole) && digits(frac) && frac.len() <= 9 {
        let secs: u64 = whole.parse().ok()?;
        let nanos: u32 = format!("{frac:0<9}").parse().ok()?;
        return Some(Duration::new(secs, nanos));
    }
    v.parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Memory => f.write_str("memory:"),
            #[cfg(feature = "redis")]
            Kind::Redis(url) => f.write_str(url),
            #[cfg(feature = "postgres")]
            Kind::Postgres(url) => f.write_str(url),
            #[cfg(feature = "sqlite")]
            Kind::Sqlite { path, options } => {
                // A path that starts with `//` keeps it behind the `//` the parser strips.
                let slashes = if path.starts_with("//") { "//" } else { "" };
                write!(f, "sqlite:{slashes}{path}")?;
                let defaults = SqliteOptions::default();
                let mut sep = '?';
                if options.synchronous != defaults.synchronous {
                    let s = match options.synchronous {
                        Synchronous::Off => "off",
                        Synchronous::Normal => "normal",
                        Synchronous::Full => "full",
                    };
                    write!(f, "{sep}synchronous={s}")?;
                    sep = '&';
                }
                let t = options.busy_timeout;
                if t != defaults.busy_timeout {
                    write!(f, "{sep}busy_timeout={}", t.as_secs())?;
                    if t.subsec_nanos() > 0 {
                        let frac = format!("{:09}", t.subsec_nanos());
                        write!(f, ".{}", frac.trim_end_matches('0'))?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> StorageUrl {
        s.parse().unwrap()
    }

    #[test]
    #[cfg(all(feature = "sqlite", feature = "redis", feature = "postgres"))]
    fn urls_write_back_to_what_they_parse_from() {
        for (given, written) in [
            ("memory:", "memory:"),
            ("memory://", "memory:"),
            ("sqlite:huey.db", "sqlite:huey.db"),
            ("sqlite://huey.db", "sqlite:huey.db"),
            ("sqlite:/var/q.db?synchronous=normal", "sqlite:/var/q.db"),
            ("sqlite:////abs", "sqlite:////abs"),
            (
                "sqlite:q.db?busy_timeout=0.000000001&synchronous=FULL",
                "sqlite:q.db?synchronous=full&busy_timeout=0.000000001",
            ),
            (
                "sqlite:q.db?busy_timeout=2.50",
                "sqlite:q.db?busy_timeout=2.5",
            ),
            (
                "sqlite:q.db?busy_timeout=1e1",
                "sqlite:q.db?busy_timeout=10",
            ),
            ("redis://u:p@h:1/2", "redis://u:p@h:1/2"),
            ("redis+unix:///s.sock?db=1", "redis+unix:///s.sock?db=1"),
            (
                "postgres://u:p@h:5433/db?schema=jobs",
                "postgres://u:p@h:5433/db?schema=jobs",
            ),
            (
                "postgresql:///db?host=/run/pg",
                "postgresql:///db?host=/run/pg",
            ),
        ] {
            let u = url(given);
            assert_eq!(u.to_string(), written, "{given}");
            assert_eq!(url(written), u, "{given}");
        }
        assert_eq!(url(DEFAULT_URL).backend(), "sqlite");
        let pg = url("postgres://h/db?schema=jobs");
        assert_eq!(pg.backend(), "postgres");
        assert_eq!(pg.postgres_schema().as_deref(), Some("jobs"));
        assert_eq!(
            url("postgresql://h/db").postgres_schema().as_deref(),
            Some("huey")
        );
    }

    #[test]
    #[cfg(all(feature = "sqlite", feature = "redis", feature = "postgres"))]
    fn bad_urls_say_what_is_expected() {
        for (given, needle) in [
            ("bogus://x", "unknown scheme"),
            ("sqlite:", "expected sqlite:PATH"),
            ("sqlite:q.db?busy_timeout=-1", "busy_timeout"),
            ("sqlite:q.db?busy_timeout=1e300", "busy_timeout"),
            ("sqlite:q.db?synchronous=sometimes", "synchronous"),
            ("sqlite:q.db?cache=big", "unknown option"),
            ("redis://h:notaport/0", "expected redis://"),
            ("postgres://h/db?schema=Jobs-1", "lowercase identifier"),
            (
                "postgres://h/db?sslmode=require&sslrootcert=/nonexistent.pem",
                "sslrootcert=/nonexistent.pem",
            ),
            ("postgres://h:notaport/db", "invalid"),
        ] {
            let e = given.parse::<StorageUrl>().unwrap_err();
            assert!(matches!(e, Error::StorageUrl { .. }), "{given}: {e}");
            assert!(e.to_string().contains(needle), "{given}: {e}");
        }
    }

    /// A producer-only build names the feature a URL needs (checked by `.ci/run` on a build
    /// with the SQLite storage only).
    #[test]
    #[cfg(not(all(feature = "sqlite", feature = "redis", feature = "postgres")))]
    fn a_storage_left_out_of_the_build_names_its_feature() {
        let missing = [
            ("sqlite:q.db", "sqlite", cfg!(feature = "sqlite")),
            ("redis://h:1/0", "redis", cfg!(feature = "redis")),
            ("postgres://h/db", "postgres", cfg!(feature = "postgres")),
        ];
        for (given, backend, built) in missing {
            match given.parse::<StorageUrl>() {
                Ok(u) => assert!(built && u.backend() == backend, "{given}"),
                Err(e) => {
                    assert!(!built, "{given}: {e}");
                    assert!(
                        matches!(e, Error::Unsupported(b) if b == backend),
                        "{given}: {e}"
                    );
                    let feature = format!("the `{backend}` feature");
                    assert!(e.to_string().contains(&feature), "{given}: {e}");
                }
            }
        }
        assert_eq!(url("memory:").backend(), "memory");
    }
}

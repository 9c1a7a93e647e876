//! A small pool of blocking Redis connections, and Redis errors turned into sentences.
//!
//! Each call takes a connection out of the pool for its duration, so a consumer blocked in
//! `BLPOP` holds its own connection and never delays another thread's acks. A connection that
//! failed with an I/O error is dropped together with every idle one (they most likely point at
//! the same dead server); the next call connects afresh.

use std::time::Duration;

use ::redis::{Client, Connection, ConnectionLike, RedisError};
use parking_lot::Mutex;

use crate::error::Error;

/// How long to wait for a TCP/Unix connection to be accepted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a quick command may take before the server counts as unresponsive.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept for reuse.
const MAX_IDLE: usize = 32;

pub struct Pool {
    client: Client,
    addr: String,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    pub fn new(client: Client) -> Pool {
        let addr = client.get_connection_info().addr().to_string();
        Pool {
            client,
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Where the server is, for messages.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn connect(&self) -> Result<Connection, RedisError> {
        let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        con.set_write_timeout(Some(COMMAND_TIMEOUT))?;
        Ok(con)
    }

    /// Run `f` on a connection. `idempotent` calls that fail on a reused connection because it
    /// broke are retried once on a fresh one (a server restart breaks every idle connection).
    pub fn run<T>(
        &self,
        idempotent: bool,
        mut f: impl FnMut(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, Error> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let pooled = self.idle.lock().pop();
            let reused = pooled.is_some();
            let mut con = match pooled {
                Some(con) => con,
                None => self.connect().map_err(|e| self.error(&e))?,
            };
            match f(&mut con) {
                Ok(v) => {
                    self.put_back(con);
                    return Ok(v);
                }
                Err(e) if is_broken(&e) => {
                    self.idle.lock().clear();
                    if !(idempotent && reused && attempts == 1) {
                        return Err(self.error(&e));
                    }
                }
                Err(e) => {
                    self.put_back(con);
                    return Err(self.error(&e));
                }
            }
        }
    }

    /// Run a blocking command that may last up to `block` on the server. Only for waits, which
    /// are safe to repeat.
    pub fn run_blocking<T>(
        &self,
        block: Duration,
        f: impl FnMut(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, Error> {
        self.blocking(true, block, f)
    }

    /// [`Pool::run_blocking`] without the silent retry on a fresh connection: a broken
    /// connection is reported. For result waits: their registration (`wt:<id>`) may have been
    /// lost with the server, so the caller must read and register again before blocking again.
    pub fn run_blocking_once<T>(
        &self,
        block: Duration,
        f: impl FnMut(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, Error> {
        self.blocking(false, block, f)
    }

    fn blocking<T>(
        &self,
        retry: bool,
        block: Duration,
        mut f: impl FnMut(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, Error> {
        self.run(retry, |con| {
            con.set_read_timeout(Some(block + COMMAND_TIMEOUT))?;
            let out = f(con);
            con.set_read_timeout(Some(COMMAND_TIMEOUT))?;
            out
        })
    }

    fn put_back(&self, con: Connection) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE && con.is_open() {
            idle.push(con);
        }
    }

    /// A Redis error as a sentence naming the server.
    pub fn error(&self, e: &RedisError) -> Error {
        let addr = &self.addr;
        let message = if e.is_connection_refusal() {
            format!(
                "cannot reach Redis at {addr}: connection refused (is redis-server running there?)"
            )
        } else if e.is_timeout() {
            format!("Redis at {addr} did not answer in time: {e}")
        } else if is_broken(e) {
            format!("lost the connection to Redis at {addr}: {e} (it reconnects on the next call)")
        } else {
            format!("Redis at {addr}: {e}")
        };
        Error::Storage {
            backend: "redis",
            message,
        }
    }
}

/// Errors after which the connection cannot be used again.
fn is_broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

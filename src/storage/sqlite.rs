//! SQLite storage (stub: filled in by the SQLite implementation).
use super::*;

/// How hard SQLite syncs to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    Off,
    #[default]
    Normal,
    Full,
}

/// Options for opening a SQLite storage.
#[derive(Debug, Clone, Default)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
}

/// Storage in one SQLite file.
pub struct SqliteStorage;

impl SqliteStorage {
    /// Open or create the database at `path`.
    pub fn open(_path: &str, _opts: SqliteOptions) -> Result<SqliteStorage> {
        Err(Error::Unsupported("sqlite"))
    }
}

impl Storage for SqliteStorage {
    fn backend(&self) -> &'static str {
        "sqlite"
    }
    fn apply(&self, _: Batch) -> Result<()> {
        unimplemented!()
    }
    fn dequeue(&self, _: &DequeueRequest) -> Result<Vec<Delivery>> {
        unimplemented!()
    }
    fn extend(&self, _: &[Lease], _: Duration) -> Result<()> {
        unimplemented!()
    }
    fn release(&self, _: &[Lease]) -> Result<()> {
        unimplemented!()
    }
    fn promote_due(&self, _: u64, _: usize) -> Result<usize> {
        unimplemented!()
    }
    fn next_eta(&self) -> Result<Option<u64>> {
        unimplemented!()
    }
    fn result(&self, _: &str, _: bool) -> Result<Option<Vec<u8>>> {
        unimplemented!()
    }
    fn wait_result(&self, _: &str, _: bool, _: Duration) -> Result<Option<Vec<u8>>> {
        unimplemented!()
    }
    fn delete_result(&self, _: &str) -> Result<bool> {
        unimplemented!()
    }
    fn get(&self, _: Ns, _: &str) -> Result<Option<Vec<u8>>> {
        unimplemented!()
    }
    fn put(&self, _: Ns, _: &str, _: &[u8], _: Option<Duration>) -> Result<()> {
        unimplemented!()
    }
    fn put_if_empty(&self, _: Ns, _: &str, _: &[u8], _: Option<Duration>) -> Result<bool> {
        unimplemented!()
    }
    fn take(&self, _: Ns, _: &str) -> Result<Option<Vec<u8>>> {
        unimplemented!()
    }
    fn list(&self, _: Ns) -> Result<Vec<(String, Vec<u8>)>> {
        unimplemented!()
    }
    fn incr(&self, _: &str, _: i64) -> Result<i64> {
        unimplemented!()
    }
    fn counts(&self) -> Result<Counts> {
        unimplemented!()
    }
    fn pending(&self, _: usize) -> Result<Vec<Vec<u8>>> {
        unimplemented!()
    }
    fn scheduled(&self, _: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        unimplemented!()
    }
    fn dead(&self, _: usize) -> Result<Vec<DeadLetter>> {
        unimplemented!()
    }
    fn retry_dead(&self, _: Option<&[String]>) -> Result<usize> {
        unimplemented!()
    }
    fn flush(&self, _: Flush) -> Result<()> {
        unimplemented!()
    }
}

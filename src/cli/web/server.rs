//! The dashboard's connection loop. Every connection is bounded in time and in number, so
//! idle or slow clients (a slowloris, a port scanner, a browser's spare sockets) cannot hold
//! the server's sockets or file descriptors: a request head must arrive within
//! [`HEADER_TIMEOUT`] of the connection opening or of the previous response (an idle
//! keep-alive connection is closed after that long), and at most [`MAX_CONNECTIONS`] are
//! served at once (more wait in the listen backlog until one ends).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// How long a client has to send a request's head.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's body (POSTs are at most 16 KiB).
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// How long open requests may take to finish once the server is told to stop.
const DRAIN: Duration = Duration::from_secs(5);

/// Serve `app` on `listener` until `stop` resolves; then finish the requests in progress.
pub(crate) async fn serve(listener: TcpListener, app: Router, stop: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (closing, closed) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = &mut stop => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a little rather than spin.
                    tracing::debug!("accepting a dashboard connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = closed.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!("dashboard connection ended: {e}");
            }
        });
    }
    let _ = closing.send(true);
    // Every connection holds a slot until it ends: wait (a little) for all of them.
    let _ = tokio::time::timeout(DRAIN, slots.acquire_many(MAX_CONNECTIONS as u32)).await;
}

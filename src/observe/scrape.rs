//! The HTTP server of `--metrics-bind`: `GET /metrics` answers the consumer's metrics as
//! OpenMetrics text. Each connection is answered on a short-lived thread of its own, at most
//! [`MAX_CLIENTS`] at once, and a client has [`REQUEST_TIMEOUT`] in all to send its request:
//! a slow or idle client (or a few) cannot keep Prometheus from scraping.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metrics::Metrics;
use crate::error::{Error, Result};

/// Connections answered at once; more are closed unanswered until one ends.
pub const MAX_CLIENTS: usize = 8;
/// How long a client has to send its whole request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics server started by [`serve_metrics`]; dropping it stops the server.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept (on loopback when listening on every interface); the thread sees
        // the flag and ends.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serve `metrics` at `http://addr/metrics` until the returned server is dropped. A port of 0
/// picks a free one.
pub fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<MetricsServer> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::Config(format!("--metrics-bind {addr}: cannot listen: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("reading the metrics address", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("huey-metrics".into())
        .spawn(move || accept(listener, &stopped, &metrics))
        .map_err(|e| Error::io("starting the metrics thread", e))?;
    Ok(MetricsServer {
        addr: bound,
        stop,
        thread: Some(thread),
    })
}

fn accept(listener: TcpListener, stopped: &AtomicBool, metrics: &Arc<Metrics>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stopped.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, most likely: do not spin.
                tracing::debug!("accepting a metrics connection failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!("{MAX_CLIENTS} metrics requests in progress: a connection closed");
            continue;
        }
        let (done, metrics) = (busy.clone(), metrics.clone());
        let spawned = std::thread::Builder::new()
            .name("huey-metrics-req".into())
            .spawn(move || {
                if let Err(e) = answer(stream, &metrics) {
                    tracing::debug!("metrics request failed: {e}");
                }
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            tracing::debug!("could not start a metrics request thread: {e}");
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A stream read until a deadline: each read waits only for the time left.
struct Until {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for Until {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// Answer one HTTP request: `GET /metrics` gets the metrics, anything else a 404 or 405.
fn answer(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let until = Until {
        stream: stream.try_clone()?,
        deadline: Instant::now() + REQUEST_TIMEOUT,
    };
    // The request head is read up to 16 KiB: a longer one is cut off, not buffered.
    let mut reader = BufReader::new(until.take(16 << 10));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Skip the headers (bounded: a request is small).
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (_, "/metrics") => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
        _ => ("404 Not Found", "text/plain", "see /metrics\n".into()),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_answers_other_requests_with_an_error_and_stops_when_dropped() {
        let server =
            serve_metrics("127.0.0.1:0".parse().unwrap(), Arc::new(Metrics::new())).unwrap();
        let addr = server.addr();
        let ok = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(
            ok.contains("application/openmetrics-text") && ok.ends_with("# EOF\n"),
            "{ok}"
        );
        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // Garbage, a huge request line and an early hang-up do not stop the server.
        get(addr, "\u{0}\u{1}garbage\r\n\r\n");
        let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "x".repeat(1 << 20));
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(huge.as_bytes());
        drop(s);
        drop(TcpStream::connect(addr).unwrap());
        assert!(get(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
        drop(server);
        // The port is free again.
        TcpListener::bind(addr).unwrap();
    }

    #[test]
    fn idle_and_dripping_clients_do_not_hold_up_a_scrape() {
        let server =
            serve_metrics("127.0.0.1:0".parse().unwrap(), Arc::new(Metrics::new())).unwrap();
        let addr = server.addr();
        // Clients that connect and send nothing, or half a request line.
        let mut idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        idle[0].write_all(b"GET /met").unwrap();
        // A client that drips a byte at a time, well within any per-read timeout.
        let mut drip = TcpStream::connect(addr).unwrap();
        let dripping = std::thread::spawn(move || {
            let started = Instant::now();
            while started.elapsed() < REQUEST_TIMEOUT * 3 {
                if drip.write_all(b"x").is_err() {
                    return started.elapsed();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            started.elapsed()
        });
        // A scrape meanwhile is answered at once.
        let started = Instant::now();
        assert!(get(addr, "GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(
            started.elapsed() < REQUEST_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        // The dripping client is cut off at the request deadline, not served forever.
        let held = dripping.join().unwrap();
        assert!(held < REQUEST_TIMEOUT * 3, "dripped for {held:?}");
        // The idle ones are closed too.
        let mut buf = [0u8; 64];
        idle[1].set_read_timeout(Some(REQUEST_TIMEOUT * 2)).unwrap();
        let r = idle[1].read(&mut buf);
        let reset = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionReset;
        assert!(matches!(r, Ok(0)) || r.as_ref().is_err_and(reset), "{r:?}");
    }
}

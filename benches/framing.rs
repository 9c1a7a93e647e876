//! Worker pipe frames (`huey::__bench`): what the supervisor and a process worker exchange
//! for every task, written to and read from an in-memory buffer. `cargo bench --bench framing`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use huey::__bench::{read_frame, write_frame, FromWorker, ToWorker};
use huey::message::Message;
use huey::message::Output;

fn run_frame(payload_len: usize) -> ToWorker {
    let msg = Message::new("echo", vec![7u8; payload_len], Default::default());
    ToWorker::Run {
        job: 42,
        payload: msg.encode().unwrap(),
    }
}

fn done_frame() -> FromWorker {
    FromWorker::Done {
        job: 42,
        outcome: Ok(Output {
            value: postcard::to_allocvec(&"hello".to_string()).unwrap(),
            is_empty: false,
        }),
        rss_kib: 7_500,
    }
}

fn bench_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for len in [0usize, 4096] {
        let f = run_frame(len);
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &f).unwrap();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("write_run", len), &f, |b, f| {
            let mut buf = Vec::with_capacity(bytes.len());
            b.iter(|| {
                buf.clear();
                write_frame(&mut buf, black_box(f)).unwrap();
            })
        });
        g.bench_with_input(BenchmarkId::new("read_run", len), &bytes, |b, bytes| {
            b.iter(|| read_frame::<ToWorker>(&mut black_box(&bytes[..])).unwrap())
        });
    }
    let done = done_frame();
    let mut bytes = Vec::new();
    write_frame(&mut bytes, &done).unwrap();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("write_done", |b| {
        let mut buf = Vec::with_capacity(bytes.len());
        b.iter(|| {
            buf.clear();
            write_frame(&mut buf, black_box(&done)).unwrap();
        })
    });
    g.bench_function("read_done", |b| {
        b.iter(|| read_frame::<FromWorker>(&mut black_box(&bytes[..])).unwrap())
    });
    // One task's round trip: Run frame out, Done frame back.
    let run = run_frame(16);
    g.throughput(Throughput::Elements(1));
    g.bench_function("round_trip", |b| {
        let mut buf = Vec::with_capacity(256);
        b.iter(|| {
            buf.clear();
            write_frame(&mut buf, &run).unwrap();
            write_frame(&mut buf, &done).unwrap();
            let mut r = &buf[..];
            let a = read_frame::<ToWorker>(&mut r).unwrap();
            let d = read_frame::<FromWorker>(&mut r).unwrap();
            black_box((a, d))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_frames);
criterion_main!(benches);

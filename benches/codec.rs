//! Wire codecs: the message envelope written by producers and read by consumers, and the
//! stored result written after each task. `cargo bench --bench codec`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use huey::message::StoredResult;
use huey::message::{Message, MessageOptions};
use huey::task::{FailureKind, TaskError};

fn message(args_len: usize) -> Message {
    Message::new("echo", vec![7u8; args_len], MessageOptions::default())
}

fn bench_message(c: &mut Criterion) {
    let mut g = c.benchmark_group("message");
    for len in [0usize, 64, 4096] {
        let m = message(len);
        let bytes = m.encode().unwrap();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("encode", len), &m, |b, m| {
            b.iter(|| black_box(m).encode().unwrap())
        });
        g.bench_with_input(BenchmarkId::new("decode", len), &bytes, |b, bytes| {
            b.iter(|| Message::decode(black_box(bytes)).unwrap())
        });
    }
    // A pipeline message: one continuation nested in the envelope.
    let mut m = message(16);
    m.on_complete = Some(Box::new(message(16)));
    let bytes = m.encode().unwrap();
    g.bench_function("encode/pipeline", |b| {
        b.iter(|| black_box(&m).encode().unwrap())
    });
    g.bench_function("decode/pipeline", |b| {
        b.iter(|| Message::decode(black_box(&bytes)).unwrap())
    });
    g.finish();
}

fn bench_result(c: &mut Criterion) {
    let mut g = c.benchmark_group("stored_result");
    let ok = StoredResult::Ok {
        task: "echo".into(),
        value: postcard::to_allocvec(&"hello from huey".to_string()).unwrap(),
    };
    let err = StoredResult::Err(TaskError {
        id: huey::message::new_id(),
        task: "fail".into(),
        attempt: 3,
        kind: FailureKind::Error,
        message: "this one fails on purpose".into(),
    });
    for (name, r) in [("ok", ok), ("err", err)] {
        let bytes = r.encode();
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| black_box(&r).encode())
        });
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| StoredResult::decode(black_box(&bytes)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench_message, bench_result);
criterion_main!(benches);

//! Cases of chord counts: the batch part that counts a chord's members and, with the last one,
//! makes the callback ready with every member's item, in the same atomic write.

use super::*;

const TTL: Duration = Duration::from_secs(600);
pub(super) const CALLBACKS: &str = "callbacks";

/// A callback message, and its storage form split by hand as `ChordCallback` documents: the
/// envelope up to the arguments, and after them.
pub(super) fn callback() -> (Message, ChordCallback) {
    let msg = Message::new(
        "collect",
        b"not used".to_vec(),
        MessageOptions {
            priority: 4,
            queue: CALLBACKS.into(),
            ..MessageOptions::default()
        },
    );
    let bare = Message {
        args: Vec::new(),
        ..msg.clone()
    }
    .encode()
    .unwrap();
    // The version byte, then id and task (each a length and its bytes), then the arguments.
    let head = 1
        + postcard::to_allocvec(&msg.id).unwrap().len()
        + postcard::to_allocvec(&msg.task).unwrap().len();
    assert_eq!(bare[head], 0, "no arguments: one zero length byte");
    let cb = ChordCallback {
        id: msg.id.clone(),
        queue: CALLBACKS.into(),
        priority: 4,
        payload_head: bare[..head].to_vec(),
        payload_tail: bare[head + 1..].to_vec(),
        args_head: b"<".to_vec(),
        args_tail: b">".to_vec(),
        missing: b"?".to_vec(),
    };
    let made = ChordCallback::for_message(&msg, b"<".to_vec(), b">".to_vec(), b"?".to_vec());
    assert_eq!(made.unwrap(), cb);
    (msg, cb)
}

pub(super) fn member(
    cb: &ChordCallback,
    chord: &str,
    index: u32,
    size: u32,
    outcome: &[u8],
) -> ChordCount {
    ChordCount {
        chord: chord.into(),
        index,
        size,
        outcome: outcome.to_vec(),
        ttl: TTL,
        callback: cb.clone(),
    }
}

fn count(s: &dyn Storage, chords: Vec<ChordCount>) {
    s.apply(&Batch {
        chords,
        ..Batch::default()
    })
    .unwrap();
}

fn item(i: u32) -> Vec<u8> {
    format!("item {i};").into_bytes()
}

/// The payloads made ready on the callbacks' queue so far (taken off it).
fn callbacks(s: &dyn Storage) -> Vec<Vec<u8>> {
    let ds = s
        .dequeue(&request("c", &[CALLBACKS], 100, LONG_LEASE))
        .unwrap();
    ack(s, ds.iter().map(|d| d.lease.clone()).collect());
    ds.into_iter().map(|d| d.payload).collect()
}

/// What `Message::encode` gives for the callback with these items as its arguments.
fn encoded(msg: &Message, items: &[Vec<u8>]) -> Vec<u8> {
    let mut args = b"<".to_vec();
    for i in items {
        args.extend_from_slice(i);
    }
    args.extend_from_slice(b">");
    Message {
        args,
        ..msg.clone()
    }
    .encode()
    .unwrap()
}

#[test]
fn chord_callback_is_enqueued_once_with_items_in_member_order() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    let (msg, cb) = callback();
    for (n, i) in [3, 0, 4, 1].into_iter().enumerate() {
        let h = if n % 2 == 0 { &a } else { &b };
        count(&**h, vec![member(&cb, "c1", i, 5, &item(i))]);
        assert_eq!(
            a.counts().unwrap().ready,
            0,
            "nothing before the last member"
        );
    }
    enqueue(&*a, vec![ready("low", CALLBACKS, 0)]);
    count(&*b, vec![member(&cb, "c1", 2, 5, &item(2))]);
    let ds = a
        .dequeue(&request("c", &[CALLBACKS], 1, LONG_LEASE))
        .unwrap();
    assert_eq!(ds.len(), 1);
    let all: Vec<Vec<u8>> = (0..5).map(item).collect();
    assert_eq!(
        ds[0].payload,
        encoded(&msg, &all),
        "ahead of 'low': its priority"
    );
    assert_eq!(ds[0].queue, CALLBACKS);
    assert_eq!(callbacks(&*a), [b"low".to_vec()]);
    // Every member finishing again (redelivered after a lost lease) counts for nothing.
    count(
        &*a,
        (0..5).map(|i| member(&cb, "c1", i, 5, b"again")).collect(),
    );
    assert!(callbacks(&*b).is_empty());
}

#[test]
fn chord_member_counted_twice_counts_once() {
    let s = crate::factory();
    let s = s();
    let (msg, cb) = callback();
    count(&*s, vec![member(&cb, "c2", 0, 3, &item(0))]);
    count(&*s, vec![member(&cb, "c2", 0, 3, b"second run")]);
    count(
        &*s,
        vec![
            member(&cb, "c2", 1, 3, &item(1)),
            member(&cb, "c2", 1, 3, b"second run"),
        ],
    );
    assert!(callbacks(&*s).is_empty(), "two of three members counted");
    count(&*s, vec![member(&cb, "c2", 2, 3, &item(2))]);
    let all: Vec<Vec<u8>> = (0..3).map(item).collect();
    assert_eq!(callbacks(&*s), [encoded(&msg, &all)]);
}

#[test]
fn chord_counted_in_one_batch_fires_once() {
    let s = crate::factory();
    let s = s();
    let (msg, cb) = callback();
    count(
        &*s,
        (0..4).map(|i| member(&cb, "c3", i, 4, &item(i))).collect(),
    );
    let all: Vec<Vec<u8>> = (0..4).map(item).collect();
    assert_eq!(callbacks(&*s), [encoded(&msg, &all)]);
}

#[test]
fn chord_item_that_is_gone_is_replaced_by_missing() {
    let s = crate::factory();
    let s = s();
    let (msg, cb) = callback();
    count(&*s, vec![member(&cb, "c4", 1, 3, &item(1))]);
    let mut short = member(&cb, "c4", 0, 3, &item(0));
    short.ttl = SHORT_LEASE;
    count(&*s, vec![short]);
    sleep_past(SHORT_LEASE);
    count(&*s, vec![member(&cb, "c4", 2, 3, &item(2))]);
    let items = [b"?".to_vec(), item(1), item(2)];
    assert_eq!(callbacks(&*s), [encoded(&msg, &items)]);
}

#[test]
fn large_chord_fires_after_its_last_member_only() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    let (msg, cb) = callback();
    const SIZE: u32 = 1000;
    // 40 bytes an item: the arguments pass 16 KiB, so their length takes a 3-byte varint.
    let item = |i: u32| format!("{i:>39};").into_bytes();
    // Every member but the last, in a scrambled order, 50 a batch, from two handles.
    let order: Vec<u32> = (0..SIZE)
        .map(|k| k * 7919 % SIZE)
        .filter(|&i| i != 500)
        .collect();
    for (n, chunk) in order.chunks(50).enumerate() {
        let h = if n % 2 == 0 { &a } else { &b };
        count(
            &**h,
            chunk
                .iter()
                .map(|&i| member(&cb, "big", i, SIZE, &item(i)))
                .collect(),
        );
        assert_eq!(
            b.counts().unwrap().ready,
            0,
            "nothing before the last member"
        );
    }
    count(&*b, vec![member(&cb, "big", 500, SIZE, &item(500))]);
    let all: Vec<Vec<u8>> = (0..SIZE).map(item).collect();
    let got = callbacks(&*a);
    assert_eq!(got.len(), 1);
    assert!(got[0].len() > 40_000);
    assert_eq!(got[0], encoded(&msg, &all));
}

#[test]
fn chord_bookkeeping_is_flushed_with_kv_and_apart_from_app_data() {
    let s = crate::factory();
    let s = s();
    let (msg, cb) = callback();
    count(&*s, vec![member(&cb, "c5", 0, 2, &item(0))]);
    for ns in [Ns::Locks, Ns::Revoked, Ns::Claims, Ns::Data] {
        assert!(s.list(ns).unwrap().is_empty(), "{ns:?}");
    }
    // Flushing the other parts keeps the count.
    s.flush(Flush {
        kv: false,
        ..Flush::all()
    })
    .unwrap();
    count(&*s, vec![member(&cb, "c5", 1, 2, &item(1))]);
    assert_eq!(callbacks(&*s), [encoded(&msg, &[item(0), item(1)])]);
    // Flushing kv forgets marks, items and counts: the chord starts over.
    count(&*s, vec![member(&cb, "c6", 0, 2, &item(0))]);
    s.flush(Flush {
        kv: true,
        ..Flush::default()
    })
    .unwrap();
    count(&*s, vec![member(&cb, "c6", 1, 2, &item(1))]);
    assert!(callbacks(&*s).is_empty());
    count(&*s, vec![member(&cb, "c6", 0, 2, b"again")]);
    assert_eq!(
        callbacks(&*s),
        [encoded(&msg, &[b"again".to_vec(), item(1)])]
    );
}

#[test]
fn a_member_dead_lettered_by_the_storage_counts_as_a_failed_member() {
    let s = crate::factory();
    let s = s();
    let (callback_msg, _) = callback();
    let mut callback_msg = callback_msg;
    callback_msg.args = Vec::new();
    let mut member = Message::new("work", Vec::new(), MessageOptions::default());
    member.chord = Some(Box::new(huey::message::ChordMember {
        chord: "buried".into(),
        index: 0,
        size: 1,
        callback: callback_msg.clone(),
    }));
    enqueue(
        &*s,
        vec![huey::storage::Ready {
            id: member.id.clone(),
            queue: "default".into(),
            priority: 0,
            payload: member.encode().unwrap(),
        }],
    );
    let mut req = request("c", &["default"], 1, SHORT_LEASE);
    req.max_deliveries = 1;
    assert_eq!(s.dequeue(&req).unwrap().len(), 1);
    sleep_past(SHORT_LEASE); // its consumer was lost
    assert!(s.dequeue(&req).unwrap().is_empty(), "delivered too often");
    let dead = s.dead(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, member.id);

    // The chord completes: its callback gets the member as a failure.
    let cbs = callbacks(&*s);
    assert_eq!(cbs.len(), 1, "the callback was made ready once");
    let got = Message::decode(&cbs[0]).unwrap();
    assert_eq!(got.id, callback_msg.id);
    let outcomes: Vec<Result<u32, huey::TaskError>> = postcard::from_bytes(&got.args).unwrap();
    match &outcomes[..] {
        [Err(e)] => {
            assert_eq!(e.kind, huey::FailureKind::WorkerLost);
            assert_eq!(e.id, member.id);
        }
        other => panic!("expected one failed member, got {other:?}"),
    }
}

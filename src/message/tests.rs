use super::*;

/// A message as version 1 wrote it (no `unique` option), with its nesting.
#[derive(Serialize)]
struct MessageV1 {
    id: String,
    task: String,
    #[serde(with = "serde_bytes")]
    args: Vec<u8>,
    options: OptionsV1,
    attempt: u32,
    eta_ms: Option<u64>,
    enqueued_ms: u64,
    on_complete: Option<Box<MessageV1>>,
    on_error: Option<Box<MessageV1>>,
    chord: Option<Box<(String, u32, u32, MessageV1)>>,
}

fn v1(id: &str, priority: i32, next: Option<MessageV1>) -> MessageV1 {
    MessageV1 {
        id: id.into(),
        task: "add".into(),
        args: vec![1, 2, 3],
        options: OptionsV1 {
            retries: 3,
            retry_delay_ms: 250,
            retry_backoff: 2.0,
            priority,
            expires_at_ms: Some(9),
            timeout_ms: Some(1000),
            store_result: Some(true),
            store_errors_between_retries: true,
            queue: "q".into(),
        },
        attempt: 2,
        eta_ms: Some(7),
        enqueued_ms: 5,
        on_complete: next.map(Box::new),
        on_error: None,
        chord: None,
    }
}

#[test]
fn a_message_written_by_version_1_still_decodes() {
    let old = v1("a", 4, Some(v1("b", 5, None)));
    let mut bytes = vec![1u8];
    bytes.extend(postcard::to_allocvec(&old).unwrap());
    let m = Message::decode(&bytes).unwrap();
    assert_eq!((m.id.as_str(), m.options.priority), ("a", 4));
    assert_eq!(m.options.queue, "q");
    assert_eq!(m.options.timeout_ms, Some(1000));
    assert!(!m.options.unique);
    let next = m.on_complete.as_deref().unwrap();
    assert_eq!((next.id.as_str(), next.options.priority), ("b", 5));
    // Decoded once, it is written back in the current version and reads the same.
    let again = Message::decode(&m.encode().unwrap()).unwrap();
    assert_eq!(again, m);
    // A current message after a version-1 one on the same thread is not read as version 1.
    let mut cur = Message::new("x", vec![], Default::default());
    cur.options.unique = true;
    assert!(
        Message::decode(&cur.encode().unwrap())
            .unwrap()
            .options
            .unique
    );
}

#[test]
fn message_round_trips() {
    let mut m = Message::new(
        "add",
        postcard::to_allocvec(&(1i64, 2i64)).unwrap(),
        Default::default(),
    );
    m.on_complete = Some(Box::new(Message::new("echo", vec![], Default::default())));
    let bytes = m.encode().unwrap();
    assert_eq!(Message::decode(&bytes).unwrap(), m);
}

#[test]
fn garbage_truncation_and_versions_are_errors() {
    let m = Message::new("add", vec![1, 2, 3], Default::default());
    let bytes = m.encode().unwrap();
    for cut in 0..bytes.len() {
        assert!(
            Message::decode(&bytes[..cut]).is_err(),
            "prefix of {cut} bytes decoded"
        );
    }
    let mut newer = bytes.clone();
    newer[0] = VERSION + 1;
    assert!(Message::decode(&newer)
        .unwrap_err()
        .to_string()
        .contains("version"));
    let mut longer = bytes;
    longer.push(0);
    assert!(Message::decode(&longer).is_err());
    assert!(Message::decode(&[VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
}

/// A chain of `levels` messages below `leaf` through `on_complete`, as raw bytes (no deep
/// value is built).
fn chain_bytes(leaf: &Message, levels: usize) -> Vec<u8> {
    let bytes = leaf.encode().unwrap();
    // The body ends with three `None`s: on_complete, on_error, chord.
    let head = &bytes[1..bytes.len() - 3];
    let mut out = vec![VERSION];
    for _ in 0..levels {
        out.extend_from_slice(head);
        out.push(1);
    }
    out.extend_from_slice(head);
    out.extend([0, 0, 0]);
    out.extend(std::iter::repeat_n(0, 2 * levels));
    out
}

fn chain(levels: usize) -> Message {
    let mut m = Message::new("leaf", vec![], Default::default());
    for _ in 0..levels {
        let mut outer = Message::new("stage", vec![1], Default::default());
        outer.on_complete = Some(Box::new(m));
        m = outer;
    }
    m
}

#[test]
fn the_depth_limit_holds_for_encode_and_decode() {
    let ok = chain(MAX_DEPTH);
    assert_eq!(ok.depth(), MAX_DEPTH);
    let bytes = ok.encode().unwrap();
    assert_eq!(Message::decode(&bytes).unwrap(), ok);
    let deep = chain(MAX_DEPTH + 1);
    let e = deep.encode().unwrap_err().to_string();
    assert!(e.contains("nest"), "{e}");
    let leaf = Message::new("leaf", vec![], Default::default());
    assert_eq!(
        Message::decode(&chain_bytes(&leaf, MAX_DEPTH))
            .unwrap()
            .depth(),
        MAX_DEPTH
    );
    for levels in [MAX_DEPTH + 1, 300_000] {
        let e = Message::decode(&chain_bytes(&leaf, levels))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nest deeper"), "{e}");
    }
    // The refusal left nothing behind: the next decode starts at depth 0.
    assert_eq!(Message::decode(&bytes).unwrap(), ok);
    let mut member = Message::new("m", vec![], Default::default());
    member.chord = Some(Box::new(ChordMember {
        chord: "c".into(),
        index: 0,
        size: 1,
        callback: chain(MAX_DEPTH),
    }));
    assert!(member.encode().unwrap_err().to_string().contains("nest"));
}

#[test]
fn an_oversized_message_is_refused_both_ways() {
    let m = Message::new("echo", vec![0; MAX_MESSAGE_BYTES], Default::default());
    let e = m.encode().unwrap_err().to_string();
    assert!(e.contains("limit"), "{e}");
    let e = Message::decode(&vec![VERSION; MAX_MESSAGE_BYTES + 1]).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
}

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut rng = Noise(0x9e37_79b9_7f4a_7c15);
    let mut good = chain(3);
    good.on_error = Some(Box::new(chain(2)));
    let bytes = good.encode().unwrap();
    for round in 0..20_000 {
        let input = match round % 4 {
            0 => {
                let n = (rng.next() % 200) as usize;
                let mut b = rng.bytes(n);
                b.insert(0, VERSION);
                b
            }
            1 => bytes[..(rng.next() as usize % bytes.len())].to_vec(),
            2 => {
                let mut b = bytes.clone();
                for _ in 0..1 + rng.next() % 4 {
                    let i = rng.next() as usize % b.len();
                    b[i] = rng.next() as u8;
                }
                b
            }
            _ => {
                // Huge announced lengths: varints of 0xff.. where a length is read.
                let mut b = bytes.clone();
                let i = 1 + rng.next() as usize % (b.len() - 1);
                b.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0x0f]);
                b
            }
        };
        let _ = Message::decode(&input);
    }
}

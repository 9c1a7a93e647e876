//! How the scripts pack what they store and return: a ready message
//! (`<priority>|<#queue>|<#id>|<queue><id><payload>`), a lease
//! (`<seq>.<deliveries>.<token>`), and a dequeue's reply string.

use crate::storage::Ready;

/// The delivery count in a lease `<seq>.<deliveries>.<token>`.
pub(super) fn lease_deliveries(lease: &str) -> Option<u32> {
    let mut parts = lease.split('.');
    let (_seq, d, _token) = (parts.next()?, parts.next()?, parts.next()?);
    d.parse().ok()
}

/// A ready message packed the way the scripts store it:
/// `<priority>|<#queue>|<#id>|<queue><id><payload>`.
pub(super) fn pack(out: &mut Vec<u8>, r: &Ready) {
    use std::io::Write;
    out.clear();
    let _ = write!(out, "{}|{}|{}|", r.priority, r.queue.len(), r.id.len());
    out.extend_from_slice(r.queue.as_bytes());
    out.extend_from_slice(r.id.as_bytes());
    out.extend_from_slice(&r.payload);
}

/// The task id and payload of a packed message (no id and the whole value if it is not
/// packed).
pub(super) fn split_packed(packed: &[u8]) -> (String, Vec<u8>) {
    let (at, id_len) = match head_len(packed) {
        Some(h) => h,
        None => return (String::new(), packed.to_vec()),
    };
    let id = String::from_utf8_lossy(&packed[at - id_len..at]).into_owned();
    (id, packed[at..].to_vec())
}

/// The next delivery of a dequeue's reply string, taken off its front: the queue's number
/// (negative: over the delivery limit), the lease, the packed message. `None` if the string is
/// cut short or the lease is not text.
pub(super) fn next_delivery<'a>(rest: &mut &'a [u8]) -> Option<(i32, String, &'a [u8])> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        *rest = tail;
        Some(head)
    }
    fn u32_at(rest: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(rest, 4)?.try_into().ok()?) as usize)
    }
    let qi = i32::from_le_bytes(take(rest, 4)?.try_into().ok()?);
    let lease_len = u32_at(rest)?;
    let lease = std::str::from_utf8(take(rest, lease_len)?).ok()?.to_owned();
    let packed_len = u32_at(rest)?;
    Some((qi, lease, take(rest, packed_len)?))
}

/// Where the payload of a packed message starts, and the id's length before it.
fn head_len(packed: &[u8]) -> Option<(usize, usize)> {
    let mut fields = [0usize; 3];
    let mut at = 0;
    for (n, field) in fields.iter_mut().enumerate() {
        let len = packed[at..].iter().position(|&b| b == b'|')?;
        let text = std::str::from_utf8(&packed[at..at + len]).unwrap_or("");
        let parsed = if n == 0 {
            text.parse::<i64>().map(|_| 0)
        } else {
            text.parse::<usize>()
        };
        *field = parsed.ok()?;
        at += len + 1;
    }
    let start = at.saturating_add(fields[1]).saturating_add(fields[2]);
    (start <= packed.len()).then_some((start, fields[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply string as the dequeue script builds it.
    fn reply(items: &[(i32, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (qi, lease, packed) in items {
            out.extend(qi.to_le_bytes());
            out.extend((lease.len() as u32).to_le_bytes());
            out.extend(lease.as_bytes());
            out.extend((packed.len() as u32).to_le_bytes());
            out.extend(*packed);
        }
        out
    }

    #[test]
    fn a_dequeue_reply_reads_back_and_a_cut_one_is_refused() {
        let mut msg = Vec::new();
        pack(
            &mut msg,
            &Ready {
                id: "id-1".into(),
                queue: "q".into(),
                priority: -3,
                payload: vec![0, 255, b'|', 7],
            },
        );
        let blob = reply(&[
            (1, "0000000000000001.1.9", &msg),
            (-2, "0000000000000002.5.9", b""),
        ]);
        let mut rest = &blob[..];
        let (qi, lease, packed) = next_delivery(&mut rest).unwrap();
        assert_eq!((qi, lease.as_str()), (1, "0000000000000001.1.9"));
        assert_eq!(lease_deliveries(&lease), Some(1));
        assert_eq!(
            split_packed(packed),
            ("id-1".to_string(), vec![0, 255, b'|', 7])
        );
        let (qi, lease, packed) = next_delivery(&mut rest).unwrap();
        assert_eq!(
            (qi, lease_deliveries(&lease), packed),
            (-2, Some(5), &b""[..])
        );
        assert!(rest.is_empty());
        for cut in 1..blob.len() {
            let mut rest = &blob[..cut];
            let first = next_delivery(&mut rest);
            let whole = first.is_some() && next_delivery(&mut rest).is_some();
            assert!(!whole, "cut at {cut} of {} read as whole", blob.len());
        }
        let mut not_text = &reply(&[(1, "x", b"m")])[..];
        let mut bad = not_text.to_vec();
        bad[8] = 0xff;
        not_text = &bad[..];
        assert!(
            next_delivery(&mut not_text).is_none(),
            "a lease that is not text"
        );
    }
}

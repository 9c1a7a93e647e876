//! Cases of the schedule and results roles.

use super::*;

#[test]
fn due_schedule_entries_are_promoted_in_eta_order() {
    let s = crate::factory();
    let s = s();
    let now = now_ms();
    schedule(&*s, "third", now - 1_000);
    schedule(&*s, "first", now - 3_000);
    schedule(&*s, "future", now + 600_000);
    schedule(&*s, "second", now - 2_000);
    schedule(&*s, "fourth", now);
    enqueue(&*s, vec![ready("already", "default", 0)]);
    assert_eq!(s.promote_due(now, 100).unwrap(), 4);
    assert_eq!(s.counts().unwrap().scheduled, 1);
    let ds = s
        .dequeue(&request("c", &["default"], 10, LONG_LEASE))
        .unwrap();
    assert_eq!(
        names(&ds),
        ["already", "first", "second", "third", "fourth"]
    );
    assert_eq!(ds[1].deliveries, 1);
    assert_eq!(s.promote_due(now, 100).unwrap(), 0);
}

#[test]
fn promote_due_moves_at_most_max() {
    let s = crate::factory();
    let s = s();
    for i in 0..5 {
        schedule(&*s, &format!("s{i}"), 1_000 + i);
    }
    assert_eq!(s.promote_due(10_000, 2).unwrap(), 2);
    assert_eq!(s.scheduled(10).unwrap().len(), 3);
    assert_eq!(next_eta(&*s), Some(1_002));
    assert_eq!(s.promote_due(10_000, 0).unwrap(), 0);
    assert_eq!(s.promote_due(10_000, 10).unwrap(), 3);
    let ds = s
        .dequeue(&request("c", &["default"], 10, LONG_LEASE))
        .unwrap();
    assert_eq!(names(&ds), ["s0", "s1", "s2", "s3", "s4"]);
}

#[test]
fn the_earliest_scheduled_entry_is_listed_first() {
    let s = crate::factory();
    let s = s();
    assert_eq!(next_eta(&*s), None);
    schedule(&*s, "b", 5_000);
    schedule(&*s, "a", 3_000);
    schedule(&*s, "c", 9_000);
    assert_eq!(next_eta(&*s), Some(3_000));
    s.promote_due(4_000, 10).unwrap();
    assert_eq!(next_eta(&*s), Some(5_000));
}

#[test]
fn wait_result_wakes_when_result_is_written() {
    let s = crate::factory();
    for (waiter, writer) in [(s(), s()), {
        let one = s();
        (one.clone(), one)
    }] {
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            put_result(&*writer, "r1", b"value", None);
        });
        let start = Instant::now();
        let got = waiter
            .wait_result("r1", true, Duration::from_secs(10))
            .unwrap();
        let took = start.elapsed();
        t.join().unwrap();
        assert_eq!(got.as_deref(), Some(&b"value"[..]));
        assert!(took < PROMPTLY, "woke after {took:?}");
        // It was taken.
        assert_eq!(waiter.result("r1", false).unwrap(), None);
    }
}

#[test]
fn wait_result_times_out_with_none() {
    let s = crate::factory();
    let s = s();
    let start = Instant::now();
    assert_eq!(
        s.wait_result("missing", false, Duration::from_millis(150))
            .unwrap(),
        None
    );
    assert!(start.elapsed() >= Duration::from_millis(140));
    put_result(&*s, "there", b"v", None);
    assert_eq!(
        s.wait_result("there", false, Duration::ZERO).unwrap(),
        Some(b"v".to_vec())
    );
}

#[test]
fn take_result_is_destructive_and_preserve_is_not() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    put_result(&*a, "r", b"1", None);
    assert_eq!(b.result("r", false).unwrap(), Some(b"1".to_vec()));
    assert_eq!(b.result("r", false).unwrap(), Some(b"1".to_vec()));
    // Writing again replaces.
    put_result(&*a, "r", b"2", None);
    assert_eq!(b.result("r", true).unwrap(), Some(b"2".to_vec()));
    assert_eq!(a.result("r", true).unwrap(), None);
    assert_eq!(a.result("r", false).unwrap(), None);
}

#[test]
fn result_with_ttl_expires() {
    let s = crate::factory();
    let s = s();
    put_result(&*s, "short", b"v", Some(Duration::from_millis(150)));
    put_result(&*s, "long", b"v", Some(Duration::from_secs(600)));
    assert_eq!(s.result("short", false).unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.counts().unwrap().results, 2);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(s.result("short", false).unwrap(), None);
    assert_eq!(s.result("short", true).unwrap(), None);
    assert_eq!(s.result("long", false).unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.counts().unwrap().results, 1);
}

#[test]
fn delete_result_reports_whether_there_was_one() {
    let s = crate::factory();
    let s = s();
    put_result(&*s, "r", b"v", None);
    assert!(s.delete_result("r").unwrap());
    assert!(!s.delete_result("r").unwrap());
    assert_eq!(s.result("r", false).unwrap(), None);
}

#[test]
fn results_are_listed_in_id_order_a_page_at_a_time() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    for n in (0..30).rev() {
        put_result(&*a, &format!("r-{n:02}"), format!("{n}").as_bytes(), None);
    }
    put_result(&*a, "gone-soon", b"x", Some(Duration::from_millis(100)));
    // Results that leave meanwhile (taken, deleted, expired) are not listed, and their gaps
    // do not end a page early.
    for n in 5..15 {
        assert!(a.result(&format!("r-{n:02}"), true).unwrap().is_some());
    }
    assert!(a.delete_result("r-20").unwrap());
    thread::sleep(Duration::from_millis(200));
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = b.list_results(&after, 4).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        if seen.len() + page.len() < 19 {
            assert_eq!(page.len(), 4, "a short page before the end: {page:?}");
        }
        after = page.last().unwrap().0.clone();
        seen.extend(page);
    }
    let want: Vec<(String, Vec<u8>)> = (0..30)
        .filter(|n| !(5..15).contains(n) && *n != 20)
        .map(|n| (format!("r-{n:02}"), format!("{n}").into_bytes()))
        .collect();
    assert_eq!(seen, want);
    // Written again, an id is listed again; listing left everything in place.
    put_result(&*a, "r-07", b"again", None);
    let page = b.list_results("r-04", 2).unwrap();
    assert_eq!(page[0], ("r-07".to_string(), b"again".to_vec()));
    assert_eq!(page[1].0, "r-15");
    assert_eq!(b.list_results("", 1).unwrap()[0].0, "r-00");
    assert_eq!(b.list_results("", 0).unwrap(), vec![]);
}

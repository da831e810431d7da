use std::path::Path;
use std::time::Duration;

use crate::topology::output::TrySendError;
use crate::topology::tests::{batch, output, sink, start};

fn config(key: &str, dir: &Path, extra: &str) -> String {
    format!(
        r#"
[receivers.t_source]
key = "{key}"
[exporters.t_sink]
key = "{key}"
buffer = {{ type = "disk", path = "{}"{extra} }}
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
        dir.display()
    )
}

fn stalled(key: &str, dir: &Path, extra: &str) -> String {
    config(key, dir, extra).replace(
        &format!("[exporters.t_sink]\nkey = \"{key}\""),
        &format!("[exporters.t_sink]\nkey = \"{key}\"\ndelay_ms = 3600000"),
    )
}

fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn confirmed_batches_are_on_disk_and_reach_the_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&config("disk-ok", dir.path(), "")).await;
    let out = output("disk-ok");
    for _ in 0..3 {
        out.try_send(batch(5)).unwrap();
    }
    out.confirm().await.unwrap();
    assert!(segment_bytes(dir.path()) > 0);
    until("15 spans at the sink", || sink("disk-ok").0 == 15).await;
    drop(out);
    assert!(t.shutdown().await.drained);
    assert_eq!(sink("disk-ok").0, 15);
}

/// A crash (the tasks dropped without a shutdown) while the exporter is stuck: everything that
/// was confirmed is sent after the restart, and a record damaged on disk is skipped alone.
#[tokio::test]
async fn a_restart_replays_what_was_not_delivered_and_skips_a_corrupt_tail() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&stalled("disk-crash", dir.path(), "")).await;
    let out = output("disk-crash");
    for n in [1, 2, 3] {
        out.try_send(batch(n)).unwrap();
    }
    out.confirm().await.unwrap();
    drop(out);
    drop(t);

    let again = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), again.path().join(entry.file_name())).unwrap();
    }
    let t = start(&config("disk-replay", dir.path(), "")).await;
    until("6 spans replayed", || sink("disk-replay").0 == 6).await;
    until("the replayed segment deleted", || {
        segment_bytes(dir.path()) == 0
    })
    .await;
    drop(output("disk-replay"));
    assert!(t.shutdown().await.drained);

    // The copy, with the last record's last byte flipped: the first two records arrive.
    let seg = std::fs::read_dir(again.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let t = start(&config("disk-corrupt", again.path(), "")).await;
    until("3 spans of the intact records", || {
        sink("disk-corrupt").0 == 3
    })
    .await;
    let out = output("disk-corrupt");
    out.try_send(batch(4)).unwrap();
    out.confirm().await.unwrap();
    until("new spans after the corrupt segment", || {
        sink("disk-corrupt").0 == 7
    })
    .await;
    drop(out);
    assert!(t.shutdown().await.drained);
}

#[tokio::test]
async fn a_full_buffer_pushes_back_to_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&stalled("disk-full", dir.path(), r#", max_size = "1KiB""#)).await;
    let out = output("disk-full");
    let mut refused = false;
    for _ in 0..10_000 {
        match out.try_send(batch(20)) {
            Ok(()) => tokio::task::yield_now().await,
            Err(TrySendError::Full(_)) => {
                refused = true;
                break;
            }
            Err(err) => panic!("{err}"),
        }
    }
    assert!(refused, "the receiver was never refused");
    // Bounded: one group past the limit at most (an empty buffer takes a group of any size).
    assert!(segment_bytes(dir.path()) < 64 * 1024);
    drop(out);
    drop(t);
}

/// An exporter whose own shutdown fails (one that gave up on what it held at the deadline)
/// loses nothing behind a disk buffer, which only forgets what was delivered: the shutdown is
/// complete and the run exits 0.
#[tokio::test]
async fn an_exporter_giving_up_at_shutdown_leaves_its_records_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&config("disk-giveup", dir.path(), "").replace(
        "[exporters.t_sink]\nkey = \"disk-giveup\"",
        "[exporters.t_sink]\nkey = \"disk-giveup\"\nfail_shutdown = true",
    ))
    .await;
    let out = output("disk-giveup");
    out.try_send(batch(3)).unwrap();
    out.confirm().await.unwrap();
    until("3 spans at the sink", || sink("disk-giveup").0 == 3).await;
    drop(out);
    assert!(t.shutdown().await.drained);
}

/// Two buffers in one directory would interleave their segments and delete each other's
/// records: the second is refused with the directory named, and once the first has stopped the
/// directory is free again.
#[tokio::test]
async fn a_directory_in_use_by_another_buffer_is_refused_until_it_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(&config("disk-lock-a", dir.path(), "")).await;
    let text = config("disk-lock-b", dir.path(), "");
    let second = crate::topology::RunningTopology::start(
        crate::config::load_str(Path::new("test.toml"), &text).unwrap(),
        crate::health::Health::new(),
    )
    .await;
    let Err(err) = second else {
        panic!("a second buffer started in a directory in use");
    };
    let message = crate::error::error_chain(&err);
    assert!(message.contains("t_sink"), "{message}");
    assert!(
        message.contains("in use by another disk buffer"),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    drop(output("disk-lock-a"));
    assert!(first.shutdown().await.drained);
    let again = start(&config("disk-lock-c", dir.path(), "")).await;
    drop(output("disk-lock-c"));
    assert!(again.shutdown().await.drained);
}

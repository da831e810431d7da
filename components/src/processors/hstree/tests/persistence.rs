//! The saved model: round trips, refusals of damaged or foreign files, atomic writes.

use super::*;

#[test]
fn state_round_trips_and_the_restored_model_continues_identically() {
    for kind in [DetectorKind::Hstree, DetectorKind::P99] {
        let (mut a, mut rng) = trained_detector(|c| c.detector = kind);
        let mut b = detector(|c| c.detector = kind);
        b.restore(&a.to_bytes()).unwrap();
        assert_eq!(b.seen(), a.seen());
        assert_eq!(b.operations().len(), a.operations().len());
        for i in 0..2000 {
            let (op, dur) = healthy(&mut rng);
            let dur = if i % 50 == 0 { dur * 10 } else { dur };
            assert_eq!(
                a.observe(OPS[op].0, OPS[op].1, dur, i),
                b.observe(OPS[op].0, OPS[op].1, dur, i)
            );
        }
        assert!(a.to_bytes() == b.to_bytes(), "saved states differ");
    }
}

#[test]
fn corrupt_and_truncated_bytes_are_refused_and_leave_the_model_unchanged() {
    let (a, _) = trained_detector(|_| {});
    let bytes = a.to_bytes();
    let mut fresh = detector(|_| {});
    let before = fresh.to_bytes();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    for bad in [
        &flipped[..],
        &bytes[..bytes.len() - 1],
        &bytes[..10],
        b"not a model at all, not at all",
    ] {
        assert!(matches!(fresh.restore(bad), Err(DecodeError::Corrupt(_))));
        assert!(
            fresh.to_bytes() == before,
            "a refused file changed the model"
        );
    }
}

#[test]
fn a_file_written_with_other_parameters_is_incompatible() {
    let (a, _) = trained_detector(|_| {});
    let mut other = detector(|c| c.height = 9);
    match other.restore(&a.to_bytes()) {
        Err(DecodeError::Incompatible { key, file, config }) => {
            assert_eq!(
                (key, file.as_str(), config.as_str()),
                ("height", "Some(8)", "Some(9)")
            );
        }
        other => panic!("{other:?}"),
    }
    // Keys that do not shape the model may change.
    let mut relaxed = detector(|c| {
        c.mode = Mode::Drop;
        c.train_size = 5;
        c.min_score = Some(0.5);
    });
    relaxed.restore(&a.to_bytes()).unwrap();
}

#[test]
fn save_and_load_go_through_a_file_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let (a, _) = trained_detector(|_| {});
    a.save_to(&path).unwrap();
    assert!(!dir.path().join("model.bin.tmp").exists());
    let mut b = detector(|_| {});
    b.load_from(&path).unwrap();
    assert!(a.to_bytes() == b.to_bytes(), "loaded state differs");
    assert!(matches!(
        b.load_from(&dir.path().join("absent")),
        Err(StateError::Missing { .. })
    ));
}

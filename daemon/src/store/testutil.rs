//! Test helpers shared by the store's unit tests.

use std::future::Future;
use std::time::Duration;

use super::Store;

/// A store in a temporary directory that lives as long as the value.
pub(crate) struct TestStore {
    pub(crate) store: Store,
    pub(crate) _dir: tempfile::TempDir,
}

/// Opens a fresh store at `<tempdir>/edgeai.db`.
pub(crate) fn open_store() -> TestStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, report) = Store::open(&dir.path().join("edgeai.db")).expect("open store");
    assert_eq!(report.recovered_messages, 0);
    TestStore { store, _dir: dir }
}

/// Polls `probe` until it yields `Some`, for up to five seconds.
pub(crate) async fn wait_for<T, F, Fut>(probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..500 {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

/// Holds the writer thread inside a job until the returned sender sends or
/// is dropped; returns once the writer runs that job, so the writer queue's
/// places are all free for the test.
pub(crate) async fn hold_writer(store: &Store) -> std::sync::mpsc::Sender<()> {
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    store
        .submit(Box::new(move |_| {
            let _ = started_tx.send(());
            let _ = released.recv();
            super::writer::Done::unanswered(true)
        }))
        .expect("holding job queued");
    tokio::task::spawn_blocking(move || started.recv_timeout(Duration::from_secs(5)))
        .await
        .expect("join")
        .expect("the writer took the job");
    release
}

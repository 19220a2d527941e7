//! A fake systemd notify socket: a unix datagram socket whose path is given
//! to the daemon as NOTIFY_SOCKET. A thread records every datagram with the
//! time it arrived, so tests can assert READY=1, STATUS=, WATCHDOG=1 and
//! STOPPING=1 and their timing.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One datagram: its `KEY=value` lines.
#[derive(Debug, Clone)]
pub struct Notification {
    pub at: Instant,
    pub text: String,
}

impl Notification {
    /// The value of `key` in this datagram (`STATUS` → the status text).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.text.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    pub fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }
}

#[derive(Default)]
struct Received {
    list: Mutex<Vec<Notification>>,
    changed: Condvar,
}

/// The socket and what it received.
pub struct NotifySocket {
    path: PathBuf,
    received: Arc<Received>,
}

impl NotifySocket {
    /// Binds `dir/notify.sock` and starts recording.
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("binding the notify socket {}: {e}", path.display()));
        let received = Arc::new(Received::default());
        let r = Arc::clone(&received);
        std::thread::Builder::new()
            .name("notify-socket".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = sock.recv(&mut buf) {
                    let n = Notification { at: Instant::now(), text: String::from_utf8_lossy(&buf[..n]).into_owned() };
                    r.list.lock().unwrap_or_else(PoisonError::into_inner).push(n);
                    r.changed.notify_all();
                }
            })
            .expect("spawning the notify reader");
        NotifySocket { path, received }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything received so far, oldest first.
    pub fn all(&self) -> Vec<Notification> {
        self.received.list.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits for the first notification (from index `from` on) matching
    /// `pred`; panics, listing what arrived, after `timeout`.
    #[track_caller]
    pub fn wait_for(&self, from: usize, timeout: Duration, what: &str, pred: impl Fn(&Notification) -> bool) -> (usize, Notification) {
        let all = self.wait_for_count(1, timeout, what, |i, n| i >= from && pred(n));
        all.into_iter().next().expect("wait_for_count returns at least one")
    }

    /// Waits until `count` notifications match `pred(index, notification)`
    /// and returns them (with their indices); panics after `timeout`.
    #[track_caller]
    pub fn wait_for_count(
        &self,
        count: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(usize, &Notification) -> bool,
    ) -> Vec<(usize, Notification)> {
        let deadline = Instant::now() + timeout;
        let mut list = self.received.list.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let found: Vec<(usize, Notification)> =
                list.iter().enumerate().filter(|(i, n)| pred(*i, n)).map(|(i, n)| (i, n.clone())).collect();
            if found.len() >= count {
                return found;
            }
            let now = Instant::now();
            if now >= deadline {
                let got: Vec<String> = list.iter().map(|n| n.text.clone()).collect();
                drop(list);
                panic!("not {count} notification(s) {what} within {timeout:?}; received: {got:#?}");
            }
            list = self.received.changed.wait_timeout(list, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

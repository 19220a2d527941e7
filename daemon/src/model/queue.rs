//! The admission queue between request handlers and the inference thread,
//! fair between apps: each app has a lane, the inference thread takes jobs
//! round-robin across the lanes (so one app's flood cannot starve another
//! app's single request), an app runs at most `max_running_per_app` jobs at
//! once, queues at most `max_queued_per_app`, and all apps together queue at
//! most `model.queue_depth`. A job whose client went away while it waited
//! can be withdrawn at once, so it frees its place instead of holding it
//! until a slot opens. A place can be reserved before the job exists
//! ([`JobQueue::reserve`]), so a caller learns "queue full" before it writes
//! anything and cannot be refused after it has.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::{FinishReason, GenEvent, Job, ModelError};

/// The queue's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Places (waiting jobs and reservations) of all apps together.
    pub depth: usize,
    /// Places one app may hold.
    pub per_app_queued: usize,
    /// Jobs of one app the inference thread runs at once.
    pub per_app_running: usize,
}

pub(crate) struct JobQueue {
    state: Mutex<State>,
    ready: Condvar,
    limits: QueueLimits,
}

/// One app's jobs. A lane exists while it holds anything; so there are at
/// most as many lanes as apps with work.
struct Lane {
    app: Arc<str>,
    jobs: VecDeque<Job>,
    /// Places promised to [`Reservation`]s not yet used.
    reserved: usize,
    /// Jobs taken by the inference thread and not yet dropped.
    running: usize,
}

impl Lane {
    fn is_idle(&self) -> bool {
        self.jobs.is_empty() && self.reserved == 0 && self.running == 0
    }
}

struct State {
    lanes: Vec<Lane>,
    /// The lane after the one served last, where the next pop starts
    /// (round-robin). Not wrapped: a lane added since is looked at first.
    next: usize,
    closed: bool,
}

impl State {
    fn lane(&mut self, app: &str) -> Option<&mut Lane> {
        self.lanes.iter_mut().find(|l| &*l.app == app)
    }

    fn taken(&self) -> usize {
        self.lanes.iter().map(|l| l.jobs.len() + l.reserved).sum()
    }

    /// Drops lanes that hold nothing, keeping the round-robin position.
    fn prune(&mut self) {
        let mut i = 0;
        while i < self.lanes.len() {
            if self.lanes[i].is_idle() {
                self.lanes.remove(i);
                if self.next > i {
                    self.next -= 1;
                }
            } else {
                i += 1;
            }
        }
    }

    /// Whether some lane has a job its app may run now.
    fn runnable(&self, max_running: usize) -> bool {
        self.lanes.iter().any(|l| !l.jobs.is_empty() && l.running < max_running)
    }
}

/// What waiting for a job gave.
pub(crate) enum Pop {
    Job(Job),
    Timeout,
    Closed,
}

impl JobQueue {
    pub fn new(limits: QueueLimits) -> Self {
        let limits = QueueLimits {
            depth: limits.depth.max(1),
            per_app_queued: limits.per_app_queued.max(1),
            per_app_running: limits.per_app_running.max(1),
        };
        JobQueue { state: Mutex::new(State { lanes: Vec::new(), next: 0, closed: false }), ready: Condvar::new(), limits }
    }

    /// Reserves a place for a job of `app` to come, or says why not; never
    /// blocks. The place is freed when the reservation is dropped unused.
    pub fn reserve(self: &Arc<Self>, app: &str) -> Result<Reservation, ModelError> {
        let mut s = self.state.lock().map_err(|_| ModelError::ThreadGone)?;
        if s.closed {
            return Err(ModelError::ThreadGone);
        }
        if s.taken() >= self.limits.depth {
            return Err(ModelError::QueueFull { depth: self.limits.depth });
        }
        let per_app = self.limits.per_app_queued;
        let i = match s.lanes.iter().position(|l| &*l.app == app) {
            Some(i) => i,
            None => {
                s.lanes.push(Lane { app: Arc::from(app), jobs: VecDeque::new(), reserved: 0, running: 0 });
                s.lanes.len() - 1
            }
        };
        let lane = &mut s.lanes[i];
        if lane.jobs.len() + lane.reserved >= per_app {
            s.prune();
            return Err(ModelError::AppQueueFull { app: app.to_owned(), depth: per_app });
        }
        lane.reserved += 1;
        let app = Arc::clone(&lane.app);
        Ok(Reservation { queue: Some(Arc::clone(self)), app })
    }

    /// The next job round-robin across the apps, waiting up to `timeout`
    /// for one.
    pub fn pop_timeout(self: &Arc<Self>, timeout: Duration) -> Pop {
        let max = self.limits.per_app_running;
        let Ok(s) = self.state.lock() else { return Pop::Closed };
        let Ok((mut s, _)) = self.ready.wait_timeout_while(s, timeout, |s| !s.runnable(max) && !s.closed) else {
            return Pop::Closed;
        };
        match self.take(&mut s) {
            Some(j) => Pop::Job(j),
            None if s.closed => Pop::Closed,
            None => Pop::Timeout,
        }
    }

    /// The next job round-robin across the apps, if one may run now.
    pub fn try_pop(self: &Arc<Self>) -> Option<Job> {
        let mut s = self.state.lock().ok()?;
        self.take(&mut s)
    }

    /// Takes the first job of the first lane, from the round-robin
    /// position on, whose app is under its running limit.
    fn take(self: &Arc<Self>, s: &mut State) -> Option<Job> {
        let n = s.lanes.len();
        let max = self.limits.per_app_running;
        let i = (0..n).map(|k| (s.next + k) % n).find(|&i| !s.lanes[i].jobs.is_empty() && s.lanes[i].running < max)?;
        let lane = &mut s.lanes[i];
        let mut job = lane.jobs.pop_front()?;
        lane.running += 1;
        job.running = Some(Running { queue: Arc::downgrade(self), app: Arc::clone(&lane.app) });
        s.next = i + 1;
        Some(job)
    }

    /// Places taken now: jobs waiting and places reserved for jobs to come.
    pub fn queued(&self) -> usize {
        self.state.lock().map_or(0, |s| s.taken())
    }

    /// Places taken now by each app with any (bounded by the served apps).
    pub fn queued_by_app(&self) -> Vec<(Arc<str>, usize)> {
        self.state.lock().map_or_else(|_| Vec::new(), |s| s.lanes.iter().map(|l| (Arc::clone(&l.app), l.jobs.len() + l.reserved)).collect())
    }

    /// Removes every cancelled job and tells each it ended, cancelled.
    pub fn withdraw_cancelled(&self) -> usize {
        let Ok(mut s) = self.state.lock() else { return 0 };
        let mut gone = Vec::new();
        for lane in &mut s.lanes {
            lane.jobs.retain_mut(|j| {
                let keep = !j.cancel.is_cancelled();
                if !keep {
                    gone.push(j.events.clone());
                }
                keep
            });
        }
        s.prune();
        drop(s);
        for events in &gone {
            let _ = events.try_send(GenEvent::Done { reason: FinishReason::Cancelled, prompt_tokens: 0, completion_tokens: 0 });
        }
        gone.len()
    }

    /// No more jobs: the inference thread ends once it has none running.
    pub fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.closed = true;
        }
        self.ready.notify_all();
    }
}

/// A place in the queue, promised to one app; [`Reservation::push`] uses it.
pub(crate) struct Reservation {
    queue: Option<Arc<JobQueue>>,
    app: Arc<str>,
}

impl Reservation {
    /// Queues the job in the reserved place. Fails only when the inference
    /// thread has stopped (the queue was closed).
    pub fn push(mut self, job: Job) -> Result<(), ModelError> {
        let Some(q) = self.queue.take() else { return Err(ModelError::ThreadGone) };
        let mut s = q.state.lock().map_err(|_| ModelError::ThreadGone)?;
        let closed = s.closed;
        let Some(lane) = s.lane(&self.app) else { return Err(ModelError::ThreadGone) };
        lane.reserved = lane.reserved.saturating_sub(1);
        if closed {
            s.prune();
            return Err(ModelError::ThreadGone);
        }
        lane.jobs.push_back(job);
        drop(s);
        q.ready.notify_one();
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(q) = self.queue.take() {
            if let Ok(mut s) = q.state.lock() {
                if let Some(lane) = s.lane(&self.app) {
                    lane.reserved = lane.reserved.saturating_sub(1);
                }
                s.prune();
            }
        }
    }
}

/// Carried by a job the inference thread took: while it lives, the job
/// counts against its app's running limit.
pub(crate) struct Running {
    queue: Weak<JobQueue>,
    app: Arc<str>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(q) = self.queue.upgrade() else { return };
        if let Ok(mut s) = q.state.lock() {
            if let Some(lane) = s.lane(&self.app) {
                lane.running = lane.running.saturating_sub(1);
            }
            s.prune();
        }
        // A job of this app may be runnable again.
        q.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CancelFlag, Prompt, SamplingParams};

    fn job_tagged(tag: u32) -> (Job, tokio::sync::mpsc::Receiver<GenEvent>, CancelFlag) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let cancel = CancelFlag::default();
        let params = SamplingParams { temperature: 0.0, top_p: 1.0, top_k: 0, max_tokens: tag, seed: None, stop: vec![], grammar: None };
        (
            Job {
                prompt: Prompt { tokens: vec![] },
                params,
                grammar: None,
                cancel: cancel.clone(),
                events: tx,
                queued_at: std::time::Instant::now(),
                running: None,
            },
            rx,
            cancel,
        )
    }

    fn job() -> (Job, tokio::sync::mpsc::Receiver<GenEvent>, CancelFlag) {
        job_tagged(1)
    }

    fn queue(depth: usize) -> Arc<JobQueue> {
        Arc::new(JobQueue::new(QueueLimits { depth, per_app_queued: depth, per_app_running: 16 }))
    }

    #[test]
    fn full_queue_refuses_and_a_withdrawn_job_frees_its_place() {
        let q = queue(2);
        let (a, _ra, _) = job();
        let (b, mut rb, cancel_b) = job();
        let (c, _rc, _) = job();
        q.reserve("x").and_then(|r| r.push(a)).expect("room");
        q.reserve("y").and_then(|r| r.push(b)).expect("room");
        assert!(matches!(q.reserve("z").and_then(|r| r.push(c)), Err(ModelError::QueueFull { depth: 2 })));
        cancel_b.cancel();
        assert_eq!(q.withdraw_cancelled(), 1);
        assert!(matches!(rb.try_recv(), Ok(GenEvent::Done { reason: FinishReason::Cancelled, .. })));
        let (d, _rd, _) = job();
        q.reserve("z").and_then(|r| r.push(d)).expect("the withdrawn job's place is free");
    }

    #[test]
    fn pop_waits_then_times_out_and_close_ends_it() {
        let q = queue(1);
        assert!(matches!(q.pop_timeout(Duration::from_millis(10)), Pop::Timeout));
        let (a, _ra, _) = job();
        q.reserve("x").and_then(|r| r.push(a)).expect("room");
        assert!(matches!(q.pop_timeout(Duration::from_millis(10)), Pop::Job(_)));
        q.close();
        assert!(matches!(q.pop_timeout(Duration::from_secs(5)), Pop::Closed));
        let (b, _rb, _) = job();
        assert!(matches!(q.reserve("x").and_then(|r| r.push(b)), Err(ModelError::ThreadGone)));
    }

    #[test]
    fn a_reservation_holds_a_place_until_used_or_dropped() {
        let q = queue(1);
        let r = q.reserve("x").expect("room");
        assert_eq!(q.queued(), 1, "a reserved place is taken");
        assert!(matches!(q.reserve("x"), Err(ModelError::QueueFull { depth: 1 })), "the reserved place counts");
        let (a, _ra, _) = job();
        assert!(matches!(q.reserve("y").and_then(|r| r.push(a)), Err(ModelError::QueueFull { .. })));
        drop(r);
        assert!(q.queued_by_app().is_empty(), "an idle lane is dropped");
        let r = q.reserve("x").expect("a dropped reservation frees its place");
        let (b, _rb, _) = job();
        r.push(b).expect("a reserved place cannot be refused");
        assert!(matches!(q.reserve("x"), Err(ModelError::QueueFull { .. })), "the job now holds the place");
        assert!(q.try_pop().is_some());
        let r = q.reserve("x").expect("room again");
        q.close();
        let (c, _rc, _) = job();
        assert!(matches!(r.push(c), Err(ModelError::ThreadGone)));
    }

    #[test]
    fn a_flood_of_one_app_does_not_starve_another_apps_single_job() {
        let q = queue(16);
        let mut keep = Vec::new();
        for tag in 1..=5 {
            let (j, rx, _) = job_tagged(tag);
            keep.push(rx);
            q.reserve("flood").and_then(|r| r.push(j)).expect("room");
        }
        let (b, _rb, _) = job_tagged(100);
        q.reserve("single").and_then(|r| r.push(b)).expect("room");
        // FIFO would serve 1..=5 first; round-robin serves the single job second.
        let running: Vec<Job> = std::iter::from_fn(|| q.try_pop()).collect();
        let order: Vec<u32> = running.iter().map(|j| j.params.max_tokens).collect();
        assert_eq!(order, vec![1, 100, 2, 3, 4, 5]);
        assert_eq!(q.queued_by_app().len(), 2, "lanes live while their jobs run");
        drop(running);
        assert!(q.queued_by_app().is_empty(), "and go when they ended");
    }

    #[test]
    fn an_app_that_arrives_while_another_runs_is_served_next() {
        let q = Arc::new(JobQueue::new(QueueLimits { depth: 16, per_app_queued: 16, per_app_running: 1 }));
        let mut receivers = Vec::new();
        for tag in 1..=3 {
            let (j, rx, _) = job_tagged(tag);
            receivers.push(rx);
            q.reserve("flood").and_then(|r| r.push(j)).expect("room");
        }
        let first = q.try_pop().expect("the flood's first job runs");
        let (b, _rb, _) = job_tagged(100);
        q.reserve("late").and_then(|r| r.push(b)).expect("room");
        drop(first);
        let order: Vec<u32> = std::iter::from_fn(|| q.try_pop()).map(|j| j.params.max_tokens).collect();
        assert_eq!(order, vec![100, 2, 3], "the late app's job goes before the flood's second");
    }

    #[test]
    fn an_app_over_its_queue_share_is_refused_while_others_still_get_in() {
        let q = Arc::new(JobQueue::new(QueueLimits { depth: 4, per_app_queued: 2, per_app_running: 16 }));
        let _a1 = q.reserve("a").expect("room");
        let _a2 = q.reserve("a").expect("room");
        match q.reserve("a") {
            Err(ModelError::AppQueueFull { app, depth: 2 }) => assert_eq!(app, "a"),
            other => panic!("expected AppQueueFull, got {:?}", other.err()),
        }
        let _b1 = q.reserve("b").expect("another app still gets a place");
        let mut by_app = q.queued_by_app();
        by_app.sort();
        assert_eq!(by_app, vec![(Arc::from("a"), 2), (Arc::from("b"), 1)]);
    }

    #[test]
    fn an_app_at_its_running_limit_waits_until_one_of_its_jobs_ends() {
        let q = Arc::new(JobQueue::new(QueueLimits { depth: 8, per_app_queued: 8, per_app_running: 1 }));
        let mut receivers = Vec::new();
        for tag in [1, 2] {
            let (j, rx, _) = job_tagged(tag);
            receivers.push(rx);
            q.reserve("a").and_then(|r| r.push(j)).expect("room");
        }
        let first = q.try_pop().expect("the first job runs");
        assert!(q.try_pop().is_none(), "the app already runs its one job");
        assert!(matches!(q.pop_timeout(Duration::from_millis(10)), Pop::Timeout));
        let (b, _rb, _) = job_tagged(7);
        q.reserve("b").and_then(|r| r.push(b)).expect("room");
        assert_eq!(q.try_pop().map(|j| j.params.max_tokens), Some(7), "another app's job runs meanwhile");
        drop(first);
        assert_eq!(q.try_pop().map(|j| j.params.max_tokens), Some(2), "the app's next job runs once its first ended");
    }
}

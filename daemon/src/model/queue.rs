//! The admission queue between request handlers and the inference thread:
//! bounded by `model.queue_depth`, and a job whose client went away while it
//! waited can be withdrawn at once, so it frees its place instead of holding
//! it until a slot opens. A place can be reserved before the job exists
//! ([`JobQueue::reserve`]), so a caller learns "queue full" before it writes
//! anything and cannot be refused after it has.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{FinishReason, GenEvent, Job, ModelError};

pub(crate) struct JobQueue {
    state: Mutex<State>,
    ready: Condvar,
    depth: usize,
}

struct State {
    jobs: VecDeque<Job>,
    /// Places promised to [`Reservation`]s not yet used.
    reserved: usize,
    closed: bool,
}

/// What waiting for a job gave.
pub(crate) enum Pop {
    Job(Job),
    Timeout,
    Closed,
}

impl JobQueue {
    pub fn new(depth: usize) -> Self {
        JobQueue {
            state: Mutex::new(State { jobs: VecDeque::with_capacity(depth), reserved: 0, closed: false }),
            ready: Condvar::new(),
            depth,
        }
    }

    /// Reserves a place for a job to come, or says why not; never blocks.
    /// The place is freed when the reservation is dropped unused.
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation, ModelError> {
        let mut s = self.state.lock().map_err(|_| ModelError::ThreadGone)?;
        if s.closed {
            return Err(ModelError::ThreadGone);
        }
        if s.jobs.len() + s.reserved >= self.depth {
            return Err(ModelError::QueueFull { depth: self.depth });
        }
        s.reserved += 1;
        Ok(Reservation { queue: Some(Arc::clone(self)) })
    }

    fn unreserve(&self, s: &mut State) {
        s.reserved = s.reserved.saturating_sub(1);
    }

    /// The oldest job, waiting up to `timeout` for one.
    pub fn pop_timeout(&self, timeout: Duration) -> Pop {
        let Ok(s) = self.state.lock() else { return Pop::Closed };
        let Ok((mut s, _)) = self.ready.wait_timeout_while(s, timeout, |s| s.jobs.is_empty() && !s.closed) else {
            return Pop::Closed;
        };
        match s.jobs.pop_front() {
            Some(j) => Pop::Job(j),
            None if s.closed => Pop::Closed,
            None => Pop::Timeout,
        }
    }

    /// The oldest job, if one is waiting.
    pub fn try_pop(&self) -> Option<Job> {
        self.state.lock().ok()?.jobs.pop_front()
    }

    /// Places taken now: jobs waiting and places reserved for jobs to come.
    pub fn queued(&self) -> usize {
        self.state.lock().map_or(0, |s| s.jobs.len() + s.reserved)
    }

    /// Removes every cancelled job and tells each it ended, cancelled.
    pub fn withdraw_cancelled(&self) -> usize {
        let Ok(mut s) = self.state.lock() else { return 0 };
        let mut gone = Vec::new();
        s.jobs.retain_mut(|j| {
            let keep = !j.cancel.is_cancelled();
            if !keep {
                gone.push(j.events.clone());
            }
            keep
        });
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

/// A place in the queue, promised; [`Reservation::push`] uses it.
pub(crate) struct Reservation {
    queue: Option<Arc<JobQueue>>,
}

impl Reservation {
    /// Queues the job in the reserved place. Fails only when the inference
    /// thread has stopped (the queue was closed).
    pub fn push(mut self, job: Job) -> Result<(), ModelError> {
        let Some(q) = self.queue.take() else { return Err(ModelError::ThreadGone) };
        let mut s = q.state.lock().map_err(|_| ModelError::ThreadGone)?;
        q.unreserve(&mut s);
        if s.closed {
            return Err(ModelError::ThreadGone);
        }
        s.jobs.push_back(job);
        drop(s);
        q.ready.notify_one();
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(q) = self.queue.take() {
            if let Ok(mut s) = q.state.lock() {
                q.unreserve(&mut s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CancelFlag, Prompt, SamplingParams};

    fn job() -> (Job, tokio::sync::mpsc::Receiver<GenEvent>, CancelFlag) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let cancel = CancelFlag::default();
        let params = SamplingParams { temperature: 0.0, top_p: 1.0, top_k: 0, max_tokens: 1, seed: None, stop: vec![], grammar: None };
        (
            Job {
                prompt: Prompt { tokens: vec![] },
                params,
                grammar: None,
                cancel: cancel.clone(),
                events: tx,
                queued_at: std::time::Instant::now(),
            },
            rx,
            cancel,
        )
    }

    #[test]
    fn full_queue_refuses_and_a_withdrawn_job_frees_its_place() {
        let q = Arc::new(JobQueue::new(2));
        let (a, _ra, _) = job();
        let (b, mut rb, cancel_b) = job();
        let (c, _rc, _) = job();
        q.reserve().and_then(|r| r.push(a)).expect("room");
        q.reserve().and_then(|r| r.push(b)).expect("room");
        assert!(matches!(q.reserve().and_then(|r| r.push(c)), Err(ModelError::QueueFull { depth: 2 })));
        cancel_b.cancel();
        assert_eq!(q.withdraw_cancelled(), 1);
        assert!(matches!(rb.try_recv(), Ok(GenEvent::Done { reason: FinishReason::Cancelled, .. })));
        let (d, _rd, _) = job();
        q.reserve().and_then(|r| r.push(d)).expect("the withdrawn job's place is free");
    }

    #[test]
    fn pop_waits_then_times_out_and_close_ends_it() {
        let q = Arc::new(JobQueue::new(1));
        assert!(matches!(q.pop_timeout(Duration::from_millis(10)), Pop::Timeout));
        let (a, _ra, _) = job();
        q.reserve().and_then(|r| r.push(a)).expect("room");
        assert!(matches!(q.pop_timeout(Duration::from_millis(10)), Pop::Job(_)));
        q.close();
        assert!(matches!(q.pop_timeout(Duration::from_secs(5)), Pop::Closed));
        let (b, _rb, _) = job();
        assert!(matches!(q.reserve().and_then(|r| r.push(b)), Err(ModelError::ThreadGone)));
    }

    #[test]
    fn a_reservation_holds_a_place_until_used_or_dropped() {
        let q = Arc::new(JobQueue::new(1));
        let r = q.reserve().expect("room");
        assert_eq!(q.queued(), 1, "a reserved place is taken");
        assert!(matches!(q.reserve(), Err(ModelError::QueueFull { depth: 1 })), "the reserved place counts");
        let (a, _ra, _) = job();
        assert!(matches!(q.reserve().and_then(|r| r.push(a)), Err(ModelError::QueueFull { .. })));
        drop(r);
        let r = q.reserve().expect("a dropped reservation frees its place");
        let (b, _rb, _) = job();
        r.push(b).expect("a reserved place cannot be refused");
        assert!(matches!(q.reserve(), Err(ModelError::QueueFull { .. })), "the job now holds the place");
        assert!(q.try_pop().is_some());
        let r = q.reserve().expect("room again");
        q.close();
        let (c, _rc, _) = job();
        assert!(matches!(r.push(c), Err(ModelError::ThreadGone)));
    }
}

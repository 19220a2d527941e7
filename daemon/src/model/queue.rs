//! The admission queue between request handlers and the inference thread:
//! bounded by `model.queue_depth`, and a job whose client went away while it
//! waited can be withdrawn at once, so it frees its place instead of holding
//! it until a slot opens.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::{FinishReason, GenEvent, Job, ModelError};

pub(crate) struct JobQueue {
    state: Mutex<State>,
    ready: Condvar,
    depth: usize,
}

struct State {
    jobs: VecDeque<Job>,
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
        JobQueue { state: Mutex::new(State { jobs: VecDeque::with_capacity(depth), closed: false }), ready: Condvar::new(), depth }
    }

    /// Queues a job, or says why not; never blocks.
    pub fn push(&self, job: Job) -> Result<(), ModelError> {
        let mut s = self.state.lock().map_err(|_| ModelError::ThreadGone)?;
        if s.closed {
            return Err(ModelError::ThreadGone);
        }
        if s.jobs.len() >= self.depth {
            return Err(ModelError::QueueFull { depth: self.depth });
        }
        s.jobs.push_back(job);
        drop(s);
        self.ready.notify_one();
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CancelFlag, Prompt, SamplingParams};

    fn job() -> (Job, tokio::sync::mpsc::Receiver<GenEvent>, CancelFlag) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let cancel = CancelFlag::default();
        let params = SamplingParams { temperature: 0.0, top_p: 1.0, top_k: 0, max_tokens: 1, seed: None, stop: vec![] };
        (Job { prompt: Prompt { tokens: vec![] }, params, cancel: cancel.clone(), events: tx }, rx, cancel)
    }

    #[test]
    fn full_queue_refuses_and_a_withdrawn_job_frees_its_place() {
        let q = JobQueue::new(2);
        let (a, _ra, _) = job();
        let (b, mut rb, cancel_b) = job();
        let (c, _rc, _) = job();
        q.push(a).expect("room");
        q.push(b).expect("room");
        assert!(matches!(q.push(c), Err(ModelError::QueueFull { depth: 2 })));
        cancel_b.cancel();
        assert_eq!(q.withdraw_cancelled(), 1);
        assert!(matches!(rb.try_recv(), Ok(GenEvent::Done { reason: FinishReason::Cancelled, .. })));
        let (d, _rd, _) = job();
        q.push(d).expect("the withdrawn job's place is free");
    }

    #[test]
    fn pop_waits_then_times_out_and_close_ends_it() {
        let q = JobQueue::new(1);
        assert!(matches!(q.pop_timeout(Duration::from_millis(10)), Pop::Timeout));
        let (a, _ra, _) = job();
        q.push(a).expect("room");
        assert!(matches!(q.pop_timeout(Duration::from_millis(10)), Pop::Job(_)));
        q.close();
        assert!(matches!(q.pop_timeout(Duration::from_secs(5)), Pop::Closed));
        let (b, _rb, _) = job();
        assert!(matches!(q.push(b), Err(ModelError::ThreadGone)));
    }
}

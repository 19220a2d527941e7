//! Streaming of top-level answer nodes (and of workflow end nodes' llm
//! texts), as Dify's answer and end stream processors do: an answer's text
//! goes out as soon as the variables it references are known, and an llm's
//! text it references goes out chunk by chunk while the llm runs. A node
//! starts streaming only once every branching node above it (and every
//! earlier streaming node) has finished and it is still on a taken path, so
//! a branch not taken never shows text.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::graph::Workflow;
use super::super::vars::{render_value, Pool, Segment};
use super::super::{Event, Scope};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Live,
    Done,
}

#[derive(Debug)]
struct Cursor {
    /// Index into `wf.answers`.
    plan: usize,
    seg: usize,
    /// Bytes of the current variable segment already sent.
    sent: usize,
    state: State,
}

/// The streaming state of one run's top-level answers.
#[derive(Debug)]
pub(super) struct Streamer {
    wf: Arc<Workflow>,
    cursors: Vec<Cursor>,
    /// Node finished or skipped.
    resolved: Vec<bool>,
    skipped_edge: Vec<bool>,
    /// Text so far of llm nodes that are running.
    partial: HashMap<usize, String>,
}

impl Streamer {
    pub(super) fn new(wf: Arc<Workflow>) -> Streamer {
        let cursors = (0..wf.answers.len()).map(|plan| Cursor { plan, seg: 0, sent: 0, state: State::Waiting }).collect();
        let n = wf.nodes.len();
        let e = wf.edges.len();
        Streamer { wf, cursors, resolved: vec![false; n], skipped_edge: vec![false; e], partial: HashMap::new() }
    }

    /// Node `i` finished; these edges and nodes were skipped as a result.
    pub(super) fn resolved(&mut self, i: usize, skipped_edges: &[usize], skipped_nodes: &[usize], pool: &Pool) -> Vec<Event> {
        self.resolved[i] = true;
        self.partial.remove(&i);
        for &k in skipped_edges {
            self.skipped_edge[k] = true;
        }
        for &s in skipped_nodes {
            self.resolved[s] = true;
        }
        self.pump(pool)
    }

    /// A chunk of llm node `i`'s text.
    pub(super) fn chunk(&mut self, i: usize, text: &str, pool: &Pool) -> Vec<Event> {
        self.partial.entry(i).or_default().push_str(text);
        self.pump(pool)
    }

    /// Streaming node `answer` runs: everything it has not sent yet goes now.
    pub(super) fn flush(&mut self, answer: usize, pool: &Pool) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(c) = self.cursors.iter().position(|c| self.wf.answers[c.plan].node == answer) {
            self.cursors[c].state = State::Live;
            self.advance(c, pool, true, &mut out);
            self.cursors[c].state = State::Done;
        }
        out.extend(self.pump(pool));
        out
    }

    fn pump(&mut self, pool: &Pool) -> Vec<Event> {
        let mut out = Vec::new();
        for c in 0..self.cursors.len() {
            if self.cursors[c].state == State::Waiting {
                let plan = &self.wf.answers[self.cursors[c].plan];
                if plan.gates.iter().all(|&g| self.resolved[g]) {
                    self.cursors[c].state = if self.live(plan.node) { State::Live } else { State::Done };
                }
            }
            if self.cursors[c].state == State::Live {
                self.advance(c, pool, false, &mut out);
            }
        }
        out
    }

    /// Whether a path of edges not skipped leads from the start to `node`.
    fn live(&self, node: usize) -> bool {
        let wf = &self.wf;
        let mut seen = vec![false; wf.nodes.len()];
        let mut stack = vec![node];
        while let Some(x) = stack.pop() {
            if x == wf.start {
                return true;
            }
            if std::mem::replace(&mut seen[x], true) {
                continue;
            }
            stack.extend(wf.live_in[x].iter().filter(|&&k| !self.skipped_edge[k]).map(|&k| wf.edges[k].source));
        }
        false
    }

    /// Sends what answer cursor `c` can; `all` treats every variable as known.
    fn advance(&mut self, c: usize, pool: &Pool, all: bool, out: &mut Vec<Event>) {
        let plan = &self.wf.answers[self.cursors[c].plan];
        let node_id = &self.wf.nodes[plan.node].id;
        while let Some(seg) = plan.segments.get(self.cursors[c].seg) {
            let cur = &mut self.cursors[c];
            match seg {
                Segment::Text(t) => push(out, t, vec![node_id.clone(), "answer".into()]),
                Segment::Context => push(out, "{{#context#}}", vec![node_id.clone(), "answer".into()]),
                Segment::Var(sel) => {
                    let src = self.wf.ids.get(&sel[0]).copied();
                    let known = all
                        || match src {
                            Some(s) => self.resolved[s],
                            None if sel[0] == "conversation" => plan.assigners.iter().all(|&a| self.resolved[a]),
                            None => true,
                        };
                    if known {
                        let text = pool.get(sel).map(|v| render_value(&v)).unwrap_or_default();
                        push(out, text.get(cur.sent..).unwrap_or(""), sel.clone());
                    } else {
                        let streaming = sel.len() == 2 && sel[1] == "text";
                        if let Some(p) = src.filter(|_| streaming).and_then(|s| self.partial.get(&s)) {
                            if p.len() > cur.sent {
                                push(out, &p[cur.sent..], sel.clone());
                                cur.sent = p.len();
                            }
                        }
                        return;
                    }
                }
            }
            cur.seg += 1;
            cur.sent = 0;
        }
        self.cursors[c].state = State::Done;
    }
}

fn push(out: &mut Vec<Event>, text: &str, from: Vec<String>) {
    if !text.is_empty() {
        out.push(Event::TextChunk { text: text.to_owned(), from_variable_selector: from });
    }
}

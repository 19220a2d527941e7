//! The embedding model: a GGUF text encoder (by default multilingual-e5-small,
//! converted by scripts/e5-to-gguf.py) run through llama-cpp-2 on its own OS
//! thread, which owns the llama.cpp context (contexts are not `Sync`), fed by
//! a bounded queue. Each decode packs several texts, one sequence each; the
//! model mean-pools every sequence and the vectors come back L2-normalised.
//! Owns: loading the embedding GGUF, its identity, the query/passage prefixes,
//! tokenising and truncating inputs, batching them into decodes.
//! Does not touch: chunking, vector storage, HTTP, the chat model.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::Heartbeat;

/// How long the idle embedding thread waits for work before beating its heartbeat.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// Tokens of one encode (llama.cpp's n_batch = n_ubatch = n_ctx): a non-causal
/// encoder needs every token of a sequence in one micro-batch, so this is
/// also the longest input (e5's own limit is 512).
///
/// Memory trap: llama.cpp's `output_reserve` gives every encoded token a
/// row of logits (vocabulary × 4 bytes) even for a pooled embedding
/// context, and e5's vocabulary has 250k tokens: about 1 MB per token of the
/// largest encode, kept for the context's life (2048 tokens cost 1.7 GB).
/// Hence at most 512 tokens per encode, and [`KEEP_TOKENS`].
const DECODE_TOKENS: usize = 512;

/// After a call whose largest encode had more tokens than this, the context
/// is rebuilt, so the logits buffer of a long batch (up to 512 MB) does not
/// stay resident; queries (a few dozen tokens) keep theirs (at most 64 MB).
const KEEP_TOKENS: usize = 64;

/// Everything the embedder needs, already resolved from `[embedding]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedConfig {
    pub path: PathBuf,
    /// llama.cpp threads (the daemon passes the chat model's count).
    pub threads: u32,
    /// Texts (sequences) per decode at most.
    pub batch_texts: usize,
    /// Tokens per input, prefix and special tokens included; longer inputs
    /// are cut (at most the model's training context, 512 for e5).
    pub max_tokens: usize,
    /// Put before a search query ("query: " for e5).
    pub query_prefix: String,
    /// Put before an indexed text ("passage: " for e5).
    pub passage_prefix: String,
    /// Requests waiting for the embedding thread at most; more get `Busy`.
    pub queue: usize,
}

/// What a text is, which selects its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedKind {
    Query,
    Passage,
    /// As given, without a prefix (`POST /v1/embeddings`: the client
    /// writes e5's `query: `/`passage: ` itself if it wants them).
    Raw,
}

/// Errors of the embedder; the API maps each to a status and code.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding model {}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
    #[error("the embedding queue is full ({depth} requests waiting)")]
    Busy { depth: usize },
    #[error("input {index} is empty or only whitespace: there is nothing to embed")]
    EmptyText { index: usize },
    #[error("embedding failed: {0}")]
    Inference(String),
    #[error("the embedding thread has stopped")]
    ThreadGone,
    /// The upstream embedding model failed.
    #[error("the upstream embedding model failed: {0}")]
    Upstream(String),
}

/// One `embed` call, as handed to the embedding thread.
struct Job {
    texts: Vec<String>,
    kind: EmbedKind,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

/// A loaded embedding model. Tokenising works on any thread; embedding goes
/// through the bounded queue to the embedding thread.
pub struct Embedder {
    model: Arc<LlamaModel>,
    jobs: std_mpsc::SyncSender<Job>,
    heartbeat: Arc<Heartbeat>,
    dims: usize,
    model_id: String,
    queue: usize,
    /// Tokens a passage may have (as `count_tokens` counts) without being cut.
    passage_budget: usize,
}

impl Embedder {
    /// Loads the model and starts the embedding thread. Blocking (it hashes
    /// and maps the file): call it from `spawn_blocking`.
    pub fn load(cfg: EmbedConfig) -> Result<Arc<Embedder>, EmbedError> {
        let started = Instant::now();
        let fail = |reason: String| EmbedError::Load { path: cfg.path.clone(), reason };
        let digest = file_sha256(&cfg.path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let backend = super::backend().map_err(fail)?;
        let model = LlamaModel::load_from_file(backend, &cfg.path, &LlamaModelParams::default())
            .map_err(|e| fail(format!("llama.cpp could not load it ({e}); the file may be truncated or not an embedding GGUF")))?;
        let dims = usize::try_from(model.n_embd()).map_err(|_| fail("the model reports a negative width".into()))?;
        let n_ctx_train = usize::try_from(model.n_ctx_train()).unwrap_or(usize::MAX);
        let name = model.meta_val_str("general.name").unwrap_or_else(|_| file_stem(&cfg.path));
        let model_id = format!("{name}@{}", &digest[..12]);
        let max_tokens = cfg.max_tokens.min(n_ctx_train).clamp(3, DECODE_TOKENS);
        let batch_texts = cfg.batch_texts.max(1);
        let model = Arc::new(model);

        let heartbeat = Arc::new(Heartbeat::new());
        heartbeat.beat();
        let (jobs, queue_rx) = std_mpsc::sync_channel::<Job>(cfg.queue);
        let (ready_tx, ready_rx) = std_mpsc::sync_channel::<Result<(), String>>(1);
        let thread_model = Arc::clone(&model);
        let hb = Arc::clone(&heartbeat);
        let threads = cfg.threads.max(1);
        let prefixes = [cfg.query_prefix.clone(), cfg.passage_prefix.clone()];
        std::thread::Builder::new()
            .name("embedder".into())
            .spawn(move || {
                let params = LlamaContextParams::default()
                    .with_n_ctx(NonZeroU32::new(DECODE_TOKENS as u32))
                    .with_n_batch(DECODE_TOKENS as u32)
                    .with_n_ubatch(DECODE_TOKENS as u32)
                    .with_n_seq_max(batch_texts as u32)
                    .with_n_threads(threads as i32)
                    .with_n_threads_batch(threads as i32)
                    .with_embeddings(true)
                    .with_pooling_type(LlamaPoolingType::Mean);
                let ctx = match thread_model.new_context(backend, params.clone()) {
                    Ok(c) => c,
                    Err(e) => {
                        // The loader waits for this message; if it is gone there is no one to tell.
                        let _ = ready_tx.send(Err(format!("llama.cpp context: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut worker = Worker {
                    model: &thread_model,
                    backend,
                    params,
                    ctx: Some(ctx),
                    batch: LlamaBatch::new(DECODE_TOKENS, batch_texts as i32),
                    prefixes,
                    max_tokens,
                    batch_texts,
                    heartbeat: hb,
                };
                worker.serve(&queue_rx);
                tracing::info!("embedding thread stopped: no more senders");
            })
            .map_err(|e| fail(format!("cannot start the embedding thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(fail(reason)),
            Err(_) => return Err(fail("the embedding thread ended while loading".into())),
        }
        tracing::info!(
            model = %cfg.path.display(),
            model_id = %model_id,
            dims,
            max_tokens,
            batch_texts,
            threads,
            load_ms = started.elapsed().as_millis() as u64,
            "embedding model loaded"
        );
        let prefix_tokens = model.vocab().tokenize(cfg.passage_prefix.as_bytes(), true, false).len();
        let passage_budget = max_tokens.saturating_sub(prefix_tokens);
        Ok(Arc::new(Embedder { model, jobs, heartbeat, dims, model_id, queue: cfg.queue, passage_budget }))
    }

    /// Width of the vectors.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// `general.name@<first 12 hex digits of the file's sha256>`: changes
    /// whenever the model file does, so vectors of another model are told apart.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Embeds `texts` (each with the prefix of `kind`), in order, as unit
    /// vectors. An empty list gives an empty list; an empty text is an error.
    pub async fn embed(&self, texts: Vec<String>, kind: EmbedKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(index) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(EmbedError::EmptyText { index });
        }
        let (reply, answer) = oneshot::channel();
        self.jobs.try_send(Job { texts, kind, reply }).map_err(|e| match e {
            TrySendError::Full(_) => EmbedError::Busy { depth: self.queue },
            TrySendError::Disconnected(_) => EmbedError::ThreadGone,
        })?;
        answer.await.map_err(|_| EmbedError::ThreadGone)?
    }

    /// Tokens of `text` alone, as the model's tokenizer cuts it: no prefix,
    /// no special tokens. For chunking; callable from any thread.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.model.vocab().tokenize(text.as_bytes(), false, false).len()
    }

    /// The most tokens (as [`Self::count_tokens`] counts them) a passage may
    /// have and still be embedded whole: `max_tokens` less the prefix and the
    /// special tokens. Chunks longer than this are embedded cut.
    pub fn passage_token_budget(&self) -> usize {
        self.passage_budget
    }

    /// Time since the embedding thread last showed progress (it beats while
    /// idle too), for a watchdog.
    pub fn heartbeat_age(&self) -> Duration {
        self.heartbeat.age()
    }
}

/// The embedding thread's state: the context and a reusable batch.
struct Worker<'m> {
    model: &'m LlamaModel,
    backend: &'static llama_cpp_2::llama_backend::LlamaBackend,
    params: LlamaContextParams,
    /// `None` only while it is rebuilt.
    ctx: Option<LlamaContext<'m>>,
    batch: LlamaBatch<'static>,
    /// Query prefix, passage prefix.
    prefixes: [String; 2],
    max_tokens: usize,
    batch_texts: usize,
    heartbeat: Arc<Heartbeat>,
}

impl Worker<'_> {
    fn serve(&mut self, jobs: &std_mpsc::Receiver<Job>) {
        loop {
            match jobs.recv_timeout(IDLE_TICK) {
                Ok(job) => {
                    self.heartbeat.beat();
                    let result = self.embed(&job.texts, job.kind);
                    if let Err(e) = &result {
                        tracing::warn!(texts = job.texts.len(), error = %e, "embedding failed");
                    }
                    // A caller that went away no longer wants the vectors.
                    let _ = job.reply.send(result);
                    self.heartbeat.beat();
                }
                Err(RecvTimeoutError::Timeout) => self.heartbeat.beat(),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn embed(&mut self, texts: &[String], kind: EmbedKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        let prefix = match kind {
            EmbedKind::Query => self.prefixes[0].as_str(),
            EmbedKind::Passage => self.prefixes[1].as_str(),
            EmbedKind::Raw => "",
        };
        let seqs: Vec<Vec<LlamaToken>> = texts.iter().map(|t| self.tokens(prefix, t)).collect();
        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        let mut largest = 0;
        while start < seqs.len() {
            // As many inputs as fit one decode; each alone always fits.
            let mut end = start + 1;
            let mut total = seqs[start].len();
            while end < seqs.len() && end - start < self.batch_texts && total + seqs[end].len() <= DECODE_TOKENS {
                total += seqs[end].len();
                end += 1;
            }
            let done = self.decode(&seqs[start..end], &mut out);
            largest = largest.max(total);
            if let Err(e) = done {
                self.rebuild()?;
                return Err(e);
            }
            self.heartbeat.beat();
            start = end;
        }
        // Once per call, not per encode: a call's encodes share the buffer.
        if largest > KEEP_TOKENS {
            self.rebuild()?;
        }
        Ok(out)
    }

    /// `prefix + text` with BOS and EOS, cut to `max_tokens` (keeping the EOS).
    fn tokens(&self, prefix: &str, text: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(format!("{prefix}{text}").as_bytes(), true, false);
        if tokens.len() > self.max_tokens {
            tokens.truncate(self.max_tokens - 1);
            tokens.push(vocab.eos());
        }
        tokens
    }

    fn decode(&mut self, seqs: &[Vec<LlamaToken>], out: &mut Vec<Vec<f32>>) -> Result<(), EmbedError> {
        self.batch.clear();
        for (seq, tokens) in seqs.iter().enumerate() {
            for (pos, &token) in tokens.iter().enumerate() {
                self.batch
                    .add(token, pos as i32, &[seq as i32], true)
                    .map_err(|e| EmbedError::Inference(format!("filling the batch: {e}")))?;
            }
        }
        let ctx = self.ctx.as_mut().ok_or(EmbedError::ThreadGone)?;
        // An encoder-only model runs through llama_encode (llama_decode would
        // warn and fall back to it).
        ctx.encode(&mut self.batch).map_err(|e| EmbedError::Inference(format!("llama.cpp encode: {e}")))?;
        for seq in 0..seqs.len() {
            let pooled = ctx
                .embeddings_seq_ith(seq as i32)
                .map_err(|e| EmbedError::Inference(format!("pooled embedding of sequence {seq}: {e}")))?;
            out.push(normalised(pooled)?);
        }
        Ok(())
    }

    /// Rebuilds the context, releasing its logits buffer (see [`KEEP_TOKENS`]).
    fn rebuild(&mut self) -> Result<(), EmbedError> {
        // Drop first: the old and the new context are never both alive.
        self.ctx = None;
        let ctx = self
            .model
            .new_context(self.backend, self.params.clone())
            .map_err(|e| EmbedError::Inference(format!("rebuilding the llama.cpp context: {e}")))?;
        self.ctx = Some(ctx);
        Ok(())
    }
}

/// `v / |v|`; a zero or non-finite vector is an error (nothing to compare with).
fn normalised(v: &[f32]) -> Result<Vec<f32>, EmbedError> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(EmbedError::Inference(format!("the model returned a vector of norm {norm}")));
    }
    Ok(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

/// Lower-case hex sha256 of a file, read in chunks (this also warms the page
/// cache that llama.cpp's mapping then uses).
fn file_sha256(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => hasher.update(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn file_stem(path: &Path) -> String {
    path.file_stem().map_or_else(|| "embedding-model".to_owned(), |s| s.to_string_lossy().into_owned())
}

/// Where knowledge bases get their vectors: the local embedding model, or
/// an OpenAI-compatible upstream's `/embeddings` (`embedding.upstream_model`,
/// through `[upstream]`).
pub enum Embeddings {
    Local(Arc<Embedder>),
    Upstream(UpstreamEmbedder),
}

/// An upstream embedding model: its name, and its width once it answered.
pub struct UpstreamEmbedder {
    upstream: super::upstream::Upstream,
    model: String,
    model_id: String,
    prefixes: [String; 2],
}

impl UpstreamEmbedder {
    /// `model` of the upstream's `/embeddings`, with e5-style prefixes
    /// (empty for models that want none).
    pub fn new(upstream: super::upstream::Upstream, model: String, query_prefix: String, passage_prefix: String) -> UpstreamEmbedder {
        let model_id = format!("upstream:{model}");
        UpstreamEmbedder { upstream, model, model_id, prefixes: [query_prefix, passage_prefix] }
    }
}

impl Embeddings {
    /// The identity a dataset records (`<name>@<file hash>` or `upstream:<model>`).
    pub fn model_id(&self) -> &str {
        match self {
            Embeddings::Local(e) => e.model_id(),
            Embeddings::Upstream(u) => &u.model_id,
        }
    }

    /// Unit vectors of `texts`, in order.
    pub async fn embed(&self, texts: Vec<String>, kind: EmbedKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        match self {
            Embeddings::Local(e) => e.embed(texts, kind).await,
            Embeddings::Upstream(u) => {
                if let Some(index) = texts.iter().position(|t| t.trim().is_empty()) {
                    return Err(EmbedError::EmptyText { index });
                }
                let prefix = match kind {
                    EmbedKind::Query => u.prefixes[0].as_str(),
                    EmbedKind::Passage => u.prefixes[1].as_str(),
                    EmbedKind::Raw => "",
                };
                let texts: Vec<String> = texts.into_iter().map(|t| format!("{prefix}{t}")).collect();
                u.upstream.embed(&u.model, &texts).await.map_err(|e| EmbedError::Upstream(e.to_string()))
            }
        }
    }

    /// Tokens of `text`: the local model's tokenizer; for an upstream model,
    /// an estimate (a CJK character a token, else four bytes a token).
    pub fn count_tokens(&self, text: &str) -> usize {
        match self {
            Embeddings::Local(e) => e.count_tokens(text),
            Embeddings::Upstream(_) => {
                let (cjk, other) = text.chars().fold((0usize, 0usize), |(c, o), ch| {
                    if ch.is_ascii() {
                        (c, o + 1)
                    } else if ch as u32 >= 0x2E80 {
                        (c + 1, o)
                    } else {
                        (c, o + ch.len_utf8())
                    }
                });
                cjk + other.div_ceil(4)
            }
        }
    }

    /// How long ago the local embedding thread showed progress (`None` for an upstream).
    pub fn heartbeat_age(&self) -> Option<Duration> {
        match self {
            Embeddings::Local(e) => Some(e.heartbeat_age()),
            Embeddings::Upstream(_) => None,
        }
    }
}

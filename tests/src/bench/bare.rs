//! The baseline: a bare llama-cpp-2 decode loop inside the bench process,
//! with the daemon's context parameters (unified f16 KV cache, the daemon's default, n_ctx,
//! n_seq_max, batch size, thread count), the model's own chat template and
//! greedy sampling. Generation stops at an end-of-generation token, as the
//! daemon does, so both produce the same token sequence; rates are per
//! token, never totals.
//! Owns the bench's llama.cpp context; knows nothing of the daemon or HTTP.

use std::ffi::{c_char, CStr};
use std::num::NonZeroU32;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

extern "C" {
    /// llama.cpp's one-line summary of the CPU features the ggml build uses
    /// (`AVX2 = 1 | ... | OPENMP = 1 | REPACK = 1`). llama-cpp-2 links
    /// libllama but does not wrap this function.
    fn llama_print_system_info() -> *const c_char;
}

/// llama.cpp's system info line for this build, as the daemon's inference
/// thread sees it (same llama-cpp-sys-2 build in the same target dir).
pub fn system_info() -> String {
    // SAFETY: the function takes no arguments and returns a pointer to a
    // NUL-terminated static buffer inside libllama that lives for the whole
    // process; it is only read here, once, on this thread.
    let p = unsafe { llama_print_system_info() };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null, NUL-terminated, static (see above).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().trim().to_owned()
}

/// The context parameters the daemon uses (daemon/src/model/local.rs).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub n_ctx: u32,
    pub n_seq_max: u32,
    pub batch: u32,
    pub threads: u32,
}

/// Renders system + user through the model's own chat template (llama.cpp's
/// renderer, as the daemon does for SmolLM2) and tokenises the text the way
/// the daemon does (`add_special`, `parse_special`).
pub fn chat_prompt(model: &LlamaModel, system: &str, user: &str) -> Result<Vec<LlamaToken>> {
    let tmpl = model.chat_template(None).context("the model has no chat template")?;
    let msgs = [
        LlamaChatMessage::new("system".into(), system.into()).context("system prompt")?,
        LlamaChatMessage::new("user".into(), user.into()).context("user prompt")?,
    ];
    let text = model
        .apply_chat_template(&tmpl, &msgs, true)
        .context("llama.cpp does not recognise the model's chat template (the daemon would use minijinja)")?;
    Ok(model.vocab().tokenize(text.as_bytes(), true, true))
}

/// One timed generation.
#[derive(Debug, Clone)]
pub struct BareRun {
    pub prompt_tokens: usize,
    /// Tokens sampled that were not end-of-generation (the daemon's
    /// `completion_tokens`).
    pub generated: u32,
    /// Generation ended at an end-of-generation token before `max_tokens`.
    pub ended_by_eog: bool,
    /// Prompt decode plus the first sample (the bare loop's time to first token).
    pub ttft_s: f64,
    /// From the first sampled token to the last non-EOG sampled token:
    /// `generated - 1` decode steps.
    pub gen_s: f64,
    pub text: String,
}

impl BareRun {
    pub fn prompt_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.ttft_s
    }
    /// Generation rate over `generated - 1` decode steps; `None` with fewer
    /// than two tokens.
    pub fn gen_tok_s(&self) -> Option<f64> {
        (self.generated >= 2 && self.gen_s > 0.0).then(|| f64::from(self.generated - 1) / self.gen_s)
    }
}

/// A context shaped like the daemon's and a batch sized like its batch.
pub struct Baseline<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
}

impl<'m> Baseline<'m> {
    pub fn new(backend: &LlamaBackend, model: &'m LlamaModel, shape: Shape) -> Result<Self> {
        let threads = i32::try_from(shape.threads).context("thread count")?;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(shape.n_ctx))
            .with_n_batch(shape.batch)
            .with_n_ubatch(shape.batch)
            .with_n_seq_max(shape.n_seq_max)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_kv_unified(true)
            .with_type_k(KvCacheType::F16)
            .with_type_v(KvCacheType::F16);
        let ctx = model.new_context(backend, params).context("creating the llama.cpp context")?;
        let batch_size = shape.batch as usize;
        Ok(Baseline { model, ctx, batch: LlamaBatch::new(batch_size, 1), batch_size })
    }

    /// Decodes `prompt` on sequence 0 of an empty cache, then samples
    /// greedily until `max_tokens` non-EOG tokens or an EOG token. Like the
    /// daemon, the last sampled token is not decoded.
    pub fn run(&mut self, prompt: &[LlamaToken], max_tokens: u32) -> Result<BareRun> {
        if prompt.is_empty() || max_tokens == 0 {
            bail!("empty prompt or max_tokens 0");
        }
        self.ctx.clear_kv_cache();
        let vocab = self.model.vocab();
        let mut sampler = LlamaSampler::greedy();
        let t0 = Instant::now();
        let mut pos: i32 = 0;
        for chunk in prompt.chunks(self.batch_size) {
            self.batch.clear();
            for (k, &tok) in chunk.iter().enumerate() {
                let last = pos as usize + 1 == prompt.len();
                self.batch.add(tok, pos, &[0], last).with_context(|| format!("batch add at {k}"))?;
                pos += 1;
            }
            self.ctx.decode(&mut self.batch).context("decoding the prompt")?;
        }
        let mut tok = sampler.sample(&self.ctx, self.batch.n_tokens() - 1);
        let t_first = Instant::now();
        let mut t_last = t_first;
        let mut bytes = Vec::new();
        let mut generated = 0u32;
        let mut ended_by_eog = false;
        loop {
            if vocab.is_eog(tok) {
                ended_by_eog = true;
                break;
            }
            generated += 1;
            t_last = Instant::now();
            bytes.extend_from_slice(&vocab.token_to_piece(tok, false, None));
            if generated >= max_tokens {
                break;
            }
            self.batch.clear();
            self.batch.add(tok, pos, &[0], true).context("batch add")?;
            pos += 1;
            self.ctx.decode(&mut self.batch).context("decoding a generated token")?;
            tok = sampler.sample(&self.ctx, 0);
        }
        Ok(BareRun {
            prompt_tokens: prompt.len(),
            generated,
            ended_by_eog,
            ttft_s: (t_first - t0).as_secs_f64(),
            gen_s: (t_last - t_first).as_secs_f64(),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

//! Knowledge bases through the real edgeaid over HTTP, next to the same
//! work in this process:
//! - embedding: `POST /v1/embeddings` (app key) in batches of 16 and 32
//!   passages of about 100 tokens, against edgeaid's `Embedder` loaded in
//!   this process with the same settings (texts/s, tokens/s, their ratio);
//! - ingestion: `create-by-text` documents of a generated EN+ZH corpus,
//!   polled through `indexing-status` until completed (segments/s);
//! - quality: the demo manuals (configs/knowledge/plant-manuals) uploaded
//!   with `create-by-file` and the demo seeding's process rule, then the
//!   labelled queries (tests/fixtures/knowledge/labelled.json) through
//!   `/retrieve` per method: recall@1 and recall@5 per language;
//! - scale: datasets of 10k and 100k segments written before the daemon
//!   starts, through edgeaid's own store and vector index as the service
//!   writes them (completed segments, their full-text rows, one vector
//!   file per document), with generated EN/ZH text and synthetic vectors
//!   (real embeddings of the passages above, each copy with small noise);
//!   then `/retrieve` latency per method over HTTP (one keep-alive
//!   connection, one query at a time), the daemon's RSS around it, and the
//!   in-process query embedding and vector search for a breakdown.
//!
//! Owns this phase's client, corpus and measuring; knows nothing of tables
//! or JSON reports (bench.rs renders [`Figures`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use edgeaid::knowledge::vectors::VectorIndex;
use edgeaid::knowledge::{DocumentSource, IndexingTechnique};
use edgeaid::model::embed::{EmbedConfig, EmbedKind, Embedder};
use edgeaid::store::{DocumentStep, NewDatasetRow, NewDocumentRow, NewSegment, Store};
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::cpu;
use super::daemon::{Daemon, Launch, Rss};
use super::vectors::Rng;

/// Batch sizes of the embedding measurement, and texts embedded per size.
pub const EMBED_BATCHES: [usize; 2] = [16, 32];
pub const EMBED_TEXTS: usize = 64;
pub const EMBED_ROUNDS: usize = 2;
/// Passages of the ingestion corpus, and paragraphs per document.
pub const INGEST_SEGMENTS: usize = 200;
pub const INGEST_DOC_PARAGRAPHS: usize = 20;
/// Sizes of the scale datasets, segments per document in them.
pub const SCALE_SIZES: [usize; 2] = [10_000, 100_000];
pub const SCALE_DOC_SEGMENTS: usize = 1000;
/// Timed queries per method and size (after `WARM_QUERIES` untimed ones), hits per query.
pub const SCALE_QUERIES: usize = 120;
pub const WARM_QUERIES: usize = 10;
pub const SCALE_TOP_K: usize = 10;
/// Hybrid weights (vector, keyword) of the quality and scale runs.
pub const HYBRID: (f64, f64) = (0.7, 0.3);
pub const METHODS: [&str; 3] = ["semantic_search", "full_text_search", "hybrid_search"];

/// The demo seeding's process rule (daemon/src/service/knowledge/seed.rs).
fn seed_rule() -> Value {
    json!({"mode": "custom", "rules": {
        "pre_processing_rules": [{"id": "remove_extra_spaces", "enabled": true}, {"id": "remove_urls_emails", "enabled": false}],
        "segmentation": {"separator": "\n\n", "max_tokens": 200, "chunk_overlap": 0}}})
}

// ---- a keep-alive HTTP/1 connection ----------------------------------------

/// One keep-alive connection; every request is timed from send to the whole body.
pub struct Http {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Http {
    pub async fn connect(addr: SocketAddr) -> Result<Http> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Http { addr, sender })
    }

    /// Sends one request; the status, the body and the time it took.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        key: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes, Duration)> {
        self.sender.ready().await.context("connection not ready")?;
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .context("building the request")?;
        let sent = Instant::now();
        let resp = self.sender.send_request(req).await.with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.context("reading the body")?.to_bytes();
        Ok((status, bytes, sent.elapsed()))
    }

    /// Sends JSON (or nothing); the answer as JSON and the time, or an error naming a non-2xx answer.
    pub async fn json(&mut self, method: Method, path: &str, key: &str, body: Option<&Value>) -> Result<(Value, Duration)> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let (status, answer, took) = self.send(method.clone(), path, key, "application/json", bytes).await?;
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        let v = if answer.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&answer).with_context(|| format!("{method} {path}: not JSON"))?
        };
        Ok((v, took))
    }
}

// ---- generated text ----------------------------------------------------------

const MACHINES: [&str; 12] =
    ["pump", "conveyor", "compressor", "inverter", "robot arm", "press", "boiler", "chiller", "mixer", "spindle", "fan", "valve"];
const PARTS: [&str; 12] =
    ["bearing", "seal", "belt", "filter", "coupling", "gearbox", "sensor", "contactor", "relay", "nozzle", "impeller", "brake"];
const FAULTS: [&str; 10] =
    ["overheating", "vibration", "leakage", "overcurrent", "noise", "wear", "misalignment", "low pressure", "short circuit", "blockage"];
const ACTIONS: [&str; 8] = [
    "stop the machine and lock it out before opening the cover",
    "check the torque of every fixing bolt with a calibrated wrench",
    "replace the part and record the serial number in the maintenance log",
    "clean the housing and remove dust and oil residue",
    "measure the insulation resistance between phase and earth",
    "tighten the terminal screws and inspect the cable for damage",
    "lubricate with the grease named on the rating plate",
    "reset the alarm on the HMI and run the machine empty for ten minutes",
];
const MACHINES_ZH: [&str; 12] =
    ["水泵", "输送机", "空压机", "变频器", "机械臂", "冲压机", "锅炉", "冷水机", "搅拌机", "主轴", "风机", "阀门"];
const PARTS_ZH: [&str; 12] = ["轴承", "密封圈", "皮带", "滤芯", "联轴器", "齿轮箱", "传感器", "接触器", "继电器", "喷嘴", "叶轮", "制动器"];
const FAULTS_ZH: [&str; 10] = ["过热", "振动", "泄漏", "过流", "异响", "磨损", "不对中", "压力低", "短路", "堵塞"];
const ACTIONS_ZH: [&str; 8] = [
    "先停机并挂牌上锁，再打开防护罩",
    "用校准过的扭矩扳手检查每个紧固螺栓",
    "更换零件并在维护记录中登记序列号",
    "清洁外壳，清除灰尘和油污",
    "测量相线与地之间的绝缘电阻",
    "拧紧接线端子螺钉并检查电缆是否损坏",
    "按照铭牌上规定的润滑脂进行润滑",
    "在触摸屏上复位报警，并空载运行十分钟",
];

fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[(rng.next() % from.len() as u64) as usize]
}

/// A maintenance passage of about 100 tokens, English for even `i` and
/// Chinese for odd `i`; deterministic in `(seed, i)`.
pub fn passage(seed: u64, i: usize) -> String {
    let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
    let unit = 1 + rng.next() % 40;
    let code = 1000 + rng.next() % 9000;
    if i.is_multiple_of(2) {
        let (m, p, f) = (pick(&mut rng, &MACHINES), pick(&mut rng, &PARTS), pick(&mut rng, &FAULTS));
        let (a1, a2) = (pick(&mut rng, &ACTIONS), pick(&mut rng, &ACTIONS));
        let hours = 100 * (1 + rng.next() % 20);
        format!(
            "Section {i}. The {m} of line {unit} reports fault code E{code} when the {p} shows {f}. \
             First {a1}. Then {a2}. If the {f} comes back within {hours} operating hours, the {p} \
             of the {m} must be inspected by a qualified technician, who writes the findings and the \
             measured values into the shift report before the {m} of line {unit} is started again."
        )
    } else {
        let (m, p, f) = (pick(&mut rng, &MACHINES_ZH), pick(&mut rng, &PARTS_ZH), pick(&mut rng, &FAULTS_ZH));
        let (a1, a2) = (pick(&mut rng, &ACTIONS_ZH), pick(&mut rng, &ACTIONS_ZH));
        let hours = 100 * (1 + rng.next() % 20);
        format!(
            "第{i}节。{unit}号线的{m}在{p}出现{f}时报故障代码E{code}。首先{a1}。然后{a2}。\
             如果{hours}运行小时内再次出现{f}，必须由合格的技术人员检查{m}的{p}，\
             并在重新启动{unit}号线的{m}之前把检查结果和测量值写入交接班记录。"
        )
    }
}

/// A short search query, English for even `i`, Chinese for odd `i`.
pub fn query(i: usize) -> String {
    let mut rng = Rng(0x0ae7 ^ (i as u64).wrapping_mul(0x2545_f491));
    if i.is_multiple_of(2) {
        format!("{} {} {} on line {}", pick(&mut rng, &MACHINES), pick(&mut rng, &PARTS), pick(&mut rng, &FAULTS), 1 + rng.next() % 40)
    } else {
        format!("{}{}{}怎么处理", pick(&mut rng, &MACHINES_ZH), pick(&mut rng, &PARTS_ZH), pick(&mut rng, &FAULTS_ZH))
    }
}

// ---- figures -------------------------------------------------------------------

/// Embedding one batch size: in this process and over HTTP.
#[derive(Debug, Clone)]
pub struct EmbedFigures {
    pub batch: usize,
    pub texts: usize,
    pub tokens: u64,
    pub in_process: Duration,
    pub http: Duration,
    /// Largest |difference| between a vector over HTTP and in-process.
    pub max_abs_diff: f32,
    /// Other processes' CPU (cores) during each round.
    pub foreign_cores: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct IngestFigures {
    pub documents: usize,
    pub segments: i64,
    pub tokens: u64,
    /// First `create-by-text` sent → last document seen `completed`.
    pub wall: Duration,
    /// Sum of the daemon's own `document indexed` elapsed_ms.
    pub daemon_ms: u64,
    /// Texts/s of the in-process embedder at batch 16 (for comparison).
    pub embed_texts_per_s: f64,
}

#[derive(Debug, Clone)]
pub struct QualityRow {
    pub method: &'static str,
    pub lang: String,
    pub queries: usize,
    pub at1: usize,
    pub at5: usize,
    /// Queries with no relevant hit in the top 5.
    pub missed: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LatencyFigures {
    pub method: &'static str,
    pub http: Vec<Duration>,
    /// Other processes' CPU (cores) during the timed queries.
    pub foreign_cores: f64,
    /// Mean hits per answer.
    pub mean_hits: f64,
}

#[derive(Debug, Clone)]
pub struct ScaleFigures {
    pub segments: usize,
    pub documents: usize,
    pub vector_files: usize,
    pub build: Duration,
    pub db_bytes_after: u64,
    pub vector_bytes: u64,
    pub latency: Vec<LatencyFigures>,
    /// In-process: the query embedding alone, and the vector search alone
    /// (the daemon's vector files, opened here read-only meanwhile).
    pub embed_query: Vec<Duration>,
    pub vector_search: Vec<Duration>,
    pub rss_before: Rss,
    pub rss_after_first: Rss,
    pub rss_after: Rss,
}

#[derive(Debug, Clone)]
pub struct Figures {
    pub model_id: String,
    pub threads: u32,
    pub passage_tokens_mean: f64,
    pub embed: Vec<EmbedFigures>,
    pub ingest: IngestFigures,
    pub quality_segments: i64,
    pub quality: Vec<QualityRow>,
    pub scale: Vec<ScaleFigures>,
    pub rss_idle: Rss,
    /// The daemon's RSS after each step before the scale runs.
    pub rss_steps: Vec<(String, Rss)>,
}

/// What the phase needs from the bench.
pub struct Setup<'a> {
    pub launch: Launch<'a>,
    pub embed_model: &'a Path,
    pub threads: u32,
    pub repo: &'a Path,
}

fn embed_config(path: &Path, threads: u32) -> EmbedConfig {
    // The daemon's defaults (config/mod.rs), with the thread count the bench gives both.
    EmbedConfig {
        path: path.to_path_buf(),
        threads,
        batch_texts: 16,
        max_tokens: 512,
        query_prefix: "query: ".into(),
        passage_prefix: "passage: ".into(),
        queue: 64,
    }
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

// ---- the phase -------------------------------------------------------------------

/// Runs the whole phase in `dir` (a fresh directory).
pub async fn measure(s: Setup<'_>) -> Result<Figures> {
    let dir = s.launch.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    progress("knowledge: loading the embedder in this process");
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let cfg = embed_config(s.embed_model, s.threads);
    let embedder = tokio::task::spawn_blocking(move || Embedder::load(cfg)).await.context("loading the embedder")??;

    let texts: Vec<String> = (0..EMBED_TEXTS).map(|i| passage(7, i)).collect();
    let tokens: Vec<u64> = texts.iter().map(|t| embedder.count_tokens(t) as u64).collect();
    let passage_tokens_mean = tokens.iter().sum::<u64>() as f64 / tokens.len() as f64;
    progress(&format!(
        "knowledge: embedding {EMBED_TEXTS} passages of {passage_tokens_mean:.0} tokens in this process (the scale datasets' vectors)"
    ));
    let local_vectors = embedder.embed(texts.clone(), EmbedKind::Raw).await.context("embedding in-process")?;

    let mut scale = Vec::new();
    for n in SCALE_SIZES {
        progress(&format!("knowledge: writing the {n}-segment dataset through the store and the vector index"));
        scale.push(build_scale(dir, &embedder, &local_vectors, n).await?);
    }

    progress("knowledge: starting edgeaid");
    let mut d = Daemon::start(&s.launch).await?;
    let result = with_daemon(&mut d, &s, &embedder, &texts, &tokens, &local_vectors, scale, passage_tokens_mean).await;
    let status = d.stop().await?;
    let mut figures = result?;
    if !status.success() {
        bail!("edgeaid exited with {status} after SIGTERM");
    }
    figures.threads = s.threads;
    Ok(figures)
}

/// What `build_scale` wrote, before the daemon measured it.
pub struct Built {
    dataset_id: String,
    segments: usize,
    documents: usize,
    vector_files: usize,
    build: Duration,
}

/// Writes a dataset of `n` completed segments as the service leaves one:
/// dataset with the loaded model's id, documents `completed`, segments
/// with their full-text rows, vectors appended per document.
async fn build_scale(dir: &Path, embedder: &Embedder, base: &[Vec<f32>], n: usize) -> Result<Built> {
    let started = Instant::now();
    let (store, _) = Store::open(&dir.join("edgeai.db")).context("opening the store")?;
    let name = format!("bench-{}k", n / 1000);
    let row = NewDatasetRow {
        name,
        description: "bench: generated segments".into(),
        indexing_technique: IndexingTechnique::HighQuality,
        retrieval_model: None,
    };
    let dataset = store.create_dataset(row).await?;
    store.set_embedding_model(&dataset.id, embedder.model_id(), embedder.dims() as u32).await?;
    let vdir = dir.join("knowledge").join(&dataset.id).join("vectors");
    let mut index = VectorIndex::open(&vdir, embedder.dims()).context("opening the vector index")?;
    let mut rng = Rng(0xbe7c ^ n as u64);
    let mut documents = 0;
    let mut written = 0;
    while written < n {
        let count = SCALE_DOC_SEGMENTS.min(n - written);
        let new = NewDocumentRow {
            name: format!("generated-{documents}.txt"),
            source: DocumentSource::Text,
            batch: format!("bench{n}"),
            process_rule: seed_rule().to_string(),
        };
        let doc = store.insert_document(&dataset.id, new).await?;
        for step in [DocumentStep::Parsing, DocumentStep::Splitting, DocumentStep::Indexing] {
            store.set_document_step(&doc.id, step).await?;
        }
        let segments: Vec<NewSegment> = (written..written + count)
            .map(|i| {
                let content = passage(n as u64, i);
                NewSegment {
                    tokens: embedder.count_tokens(&content) as i64,
                    word_count: content.chars().count() as i64,
                    content,
                    answer: String::new(),
                    keywords: Vec::new(),
                }
            })
            .collect();
        let rowids: Vec<i64> = store.insert_segments(&doc.id, segments).await?.into_iter().map(|s| s.rowid).collect();
        // Each copy of a real embedding moved by noise of about 0.3 in norm (cosine ~0.95 to its origin).
        let items: Vec<(i64, Vec<f32>)> = rowids
            .iter()
            .enumerate()
            .map(|(k, &id)| {
                let origin = &base[(written + k) % base.len()];
                let noise = rng.unit(origin.len());
                let mut v: Vec<f32> = origin.iter().zip(&noise).map(|(a, b)| a + 0.3 * b).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.iter_mut().for_each(|x| *x /= norm);
                (id, v)
            })
            .collect();
        index.append(&items).context("appending vectors")?;
        store.complete_document(&doc.id, &rowids).await?;
        written += count;
        documents += 1;
    }
    let vector_files = documents;
    drop(index);
    store.close().await?;
    Ok(Built { dataset_id: dataset.id, segments: n, documents, vector_files, build: started.elapsed() })
}

#[allow(clippy::too_many_arguments)]
async fn with_daemon(
    d: &mut Daemon,
    s: &Setup<'_>,
    embedder: &Arc<Embedder>,
    texts: &[String],
    tokens: &[u64],
    local_vectors: &[Vec<f32>],
    built: Vec<Built>,
    passage_tokens_mean: f64,
) -> Result<Figures> {
    let dir = s.launch.dir;
    let admin = edgeai_common::UnixClient::new(dir.join("edgeai.sock"));
    let created: Value = admin.post_json("/admin/v1/keys", &json!({"dataset": true})).await.context("creating a dataset key")?;
    let dkey = created["key"].as_str().ok_or_else(|| anyhow!("no key in {created}"))?.to_owned();
    let app_key = d.key.clone();
    let mut http = Http::connect(d.addr).await?;
    let rss_idle = d.rss()?;

    // 1. Embedding: in this process and over HTTP alternately, EMBED_ROUNDS times.
    progress("knowledge: embedding in this process and by POST /v1/embeddings, alternately");
    http.json(Method::POST, "/v1/embeddings", &app_key, Some(&json!({"input": texts[..4].to_vec(), "model": "e5"}))).await?;
    let mut embed: Vec<EmbedFigures> = EMBED_BATCHES
        .iter()
        .map(|&batch| EmbedFigures {
            batch,
            texts: 0,
            tokens: 0,
            in_process: Duration::ZERO,
            http: Duration::ZERO,
            max_abs_diff: 0.0,
            foreign_cores: Vec::new(),
        })
        .collect();
    for _ in 0..EMBED_ROUNDS {
        for e in &mut embed {
            let before = cpu::snapshot(Some(d.pid))?;
            let started = Instant::now();
            for chunk in texts.chunks(e.batch) {
                embedder.embed(chunk.to_vec(), EmbedKind::Raw).await.context("embedding in-process")?;
            }
            e.in_process += started.elapsed();
            let (took, diff) = embed_http(&mut http, &app_key, texts, e.batch, local_vectors).await?;
            e.foreign_cores.push(before.foreign_cores_until(&cpu::snapshot(Some(d.pid))?));
            e.http += took;
            e.max_abs_diff = e.max_abs_diff.max(diff);
            e.texts += texts.len();
            e.tokens += tokens.iter().sum::<u64>();
        }
    }
    let embed_texts_per_s = embed[0].texts as f64 / embed[0].in_process.as_secs_f64().max(1e-9);
    let mut rss_steps = vec![("idle".to_owned(), rss_idle), ("after embedding".to_owned(), d.rss()?)];

    // 2. Ingestion.
    progress(&format!("knowledge: ingesting {INGEST_SEGMENTS} passages by create-by-text"));
    let ingest = ingest(d, &mut http, &dkey, embedder, embed_texts_per_s).await?;
    rss_steps.push(("after ingestion".to_owned(), d.rss()?));

    // 3. Quality on the labelled set.
    progress("knowledge: the labelled set over the demo manuals");
    let (quality_segments, quality) = quality(&mut http, &dkey, s.repo).await?;
    rss_steps.push(("after the labelled queries".to_owned(), d.rss()?));

    // 4. Scale.
    let mut scale = Vec::new();
    for b in built {
        progress(&format!("knowledge: /retrieve over {} segments", b.segments));
        scale.push(scale_latency(d, dir, &mut http, &dkey, embedder, b).await?);
    }
    Ok(Figures {
        model_id: embedder.model_id().to_owned(),
        threads: 0,
        passage_tokens_mean,
        embed,
        ingest,
        quality_segments,
        quality,
        scale,
        rss_idle,
        rss_steps,
    })
}

/// `texts` through POST /v1/embeddings in requests of `batch`: the time,
/// and the largest difference to the in-process vectors.
async fn embed_http(http: &mut Http, key: &str, texts: &[String], batch: usize, local_vectors: &[Vec<f32>]) -> Result<(Duration, f32)> {
    let mut took = Duration::ZERO;
    let mut max_abs_diff = 0f32;
    for (c, chunk) in texts.chunks(batch).enumerate() {
        let (v, t) = http.json(Method::POST, "/v1/embeddings", key, Some(&json!({"input": chunk, "model": "e5"}))).await?;
        took += t;
        let data = v["data"].as_array().ok_or_else(|| anyhow!("no data in the embeddings answer"))?;
        if data.len() != chunk.len() {
            bail!("{} vectors for {} inputs", data.len(), chunk.len());
        }
        for (k, item) in data.iter().enumerate() {
            let got: Vec<f32> =
                item["embedding"].as_array().map(|a| a.iter().filter_map(Value::as_f64).map(|x| x as f32).collect()).unwrap_or_default();
            let want = &local_vectors[c * batch + k];
            if got.len() != want.len() {
                bail!("a vector of {} dims, not {}", got.len(), want.len());
            }
            max_abs_diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(max_abs_diff, f32::max);
        }
    }
    Ok((took, max_abs_diff))
}

async fn create_dataset(http: &mut Http, key: &str, name: &str) -> Result<String> {
    let (v, _) = http.json(Method::POST, "/v1/datasets", key, Some(&json!({"name": name, "indexing_technique": "high_quality"}))).await?;
    v["id"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no dataset id in {v}"))
}

/// Polls the batches' `indexing-status` every 50 ms until every document is
/// completed (an `error` fails); the completed segments.
async fn wait_indexed(http: &mut Http, key: &str, dataset: &str, batches: &[String], timeout: Duration) -> Result<i64> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut done = true;
        let mut segments = 0;
        for b in batches {
            let (v, _) = http.json(Method::GET, &format!("/v1/datasets/{dataset}/documents/{b}/indexing-status"), key, None).await?;
            for doc in v["data"].as_array().into_iter().flatten() {
                match doc["indexing_status"].as_str() {
                    Some("completed") => segments += doc["completed_segments"].as_i64().unwrap_or(0),
                    Some("error") => bail!("a document went to error: {doc}"),
                    _ => done = false,
                }
            }
        }
        if done {
            return Ok(segments);
        }
        if Instant::now() > deadline {
            bail!("documents not indexed within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ingest(d: &Daemon, http: &mut Http, key: &str, embedder: &Embedder, embed_texts_per_s: f64) -> Result<IngestFigures> {
    let dataset = create_dataset(http, key, "bench-ingest").await?;
    let paragraphs: Vec<String> = (0..INGEST_SEGMENTS).map(|i| passage(11, i)).collect();
    let tokens = paragraphs.iter().map(|p| embedder.count_tokens(p) as u64).sum();
    let before = d.events("document indexed").len();
    let started = Instant::now();
    let mut batches = Vec::new();
    for (n, doc) in paragraphs.chunks(INGEST_DOC_PARAGRAPHS).enumerate() {
        let body = json!({"name": format!("corpus-{n}.txt"), "text": doc.join("\n\n"), "indexing_technique": "high_quality",
                          "process_rule": seed_rule()});
        let (v, _) = http.json(Method::POST, &format!("/v1/datasets/{dataset}/document/create-by-text"), key, Some(&body)).await?;
        batches.push(v["batch"].as_str().ok_or_else(|| anyhow!("no batch in {v}"))?.to_owned());
    }
    let segments = wait_indexed(http, key, &dataset, &batches, Duration::from_secs(600)).await?;
    let wall = started.elapsed();
    let daemon_ms =
        d.events("document indexed").iter().skip(before).filter_map(|(_, e)| e.pointer("/fields/elapsed_ms").and_then(Value::as_u64)).sum();
    Ok(IngestFigures { documents: batches.len(), segments, tokens, wall, daemon_ms, embed_texts_per_s })
}

fn multipart(boundary: &str, data: &Value, file_name: &str, bytes: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(bytes.len() + 512);
    out.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n{data}\r\n").as_bytes());
    out.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
            .as_bytes(),
    );
    out.extend_from_slice(bytes);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Bytes::from(out)
}

fn retrieval_model(method: &str, top_k: usize) -> Value {
    let mut m = json!({"search_method": method, "top_k": top_k, "score_threshold_enabled": false, "reranking_enable": false});
    if method == "hybrid_search" {
        m["weights"] = json!({"vector_setting": {"vector_weight": HYBRID.0}, "keyword_setting": {"keyword_weight": HYBRID.1}});
    }
    m
}

async fn quality(http: &mut Http, key: &str, repo: &Path) -> Result<(i64, Vec<QualityRow>)> {
    let dataset = create_dataset(http, key, "bench-plant-manuals").await?;
    let manuals = repo.join("configs/knowledge/plant-manuals");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&manuals)
        .with_context(|| format!("reading {}", manuals.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let data = json!({"indexing_technique": "high_quality", "process_rule": seed_rule()});
    let mut batches = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let name = f.file_name().and_then(|n| n.to_str()).ok_or_else(|| anyhow!("{}: no file name", f.display()))?;
        let boundary = "edgeai-bench-boundary-7f3a";
        let (status, answer, _) = http
            .send(
                Method::POST,
                &format!("/v1/datasets/{dataset}/document/create-by-file"),
                key,
                &format!("multipart/form-data; boundary={boundary}"),
                multipart(boundary, &data, name, &bytes),
            )
            .await?;
        if !status.is_success() {
            bail!("create-by-file {name} answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        let v: Value = serde_json::from_slice(&answer).context("create-by-file answer")?;
        batches.push(v["batch"].as_str().ok_or_else(|| anyhow!("no batch in {v}"))?.to_owned());
    }
    let segments = wait_indexed(http, key, &dataset, &batches, Duration::from_secs(300)).await?;

    let path = repo.join("tests/fixtures/knowledge/labelled.json");
    let labelled: Value = serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
        .with_context(|| format!("{}: not JSON", path.display()))?;
    let queries = labelled["queries"].as_array().ok_or_else(|| anyhow!("{}: no queries", path.display()))?;
    let mut rows: Vec<QualityRow> = Vec::new();
    for method in METHODS {
        for q in queries {
            let (lang, text, expect) = match (q["lang"].as_str(), q["query"].as_str(), q["expect"].as_str()) {
                (Some(l), Some(t), Some(e)) => (l, t, e),
                _ => bail!("{}: a query without lang, query or expect: {q}", path.display()),
            };
            let body = json!({"query": text, "retrieval_model": retrieval_model(method, 5)});
            let (v, _) = http.json(Method::POST, &format!("/v1/datasets/{dataset}/retrieve"), key, Some(&body)).await?;
            let contents: Vec<&str> = v["records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.pointer("/segment/content").and_then(Value::as_str))
                .collect();
            let rank = contents.iter().position(|c| c.contains(expect));
            let row = match rows.iter_mut().find(|r| r.method == method && r.lang == lang) {
                Some(r) => r,
                None => {
                    rows.push(QualityRow { method, lang: lang.to_owned(), queries: 0, at1: 0, at5: 0, missed: Vec::new() });
                    rows.last_mut().ok_or_else(|| anyhow!("no row"))?
                }
            };
            row.queries += 1;
            match rank {
                Some(0) => {
                    row.at1 += 1;
                    row.at5 += 1;
                }
                Some(_) => row.at5 += 1,
                None => row.missed.push(text.to_owned()),
            }
        }
    }
    Ok((segments, rows))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

async fn scale_latency(d: &Daemon, dir: &Path, http: &mut Http, key: &str, embedder: &Embedder, b: Built) -> Result<ScaleFigures> {
    let path = format!("/v1/datasets/{}/retrieve", b.dataset_id);
    let rss_before = d.rss()?;
    let queries: Vec<String> = (0..WARM_QUERIES + SCALE_QUERIES).map(query).collect();
    let mut latency = Vec::new();
    let mut rss_after_first = rss_before;
    for method in METHODS {
        let mut times = Vec::with_capacity(SCALE_QUERIES);
        let mut hits = 0usize;
        let mut before = cpu::snapshot(Some(d.pid))?;
        for (i, q) in queries.iter().enumerate() {
            if i == WARM_QUERIES {
                before = cpu::snapshot(Some(d.pid))?;
            }
            let body = json!({"query": q, "retrieval_model": retrieval_model(method, SCALE_TOP_K)});
            let (v, took) = http.json(Method::POST, &path, key, Some(&body)).await?;
            if method == METHODS[0] && i == 0 {
                rss_after_first = d.rss()?;
            }
            if i >= WARM_QUERIES {
                times.push(took);
                hits += v["records"].as_array().map_or(0, Vec::len);
            }
        }
        let foreign_cores = before.foreign_cores_until(&cpu::snapshot(Some(d.pid))?);
        latency.push(LatencyFigures { method, foreign_cores, mean_hits: hits as f64 / times.len().max(1) as f64, http: times });
    }
    let rss_after = d.rss()?;

    // In-process breakdown: the query embedding alone, the vector search alone.
    let mut embed_query = Vec::with_capacity(SCALE_QUERIES);
    let mut vectors = Vec::with_capacity(SCALE_QUERIES);
    for q in &queries[WARM_QUERIES..] {
        let t = Instant::now();
        let mut v = embedder.embed(vec![q.clone()], EmbedKind::Query).await.context("query embedding")?;
        embed_query.push(t.elapsed());
        vectors.push(v.pop().ok_or_else(|| anyhow!("no query vector"))?);
    }
    let vdir = dir.join("knowledge").join(&b.dataset_id).join("vectors");
    let index = VectorIndex::open(&vdir, embedder.dims()).context("opening the daemon's vector files here")?;
    let pool = SCALE_TOP_K * 4 + 16;
    for q in &vectors[..WARM_QUERIES.min(vectors.len())] {
        std::hint::black_box(index.search(q, pool));
    }
    let vector_search = vectors
        .iter()
        .map(|q| {
            let t = Instant::now();
            std::hint::black_box(index.search(q, pool));
            t.elapsed()
        })
        .collect();
    let vector_bytes = index.bytes();
    drop(index);
    Ok(ScaleFigures {
        segments: b.segments,
        documents: b.documents,
        vector_files: b.vector_files,
        build: b.build,
        db_bytes_after: dir_bytes(dir),
        vector_bytes,
        latency,
        embed_query,
        vector_search,
        rss_before,
        rss_after_first,
        rss_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_alternate_english_and_chinese_and_are_deterministic() {
        assert_eq!(passage(7, 4), passage(7, 4));
        assert_ne!(passage(7, 4), passage(8, 4));
        assert!(passage(7, 0).is_ascii());
        assert!(passage(7, 1).chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)));
        assert!(query(0).is_ascii() && !query(1).is_ascii());
    }

    #[test]
    fn the_file_form_has_the_data_and_file_parts() {
        let body = multipart("B", &json!({"a": 1}), "x.md", b"# hi");
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(text.starts_with("--B\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n{\"a\":1}\r\n"), "{text}");
        assert!(text.contains("name=\"file\"; filename=\"x.md\""), "{text}");
        assert!(text.ends_with("# hi\r\n--B--\r\n"), "{text}");
    }

    #[test]
    fn hybrid_requests_carry_dify_weights() {
        let m = retrieval_model("hybrid_search", 10);
        assert_eq!(m["weights"]["vector_setting"]["vector_weight"], json!(HYBRID.0));
        assert_eq!(m["top_k"], json!(10));
        assert!(retrieval_model("semantic_search", 5).get("weights").is_none());
    }
}

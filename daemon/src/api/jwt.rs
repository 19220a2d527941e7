//! JWT bearer tokens beside API keys: loads the keys of the `[[auth.jwt]]`
//! issuers (a PEM public key, a JWKS file, or an HS256 secret file when
//! `allow_hs256` is set) at start and again on SIGHUP, and verifies a token:
//! issuer by `iss`, `alg` in the issuer's list and of the key's family (no
//! `none`, no key confusion), key by `kid`, signature, `aud`, `exp` (required)
//! and `nbf` with the issuer's leeway, then the app and user claims. Tokens
//! never reach a log or a message. Crypto: `jsonwebtoken` on RustCrypto.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::config::{JwtIssuer, JwtKeySource};

/// Longest `user` a token may carry (as Dify's end-user session id column).
const MAX_USER_CHARS: usize = 255;

/// Shortest HS256 secret accepted (RFC 7518 3.2: at least the hash size).
const MIN_SECRET_BYTES: usize = 32;

/// Why an issuer's key file is unusable; names the config key and the file.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("auth.jwt[{index}].{key} {}: {source}", path.display())]
    Read { index: usize, key: &'static str, path: PathBuf, source: std::io::Error },
    #[error("auth.jwt[{index}].{key} {}: {reason}", path.display())]
    Key { index: usize, key: &'static str, path: PathBuf, reason: String },
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The app id of the app claim.
    pub app: String,
    /// The user claim: Dify's `user` of the request.
    pub user: String,
    /// The issuer's `iss`, to keep rate-limit buckets of issuers apart.
    pub issuer: String,
}

/// One verification key of an issuer.
struct Key {
    kid: Option<String>,
    /// A JWK's own `alg`, when it names one: only that algorithm may use it.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// An issuer with its loaded keys.
struct Issuer {
    cfg: JwtIssuer,
    algorithms: Vec<Algorithm>,
    keys: Vec<Key>,
}

/// The configured issuers and their current keys; shared by every request,
/// replaced as a whole on reload.
pub struct JwtKeys {
    issuers: RwLock<Arc<Vec<Issuer>>>,
}

impl JwtKeys {
    /// Loads every issuer's keys; the first unusable file is the error.
    pub fn load(config: &[JwtIssuer]) -> Result<Self, JwtError> {
        Ok(JwtKeys { issuers: RwLock::new(Arc::new(load_all(config)?)) })
    }

    /// Whether any issuer is configured (no issuer: tokens are not tried).
    pub fn enabled(&self) -> bool {
        !self.current().is_empty()
    }

    /// Re-reads the key files of the issuers loaded at start; a broken file
    /// keeps every old key and is the error.
    pub fn reload(&self) -> Result<usize, JwtError> {
        let config: Vec<JwtIssuer> = self.current().iter().map(|i| i.cfg.clone()).collect();
        let fresh = load_all(&config)?;
        let n = fresh.iter().map(|i| i.keys.len()).sum();
        *self.issuers.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(n)
    }

    fn current(&self) -> Arc<Vec<Issuer>> {
        Arc::clone(&self.issuers.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Verifies `token` against the issuer its `iss` names.
    pub fn verify(&self, token: &str) -> Result<Verified, ApiError> {
        let issuers = self.current();
        let header = peek_header(token)?;
        let alg: Algorithm = header.alg.parse().map_err(|_| ApiError::TokenAlgorithm { alg: shown_alg(&header.alg) })?;
        let iss = peek_issuer(token)?;
        let issuer = issuers.iter().find(|i| i.cfg.issuer == iss).ok_or(ApiError::TokenIssuer)?;
        if !issuer.algorithms.contains(&alg) {
            return Err(ApiError::TokenAlgorithm { alg: shown_alg(&header.alg) });
        }
        let key = issuer.key_for(header.kid.as_deref(), alg)?;
        let mut v = Validation::new(alg);
        v.leeway = issuer.cfg.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.set_issuer(&[&issuer.cfg.issuer]);
        v.set_audience(&[&issuer.cfg.audience]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &v).map_err(token_error)?.claims;
        let app = claim(&claims, &issuer.cfg.app_claim)?;
        let user = claim(&claims, &issuer.cfg.user_claim)?;
        if user.chars().count() > MAX_USER_CHARS {
            return Err(ApiError::TokenInvalid {
                reason: format!("the {:?} claim is longer than {MAX_USER_CHARS} characters", issuer.cfg.user_claim),
            });
        }
        Ok(Verified { app, user, issuer: iss })
    }
}

impl Issuer {
    /// The key `kid` names; without a `kid`, the only key usable with `alg`.
    fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<&DecodingKey, ApiError> {
        let usable = |k: &&Key| k.key.family() == alg.family() && k.alg.is_none_or(|a| a == alg);
        let key = match (kid, &self.cfg.keys) {
            // A PEM key or a secret has no kid: any kid the token carries is informational.
            (_, JwtKeySource::PublicKey(_) | JwtKeySource::Secret(_)) => self.keys.first(),
            (Some(kid), JwtKeySource::Jwks(_)) => {
                let k = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)).ok_or(ApiError::TokenUnknownKid)?;
                Some(k)
            }
            (None, JwtKeySource::Jwks(_)) => {
                let mut candidates = self.keys.iter().filter(usable);
                match (candidates.next(), candidates.next()) {
                    (Some(k), None) => Some(k),
                    (Some(_), Some(_)) => {
                        return Err(ApiError::TokenInvalid { reason: "the token has no kid and the issuer has several keys".into() })
                    }
                    (None, _) => None,
                }
            }
        };
        // A key of another family (an RSA key for an HS256 token: key confusion).
        match key.filter(usable) {
            Some(k) => Ok(&k.key),
            // `Algorithm`'s Debug is its JOSE name.
            None => Err(ApiError::TokenAlgorithm { alg: format!("{alg:?}") }),
        }
    }
}

fn load_all(config: &[JwtIssuer]) -> Result<Vec<Issuer>, JwtError> {
    config.iter().enumerate().map(|(index, cfg)| load_issuer(index, cfg)).collect()
}

fn load_issuer(index: usize, cfg: &JwtIssuer) -> Result<Issuer, JwtError> {
    let (key_name, path) = cfg.keys.describe();
    let bad = |reason: String| JwtError::Key { index, key: key_name, path: path.to_owned(), reason };
    // The config reader accepts only names `Algorithm` parses.
    let algorithms: Vec<Algorithm> = cfg.algorithms.iter().filter_map(|a| a.parse().ok()).collect();
    let bytes = std::fs::read(path).map_err(|source| JwtError::Read { index, key: key_name, path: path.to_owned(), source })?;
    let keys = match &cfg.keys {
        JwtKeySource::PublicKey(_) => vec![Key { kid: None, alg: None, key: pem_key(&bytes).map_err(bad)? }],
        JwtKeySource::Jwks(_) => jwks_keys(&bytes).map_err(bad)?,
        JwtKeySource::Secret(_) => vec![Key { kid: None, alg: None, key: secret_key(&bytes).map_err(bad)? }],
    };
    for k in &keys {
        let named = k.kid.as_deref().map_or_else(String::new, |kid| format!("key {kid:?}: "));
        let fits: Vec<Algorithm> =
            algorithms.iter().copied().filter(|&a| k.alg.is_none_or(|ka| ka == a) && usable_with(&k.key, a)).collect();
        if fits.is_empty() {
            return Err(bad(format!(
                "{named}a {} key, which none of algorithms {:?} can use",
                family_name(k.key.family()),
                cfg.algorithms
            )));
        }
    }
    Ok(Issuer { cfg: cfg.clone(), algorithms, keys })
}

/// Whether `key` can verify `alg` signatures: same family, and the crypto
/// backend accepts the key for it (curve and size). A probe signature that
/// cannot match tells a usable key (`Ok(false)`) from a broken one (`Err`).
fn usable_with(key: &DecodingKey, alg: Algorithm) -> bool {
    if key.family() != alg.family() {
        return false;
    }
    // The Ed25519 verifier slices 32 bytes without checking: check first.
    if key.family() == AlgorithmFamily::Ed && key.try_get_as_bytes().map(<[u8]>::len) != Ok(32) {
        return false;
    }
    jsonwebtoken::crypto::verify("AAAA", b"probe", key, alg).is_ok()
}

/// A PEM public key: SPKI (`PUBLIC KEY`, Ed25519, RSA or EC) or PKCS#1
/// (`RSA PUBLIC KEY`). A private key is refused: it must not sit here.
fn pem_key(bytes: &[u8]) -> Result<DecodingKey, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not a PEM file (not text)".to_owned())?;
    let label = text.lines().find_map(|l| l.trim().strip_prefix("-----BEGIN ")).and_then(|l| l.strip_suffix("-----"));
    match label {
        Some("PUBLIC KEY" | "RSA PUBLIC KEY") => {}
        Some(l) if l.contains("PRIVATE") => return Err(format!("holds a private key ({l}); give the issuer's public key")),
        Some(l) => return Err(format!("holds a {l}, not a public key")),
        None => return Err("not a PEM file (no -----BEGIN line)".to_owned()),
    }
    DecodingKey::from_ed_pem(bytes)
        .or_else(|_| DecodingKey::from_ec_pem(bytes))
        .or_else(|_| DecodingKey::from_rsa_pem(bytes))
        .map_err(|e| format!("not an Ed25519, EC or RSA public key: {e}"))
}

/// The signing keys of a JWKS (`{"keys": [...]}`); encryption keys are
/// skipped, symmetric ones refused (a JWKS is public).
fn jwks_keys(bytes: &[u8]) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS ({{\"keys\": [...]}}): {e}"))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let kid = jwk.common.key_id.clone();
        let named = kid.as_deref().map_or_else(|| format!("keys[{i}]"), |k| format!("key {k:?}"));
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err(format!("{named} is a symmetric (oct) key; a JWKS holds public keys only"));
        }
        if kid.is_some() && keys.iter().any(|k: &Key| k.kid == kid) {
            return Err(format!("{named} appears twice"));
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => Some(Algorithm::try_from(a).map_err(|_| format!("{named} has alg {a}, which is not a signature algorithm"))?),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("{named}: {e}"))?;
        keys.push(Key { kid, alg, key });
    }
    if keys.is_empty() {
        return Err("holds no signing key".to_owned());
    }
    if keys.len() > 1 && keys.iter().any(|k| k.kid.is_none()) {
        return Err("a JWKS with several keys needs a kid on each".to_owned());
    }
    Ok(keys)
}

/// An HS256 secret: the file's bytes without a trailing newline.
fn secret_key(bytes: &[u8]) -> Result<DecodingKey, String> {
    let secret = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!("the secret is {} bytes; HS256 needs at least {MIN_SECRET_BYTES}", secret.len()));
    }
    DecodingKey::from_secret(secret).map_err(|e| e.to_string())
}

/// Whether `token` has the shape of a compact JWS: three base64url parts.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = 0;
    for part in token.split('.') {
        parts += 1;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return false;
        }
    }
    parts == 3
}

#[derive(Deserialize)]
struct PeekHeader {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct PeekClaims {
    iss: Option<String>,
}

/// The header's `alg` and `kid`, read as strings so that `none` or an
/// unknown name is reported as such.
fn peek_header(token: &str) -> Result<PeekHeader, ApiError> {
    let part = token.split('.').next().unwrap_or_default();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ApiError::TokenInvalid { reason: "the header is not base64url".into() })?;
    serde_json::from_slice(&json).map_err(|_| ApiError::TokenInvalid { reason: "the header is not a JWT header with an alg".into() })
}

/// The unverified `iss`, only to pick the issuer whose keys then verify it.
fn peek_issuer(token: &str) -> Result<String, ApiError> {
    let claims: PeekClaims = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|_| ApiError::TokenInvalid { reason: "the claims are not a JSON object".into() })?;
    claims.iss.ok_or(ApiError::TokenIssuer)
}

/// A string claim (a number is taken as its decimal text).
fn claim(claims: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(ApiError::TokenInvalid { reason: format!("the token has no {name:?} claim") }),
    }
}

/// The library's verdict as the error a client sees.
fn token_error(e: jsonwebtoken::errors::Error) -> ApiError {
    match e.kind() {
        ErrorKind::InvalidSignature => ApiError::TokenSignature,
        ErrorKind::ExpiredSignature => ApiError::TokenExpired,
        ErrorKind::ImmatureSignature => ApiError::TokenNotYetValid,
        ErrorKind::InvalidAudience => ApiError::TokenAudience,
        ErrorKind::InvalidIssuer => ApiError::TokenIssuer,
        ErrorKind::MissingRequiredClaim(c) => ApiError::TokenInvalid { reason: format!("the token has no {c:?} claim") },
        ErrorKind::InvalidClaimFormat(c) => ApiError::TokenInvalid { reason: format!("the {c:?} claim has the wrong type") },
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat | ErrorKind::UnsupportedAlgorithm => {
            ApiError::TokenAlgorithm { alg: "of this token".into() }
        }
        _ => ApiError::TokenInvalid { reason: "the token is malformed".into() },
    }
}

fn family_name(f: AlgorithmFamily) -> &'static str {
    match f {
        AlgorithmFamily::Hmac => "HMAC",
        AlgorithmFamily::Rsa => "RSA",
        AlgorithmFamily::Ec => "EC",
        AlgorithmFamily::Ed => "Ed25519",
    }
}

/// A client-chosen `alg` fit for a message: short and plain, else `?`.
fn shown_alg(alg: &str) -> String {
    if !alg.is_empty() && alg.len() <= 16 && alg.bytes().all(|b| b.is_ascii_alphanumeric()) {
        alg.to_owned()
    } else {
        "?".to_owned()
    }
}

#[cfg(test)]
mod tests;

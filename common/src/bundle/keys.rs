//! Signing keys, key ids, `manifest.sig` and the trust store.
//!
//! Owns: generating an ed25519 key pair into `PREFIX` (PKCS#8 PEM, mode
//! 0600, never overwriting) and `PREFIX.pub` (SPKI PEM), as `openssl
//! genpkey -algorithm ed25519` writes them; reading them back; key ids
//! (the first 16 hex digits of sha256 over the raw 32-byte public key);
//! the JSON of `manifest.sig`; and the trust store (every `*.pub` of a
//! directory). Verification is `verify_strict` over the exact bytes of
//! `manifest.json`.
//! Must not: read bundles (see `read`) or decide policy.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{BundleError, MAX_SIGNATURES};

/// Key files are small; a larger one is not a key.
const MAX_KEY_FILE: u64 = 16 << 10;

/// `manifest.sig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    pub signatures: Vec<SignatureEntry>,
}

/// One signature over the exact bytes of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// [`key_id`] of the signing key.
    pub key_id: String,
    /// Standard base64 (with padding) of the 64-byte ed25519 signature.
    pub signature: String,
}

impl SignatureFile {
    /// Parses and checks `manifest.sig`; the reason of an error names the entry.
    pub fn parse(bytes: &[u8]) -> Result<SignatureFile, String> {
        let file: SignatureFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.signatures.len() > MAX_SIGNATURES {
            return Err(format!("{} signatures, more than the {MAX_SIGNATURES} allowed", file.signatures.len()));
        }
        for (i, s) in file.signatures.iter().enumerate() {
            if s.key_id.len() != 16 || !s.key_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(format!("signatures[{i}].key_id {:?} is not 16 lower-case hex digits", s.key_id));
            }
            s.decode().map_err(|why| format!("signatures[{i}] (key {}): {why}", s.key_id))?;
        }
        Ok(file)
    }

    /// The JSON written into the bundle.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// The key ids that signed, in order.
    pub fn key_ids(&self) -> Vec<String> {
        self.signatures.iter().map(|s| s.key_id.clone()).collect()
    }

    /// Adds `key`'s signature over `manifest`, replacing an earlier one by the same key.
    /// Returns whether one was replaced.
    pub fn add(&mut self, key: &SigningKey, manifest: &[u8]) -> bool {
        let id = key_id(&key.verifying_key());
        let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(manifest).to_bytes());
        let before = self.signatures.len();
        self.signatures.retain(|s| s.key_id != id);
        let replaced = self.signatures.len() != before;
        self.signatures.push(SignatureEntry { key_id: id, signature });
        replaced
    }
}

impl SignatureEntry {
    fn decode(&self) -> Result<Signature, String> {
        let raw = base64::engine::general_purpose::STANDARD.decode(&self.signature).map_err(|e| format!("signature is not base64: {e}"))?;
        let bytes: [u8; 64] = raw.try_into().map_err(|raw: Vec<u8>| format!("signature is {} bytes, not 64", raw.len()))?;
        Ok(Signature::from_bytes(&bytes))
    }
}

/// The id of a public key: the first 16 lower-case hex digits of sha256
/// over its 32 raw bytes (`openssl pkey -pubin -in K.pub -outform DER | tail -c 32 | sha256sum`).
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A key pair as `keys gen-signing` wrote it.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub private: PathBuf,
    pub public: PathBuf,
    pub key_id: String,
}

/// `PREFIX.pub`.
pub fn public_path(prefix: &Path) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Generates a key pair: `prefix` (PKCS#8 PEM, 0600) and `prefix.pub` (SPKI
/// PEM, 0644). Neither file may exist; both are created with O_EXCL, written
/// and fsynced, and so is their directory. If the public key cannot be
/// written, the private key just created is removed.
pub fn write_signing_key(prefix: &Path) -> Result<KeyPair, BundleError> {
    let public = public_path(prefix);
    for path in [prefix, public.as_path()] {
        if path.symlink_metadata().is_ok() {
            return Err(BundleError::KeyExists { path: path.to_owned() });
        }
    }
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed[..]);
    let signing = SigningKey::from_bytes(&seed);
    // Without the public key inside (PKCS#8 v1), as openssl writes it.
    let pair = ed25519_dalek::pkcs8::KeypairBytes { secret_key: *seed, public_key: None };
    let key_err = |reason: String| BundleError::Key { path: prefix.to_owned(), what: "private", reason };
    let private_pem = pair.to_pkcs8_pem(LineEnding::LF).map_err(|e| key_err(e.to_string()))?;
    let public_pem = signing.verifying_key().to_public_key_pem(LineEnding::LF).map_err(|e| key_err(e.to_string()))?;
    write_new(prefix, private_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, public_pem.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(prefix);
        return Err(e);
    }
    let dir = parent_dir(prefix);
    sync_dir(&dir).map_err(|source| BundleError::Write { path: dir.clone(), source })?;
    Ok(KeyPair { private: prefix.to_owned(), public, key_id: key_id(&signing.verifying_key()) })
}

/// Creates `path` (never replacing a file), writes `bytes` with `mode`, fsyncs.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BundleError> {
    let write_err = |source| BundleError::Write { path: path.to_owned(), source };
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            BundleError::KeyExists { path: path.to_owned() }
        } else {
            write_err(source)
        }
    })?;
    // The umask may have narrowed the mode; set it exactly.
    let written = std::os::unix::fs::PermissionsExt::from_mode(mode);
    let result = file.set_permissions(written).and_then(|()| file.write_all(bytes)).and_then(|()| file.sync_all());
    if let Err(source) = result {
        let _ = std::fs::remove_file(path);
        return Err(write_err(source));
    }
    Ok(())
}

/// Reads a small text file, at most [`MAX_KEY_FILE`] bytes.
fn read_key_file(path: &Path, what: &'static str) -> Result<String, BundleError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| BundleError::Read { file: path.to_owned(), source })?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1).read_to_string(&mut text).map_err(|e| BundleError::Key {
        path: path.to_owned(),
        what,
        reason: format!("not a PEM text file ({e})"),
    })?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(BundleError::Key { path: path.to_owned(), what, reason: "larger than 16 KiB".to_owned() });
    }
    Ok(text)
}

/// Reads a private key (PKCS#8 PEM, as `write_signing_key` or `openssl genpkey -algorithm ed25519` writes it).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, BundleError> {
    let text = zeroize::Zeroizing::new(read_key_file(path, "private")?);
    SigningKey::from_pkcs8_pem(&text).map_err(|e| BundleError::Key { path: path.to_owned(), what: "private", reason: e.to_string() })
}

/// Reads a public key (SPKI PEM: `-----BEGIN PUBLIC KEY-----`).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, BundleError> {
    let text = read_key_file(path, "public")?;
    VerifyingKey::from_public_key_pem(&text).map_err(|e| BundleError::Key { path: path.to_owned(), what: "public", reason: e.to_string() })
}

/// A public key of the trust store.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key_id: String,
    pub path: PathBuf,
    pub key: VerifyingKey,
}

/// The keys a bundle may be signed with.
#[derive(Debug, Clone)]
pub struct TrustStore {
    dir: PathBuf,
    keys: Vec<TrustedKey>,
}

impl TrustStore {
    /// Where the daemon and `edgeaictl bundle verify` look by default.
    pub const DEFAULT_DIR: &'static str = "/etc/edgeai/trust.d";

    /// Every `*.pub` file in `dir` (sorted by name), each an ed25519 SPKI PEM.
    /// A directory that cannot be read, or a `.pub` file that is not such a
    /// key, is an error naming it; other files are ignored. An empty
    /// directory loads (and trusts no bundle).
    pub fn load(dir: &Path) -> Result<TrustStore, BundleError> {
        let dir_err = |source| BundleError::TrustDir { dir: dir.to_owned(), source };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(dir_err)? {
            let path = entry.map_err(dir_err)?.path();
            if path.extension().is_some_and(|e| e == "pub") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut keys: Vec<TrustedKey> = Vec::new();
        for path in paths {
            let key = load_public_key(&path)?;
            let key_id = key_id(&key);
            if !keys.iter().any(|k| k.key == key) {
                keys.push(TrustedKey { key_id, path, key });
            }
        }
        Ok(TrustStore { dir: dir.to_owned(), keys })
    }

    /// A store of the given keys (`dir` only names it in messages).
    pub fn from_keys(dir: PathBuf, keys: impl IntoIterator<Item = VerifyingKey>) -> TrustStore {
        let keys = keys.into_iter().map(|key| TrustedKey { key_id: key_id(&key), path: dir.clone(), key }).collect();
        TrustStore { dir, keys }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The ids of the trusted keys whose signatures verify over `manifest`
    /// (at least one), or why none does: unsigned, signed only by keys not
    /// trusted (both [`super::ErrorClass::Untrusted`]), or a trusted key's
    /// signature that does not match (the manifest was altered).
    pub fn verify(&self, file: &Path, manifest: &[u8], sigs: &SignatureFile) -> Result<Vec<String>, BundleError> {
        if sigs.signatures.is_empty() {
            return Err(BundleError::Unsigned { file: file.to_owned() });
        }
        let mut good = Vec::new();
        let mut mismatched = None;
        for entry in &sigs.signatures {
            let Ok(signature) = entry.decode() else { continue };
            for trusted in self.keys.iter().filter(|k| k.key_id == entry.key_id) {
                if trusted.key.verify_strict(manifest, &signature).is_ok() {
                    if !good.contains(&entry.key_id) {
                        good.push(entry.key_id.clone());
                    }
                } else {
                    mismatched.get_or_insert_with(|| entry.key_id.clone());
                }
            }
        }
        if !good.is_empty() {
            return Ok(good);
        }
        if let Some(key_id) = mismatched {
            return Err(BundleError::BadSignature { file: file.to_owned(), key_id });
        }
        Err(BundleError::Untrusted {
            file: file.to_owned(),
            signed_by: sigs.key_ids(),
            trust_dir: self.dir.clone(),
            trusted: self.keys.iter().map(|k| k.key_id.clone()).collect(),
        })
    }
}

/// The directory holding `path` (`.` for a bare file name).
pub(super) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// fsync of a directory, so the names created in it survive a power cut.
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

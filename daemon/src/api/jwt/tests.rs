//! The verifier against tokens minted here from the fixed test keys in
//! tests/fixtures/jwt/ (see its README).

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::{looks_like_jwt, JwtError, JwtKeys, Verified};
use crate::api::error::ApiError;
use crate::config::{JwtIssuer, JwtKeySource};

const ISS: &str = "https://idp.test";
const AUD: &str = "edgeai";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/jwt").join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture key")
}

fn issuer(keys: JwtKeySource, algorithms: &[&str]) -> JwtIssuer {
    JwtIssuer {
        issuer: ISS.into(),
        audience: AUD.into(),
        keys,
        algorithms: algorithms.iter().map(|a| (*a).to_owned()).collect(),
        app_claim: "app".into(),
        user_claim: "sub".into(),
        leeway: Duration::from_secs(5),
    }
}

fn encoding_key(alg: Algorithm, private: &str) -> EncodingKey {
    let pem = read(private);
    match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .expect("private key")
}

fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).expect("time")
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "app": "demo", "exp": now() + 300})
}

fn mint(alg: Algorithm, private: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    encode(&h, claims, &encoding_key(alg, private)).expect("encode")
}

fn jwk(alg: Algorithm, private: &str, kid: &str) -> Jwk {
    let mut j = Jwk::from_encoding_key(&encoding_key(alg, private), alg).expect("jwk");
    j.common.key_id = Some(kid.into());
    j
}

fn write_jwks(dir: &Path, keys: Vec<Jwk>) -> PathBuf {
    let path = dir.join("jwks.json");
    std::fs::write(&path, serde_json::to_vec(&JwkSet { keys }).expect("json")).expect("write jwks");
    path
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

#[test]
fn eddsa_rs256_and_es256_tokens_verify_from_pem_keys() {
    for (alg, name, public, private) in [
        (Algorithm::EdDSA, "EdDSA", "ed25519.pub", "ed25519.key"),
        (Algorithm::RS256, "RS256", "rsa.pub", "rsa.key"),
        (Algorithm::ES256, "ES256", "ec.pub", "ec.key"),
    ] {
        let keys = JwtKeys::load(&[issuer(JwtKeySource::PublicKey(fixture(public)), &[name])]).expect("loads");
        let v = keys.verify(&mint(alg, private, None, &claims())).expect(name);
        assert_eq!(v, Verified { app: "demo".into(), user: "alice".into(), issuer: ISS.into() });
    }
}

#[test]
fn every_bad_token_gets_its_own_reason() {
    let keys = JwtKeys::load(&[issuer(JwtKeySource::PublicKey(fixture("ed25519.pub")), &["EdDSA"])]).expect("loads");
    let with = |patch: Value| {
        let mut c = claims();
        for (k, v) in patch.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let ed = |c: &Value| mint(Algorithm::EdDSA, "ed25519.key", None, c);
    // Signed by another Ed25519 key: the signature does not match.
    let forged = mint(Algorithm::EdDSA, "ed25519-2.key", None, &claims());
    assert!(matches!(keys.verify(&forged), Err(ApiError::TokenSignature)));
    // A valid token whose payload was swapped afterwards.
    let good = ed(&claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let other = b64(&with(json!({"sub": "mallory"})));
    parts[1] = &other;
    assert!(matches!(keys.verify(&parts.join(".")), Err(ApiError::TokenSignature)));
    assert!(matches!(keys.verify(&ed(&with(json!({"exp": now() - 60})))), Err(ApiError::TokenExpired)));
    assert!(keys.verify(&ed(&with(json!({"exp": now() - 2})))).is_ok(), "within the leeway");
    assert!(matches!(keys.verify(&ed(&with(json!({"nbf": now() + 60})))), Err(ApiError::TokenNotYetValid)));
    assert!(matches!(keys.verify(&ed(&with(json!({"aud": "someone-else"})))), Err(ApiError::TokenAudience)));
    assert!(keys.verify(&ed(&with(json!({"aud": ["x", AUD]})))).is_ok(), "aud may be a list containing ours");
    assert!(matches!(keys.verify(&ed(&with(json!({"iss": "https://evil.test"})))), Err(ApiError::TokenIssuer)));
    let mut no_exp = claims();
    no_exp.as_object_mut().expect("object").remove("exp");
    assert!(matches!(keys.verify(&ed(&no_exp)), Err(ApiError::TokenInvalid { reason }) if reason.contains("exp")));
    let mut no_app = claims();
    no_app.as_object_mut().expect("object").remove("app");
    assert!(matches!(keys.verify(&ed(&no_app)), Err(ApiError::TokenInvalid { reason }) if reason.contains("\"app\"")));
    // alg=none: an unsigned token.
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims()));
    assert!(!looks_like_jwt(&none), "an empty signature part is not a JWS");
    let none = format!("{none}AAAA");
    assert!(matches!(keys.verify(&none), Err(ApiError::TokenAlgorithm { alg }) if alg == "none"));
    // An allowed family but not in this issuer's list.
    let rs = mint(Algorithm::RS256, "rsa.key", None, &claims());
    assert!(matches!(keys.verify(&rs), Err(ApiError::TokenAlgorithm { alg }) if alg == "RS256"));
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let keys = JwtKeys::load(&[issuer(JwtKeySource::PublicKey(fixture("rsa.pub")), &["RS256"])]).expect("loads");
    let confused =
        encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(&read("rsa.pub")).expect("key")).expect("encode");
    assert!(matches!(keys.verify(&confused), Err(ApiError::TokenAlgorithm { alg }) if alg == "HS256"));
}

#[test]
fn jwks_keys_are_chosen_by_kid_and_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_jwks(dir.path(), vec![jwk(Algorithm::EdDSA, "ed25519.key", "k1"), jwk(Algorithm::RS256, "rsa.key", "r1")]);
    let keys = JwtKeys::load(&[issuer(JwtKeySource::Jwks(path.clone()), &["EdDSA", "RS256"])]).expect("loads");
    assert!(keys.verify(&mint(Algorithm::EdDSA, "ed25519.key", Some("k1"), &claims())).is_ok());
    assert!(keys.verify(&mint(Algorithm::RS256, "rsa.key", Some("r1"), &claims())).is_ok());
    let k2 = mint(Algorithm::EdDSA, "ed25519-2.key", Some("k2"), &claims());
    assert!(matches!(keys.verify(&k2), Err(ApiError::TokenUnknownKid)));
    // Signed with k1's algorithm family but naming the RSA key.
    let crossed = mint(Algorithm::EdDSA, "ed25519.key", Some("r1"), &claims());
    assert!(matches!(keys.verify(&crossed), Err(ApiError::TokenAlgorithm { .. })));
    let no_kid = mint(Algorithm::EdDSA, "ed25519.key", None, &claims());
    assert!(keys.verify(&no_kid).is_ok(), "the only Ed25519 key of the set");

    // Rotation: k2 added, both work; k1 removed, only k2.
    write_jwks(dir.path(), vec![jwk(Algorithm::EdDSA, "ed25519.key", "k1"), jwk(Algorithm::EdDSA, "ed25519-2.key", "k2")]);
    assert_eq!(keys.reload().expect("reload"), 2);
    assert!(keys.verify(&k2).is_ok());
    assert!(keys.verify(&mint(Algorithm::EdDSA, "ed25519.key", Some("k1"), &claims())).is_ok());
    write_jwks(dir.path(), vec![jwk(Algorithm::EdDSA, "ed25519-2.key", "k2")]);
    keys.reload().expect("reload");
    assert!(matches!(keys.verify(&mint(Algorithm::EdDSA, "ed25519.key", Some("k1"), &claims())), Err(ApiError::TokenUnknownKid)));
    // A broken file on reload keeps the keys in use.
    std::fs::write(&path, "{not json").expect("write");
    assert!(matches!(keys.reload(), Err(JwtError::Key { .. })));
    assert!(keys.verify(&k2).is_ok());
}

#[test]
fn unusable_key_files_are_refused_naming_key_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let load = |keys: JwtKeySource, algs: &[&str]| JwtKeys::load(&[issuer(keys, algs)]).err().map(|e| e.to_string()).unwrap_or_default();
    let missing = dir.path().join("nope.pem");
    let msg = load(JwtKeySource::PublicKey(missing.clone()), &["EdDSA"]);
    assert!(msg.starts_with(&format!("auth.jwt[0].public_key_file {}: ", missing.display())), "{msg}");
    let msg = load(JwtKeySource::PublicKey(fixture("ed25519.key")), &["EdDSA"]);
    assert!(msg.contains("private key"), "{msg}");
    let msg = load(JwtKeySource::PublicKey(fixture("ec.pub")), &["EdDSA"]);
    assert!(msg.contains("a EC key, which none of algorithms [\"EdDSA\"] can use"), "{msg}");
    let msg = load(JwtKeySource::PublicKey(fixture("ec384.pub")), &["ES256"]);
    assert!(msg.contains("which none of algorithms [\"ES256\"]"), "a P-384 key cannot verify ES256: {msg}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").expect("write");
    assert!(load(JwtKeySource::PublicKey(garbage), &["EdDSA"]).contains("not a PEM file"));
    let oct = dir.path().join("oct.json");
    std::fs::write(&oct, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"s"}]}"#).expect("write");
    let msg = load(JwtKeySource::Jwks(oct.clone()), &["EdDSA"]);
    assert!(msg.starts_with(&format!("auth.jwt[0].jwks_file {}: ", oct.display())) && msg.contains("symmetric"), "{msg}");
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "tooshort\n").expect("write");
    assert!(load(JwtKeySource::Secret(short), &["HS256"]).contains("at least 32"));
}

#[test]
fn hs256_verifies_with_a_secret_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hs.secret");
    let secret = "0123456789abcdef0123456789abcdef";
    std::fs::write(&path, format!("{secret}\n")).expect("write");
    let keys = JwtKeys::load(&[issuer(JwtKeySource::Secret(path), &["HS256"])]).expect("loads");
    let token =
        encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(secret.as_bytes()).expect("key")).expect("encode");
    assert!(keys.verify(&token).is_ok());
}

#[test]
fn only_three_base64url_parts_look_like_a_jwt() {
    assert!(looks_like_jwt("eyJh.eyJi.c2ln"));
    for not in ["app-abc", "a.b", "a.b.c.d", "a..c", "a.b.c=", "a.b.c d", ""] {
        assert!(!looks_like_jwt(not), "{not}");
    }
}

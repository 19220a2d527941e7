//! JWT bearer tokens (`[[auth.jwt]]`) against the real daemon over real
//! HTTP: EdDSA, RS256 and ES256 tokens open the app their app claim names on
//! the Dify and OpenAI routes; the user claim is the Dify `user` (a body or
//! query `user` is ignored); forged, expired, not-yet-valid, wrong-audience,
//! wrong-issuer, alg=none, key-confusion and unknown-kid tokens and tokens
//! for an app not served are refused with their own message, and never
//! logged; JWKS keys rotate by kid on SIGHUP; an HS256 issuer without
//! `allow_hs256` and a missing key file stop the start with exit 78 (and
//! fail `edgeaid --check-config`).
//! Tokens are minted here from the fixed keys in tests/fixtures/jwt/.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use edgeai_tests::{paths, Client, DaemonBuilder};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const AUD: &str = "edgeai";
const ED_ISS: &str = "https://ed.idp.test";
const RS_ISS: &str = "https://rs.idp.test";
const EC_ISS: &str = "https://ec.idp.test";
const JWKS_ISS: &str = "https://jwks.idp.test";

fn fixture(name: &str) -> PathBuf {
    paths::repo_root().join("tests/fixtures/jwt").join(name)
}

fn encoding_key(alg: Algorithm, private: &str) -> EncodingKey {
    let pem = std::fs::read(fixture(private)).unwrap();
    match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    }
}

fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap()
}

/// Claims of a good token for `iss`, with `patch` merged in (`null` removes).
fn claims(iss: &str, patch: Value) -> Value {
    let mut c = json!({"iss": iss, "aud": AUD, "sub": "alice", "app": "demo", "exp": now() + 600, "iat": now()});
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn mint(alg: Algorithm, private: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    encode(&h, claims, &encoding_key(alg, private)).unwrap()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn jwk(alg: Algorithm, private: &str, kid: &str) -> Jwk {
    let mut j = Jwk::from_encoding_key(&encoding_key(alg, private), alg).unwrap();
    j.common.key_id = Some(kid.into());
    j
}

fn write_jwks(path: &Path, keys: Vec<Jwk>) {
    std::fs::write(path, serde_json::to_vec(&JwkSet { keys }).unwrap()).unwrap();
}

fn issuer(iss: &str, key: (&str, &Path), algorithms: &[&str]) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("issuer".into(), iss.into());
    t.insert("audience".into(), AUD.into());
    t.insert(key.0.into(), key.1.display().to_string().into());
    t.insert("algorithms".into(), toml::Value::Array(algorithms.iter().map(|a| (*a).into()).collect()));
    t.insert("app_claim".into(), "app".into());
    t.insert("user_claim".into(), "sub".into());
    t.insert("leeway_secs".into(), 5.into());
    toml::Value::Table(t)
}

/// The status, Dify code and message of a refused `GET /v1/parameters`.
fn refused(c: &Client, token: &str) -> (u16, String, String) {
    let r = c.with_key(token).get("/v1/parameters");
    let body = r.json();
    (r.status, body["code"].as_str().unwrap_or_default().to_owned(), body["message"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn signed_tokens_open_their_app_as_their_user_and_bad_ones_are_refused() {
    let b = DaemonBuilder::new();
    let jwks = b.dir().join("jwks.json");
    write_jwks(&jwks, vec![jwk(Algorithm::EdDSA, "ed25519.key", "k1"), jwk(Algorithm::EdDSA, "ed25519-2.key", "k2")]);
    let mut off = toml::Table::new();
    for (k, v) in [("id", "off"), ("name", "API off"), ("mode", "chat"), ("pre_prompt", "x")] {
        off.insert(k.into(), v.into());
    }
    off.insert("enable_api".into(), false.into());
    let issuers = vec![
        issuer(ED_ISS, ("public_key_file", &fixture("ed25519.pub")), &["EdDSA"]),
        issuer(RS_ISS, ("public_key_file", &fixture("rsa.pub")), &["RS256"]),
        issuer(EC_ISS, ("public_key_file", &fixture("ec.pub")), &["ES256"]),
        issuer(JWKS_ISS, ("jwks_file", &jwks), &["EdDSA"]),
    ];
    let d = b.set("auth.jwt", toml::Value::Array(issuers)).add_app(off).start();
    let c = d.client();

    let ed = mint(Algorithm::EdDSA, "ed25519.key", None, &claims(ED_ISS, json!({})));
    let rs = mint(Algorithm::RS256, "rsa.key", None, &claims(RS_ISS, json!({})));
    let ec = mint(Algorithm::ES256, "ec.key", None, &claims(EC_ISS, json!({})));
    let kid2 = mint(Algorithm::EdDSA, "ed25519-2.key", Some("k2"), &claims(JWKS_ISS, json!({})));
    for (name, token) in [("EdDSA", &ed), ("RS256", &rs), ("ES256", &ec), ("JWKS kid k2", &kid2)] {
        let r = c.with_key(token).get("/v1/parameters");
        assert_eq!(r.status, 200, "{name}: {}", r.text());
    }
    // The OpenAI routes take the same tokens.
    let models = c.with_key(&rs).get("/v1/models").expect_json(200);
    assert!(models["data"].as_array().is_some_and(|m| !m.is_empty()), "{models}");

    // The user claim is the Dify user: the body's "bob" is ignored.
    let sent = c.with_key(&ed).post_json("/v1/chat-messages", &edgeai_tests::chat_body("Say hi", "bob", "blocking", None)).expect_json(200);
    let conv = sent["conversation_id"].as_str().unwrap().to_owned();
    let listed = |client: &Client, user: &str| -> Vec<String> {
        let v = client.get(&format!("/v1/conversations?user={user}")).expect_json(200);
        v["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(listed(&c, "alice"), vec![conv.clone()], "the API key holder sees it under alice");
    assert!(listed(&c, "bob").is_empty(), "nothing was filed under the body's user");
    assert_eq!(listed(&c.with_key(&rs), "bob"), vec![conv.clone()], "a token lists its own user's, whatever the query says");
    let other = mint(Algorithm::EdDSA, "ed25519.key", None, &claims(ED_ISS, json!({"sub": "carol"})));
    assert!(listed(&c.with_key(&other), "alice").is_empty(), "carol's token cannot list alice's conversations");
    let msgs = c.with_key(&other).get(&format!("/v1/messages?user=alice&conversation_id={conv}"));
    assert_eq!(msgs.status, 404, "carol's token cannot read alice's messages: {}", msgs.text());

    // Refusals, each with its reason and never the token.
    let forged = mint(Algorithm::EdDSA, "ed25519-2.key", None, &claims(ED_ISS, json!({})));
    let mut parts: Vec<String> = ed.split('.').map(str::to_owned).collect();
    parts[1] = b64(&claims(ED_ISS, json!({"sub": "mallory"})));
    let swapped = parts.join(".");
    let none = format!("{}.{}.AAAA", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims(ED_ISS, json!({}))));
    let rsa_pem = std::fs::read(fixture("rsa.pub")).unwrap();
    let confused =
        encode(&Header::new(Algorithm::HS256), &claims(RS_ISS, json!({})), &EncodingKey::from_secret(&rsa_pem).unwrap()).unwrap();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("forged signature", forged, 401, "signature is invalid"),
        ("payload swapped", swapped, 401, "signature is invalid"),
        ("expired", mint(Algorithm::EdDSA, "ed25519.key", None, &claims(ED_ISS, json!({"exp": now() - 120}))), 401, "has expired"),
        ("not yet valid", mint(Algorithm::EdDSA, "ed25519.key", None, &claims(ED_ISS, json!({"nbf": now() + 120}))), 401, "not valid yet"),
        ("no exp", mint(Algorithm::EdDSA, "ed25519.key", None, &claims(ED_ISS, json!({"exp": null}))), 401, "no \"exp\" claim"),
        ("wrong audience", mint(Algorithm::EdDSA, "ed25519.key", None, &claims(ED_ISS, json!({"aud": "other"}))), 401, "another audience"),
        ("wrong issuer", mint(Algorithm::EdDSA, "ed25519.key", None, &claims("https://evil.test", json!({}))), 401, "unknown issuer"),
        ("alg none", none, 401, "algorithm none is not allowed"),
        ("HS256 with the RSA public key", confused, 401, "algorithm HS256 is not allowed"),
        (
            "RS256 at an EdDSA issuer",
            mint(Algorithm::RS256, "rsa.key", None, &claims(ED_ISS, json!({}))),
            401,
            "algorithm RS256 is not allowed",
        ),
        ("unknown kid", mint(Algorithm::EdDSA, "ed25519.key", Some("k9"), &claims(JWKS_ISS, json!({}))), 401, "unknown key (kid)"),
        ("unknown app", mint(Algorithm::EdDSA, "ed25519.key", None, &claims(ED_ISS, json!({"app": "nope"}))), 403, "not served"),
        ("app with the API off", mint(Algorithm::EdDSA, "ed25519.key", None, &claims(ED_ISS, json!({"app": "off"}))), 403, "disabled"),
        ("no user claim", mint(Algorithm::EdDSA, "ed25519.key", None, &claims(ED_ISS, json!({"sub": null}))), 401, "no \"sub\" claim"),
    ];
    for (name, token, status, says) in &cases {
        let (got, code, message) = refused(&c, token);
        let want_code = if *status == 401 { "unauthorized" } else { "forbidden" };
        assert_eq!((got, code.as_str()), (*status, want_code), "{name}: {message}");
        assert!(message.contains(says), "{name}: {message:?} should say {says:?}");
        assert!(!message.contains(token.as_str()), "{name}: the message echoes the token");
    }
    let openai = c.with_key(&cases[2].1).get("/v1/models");
    assert_eq!(openai.status, 401, "an expired token on the OpenAI routes: {}", openai.text());

    let log = d.dump_logs();
    for token in [&ed, &rs, &ec, &kid2].into_iter().chain(cases.iter().map(|c| &c.1)) {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token reached the log");
    }
}

#[test]
fn jwks_keys_rotate_by_kid_on_sighup() {
    let b = DaemonBuilder::new();
    let jwks = b.dir().join("jwks.json");
    write_jwks(&jwks, vec![jwk(Algorithm::EdDSA, "ed25519.key", "k1")]);
    let d = b.set("auth.jwt", toml::Value::Array(vec![issuer(JWKS_ISS, ("jwks_file", &jwks), &["EdDSA"])])).start();
    let c = d.client();
    let k1 = mint(Algorithm::EdDSA, "ed25519.key", Some("k1"), &claims(JWKS_ISS, json!({})));
    let k2 = mint(Algorithm::EdDSA, "ed25519-2.key", Some("k2"), &claims(JWKS_ISS, json!({})));
    let status = |t: &str| c.with_key(t).get("/v1/parameters").status;
    assert_eq!((status(&k1), status(&k2)), (200, 401), "k2 is not published yet");

    let reloads = |n: usize| {
        d.sighup();
        d.wait_log_count("reload: JWT issuer keys read again", n, Duration::from_secs(30));
    };
    write_jwks(&jwks, vec![jwk(Algorithm::EdDSA, "ed25519.key", "k1"), jwk(Algorithm::EdDSA, "ed25519-2.key", "k2")]);
    reloads(1);
    assert_eq!((status(&k1), status(&k2)), (200, 200), "both keys during the rotation");
    write_jwks(&jwks, vec![jwk(Algorithm::EdDSA, "ed25519-2.key", "k2")]);
    reloads(2);
    assert_eq!((status(&k1), status(&k2)), (401, 200), "k1 withdrawn");
    let (_, _, message) = refused(&c, &k1);
    assert!(message.contains("unknown key (kid)"), "{message}");

    // A broken file on reload: an error in the log, the keys in use stay.
    std::fs::write(&jwks, "{\"keys\": [").unwrap();
    d.sighup();
    let line = d.wait_log_message("reload: JWT issuer keys not reloaded; keeping the previous keys", Duration::from_secs(30));
    let error = line.field_str("error").unwrap_or_default();
    assert!(error.contains("auth.jwt[0].jwks_file") && error.contains("jwks.json"), "{error}");
    assert_eq!(status(&k2), 200);
}

#[test]
fn hs256_without_allow_hs256_and_missing_key_files_stop_the_start_with_78() {
    let b = DaemonBuilder::new();
    let secret = b.dir().join("hs.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut d = b.set("auth.jwt", toml::Value::Array(vec![issuer(RS_ISS, ("secret_file", &secret), &["HS256"])])).start_no_wait();
    let status = d.wait_exit(Duration::from_secs(60));
    let err = d.logs().into_iter().map(|l| l.raw).collect::<Vec<_>>().join("\n");
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("auth.jwt[0].secret_file") && err.contains("allow_hs256 = true"), "{err}");

    let b = DaemonBuilder::new();
    let missing = b.dir().join("idp.pem");
    let mut d = b.set("auth.jwt", toml::Value::Array(vec![issuer(ED_ISS, ("public_key_file", &missing), &["EdDSA"])])).start_no_wait();
    let status = d.wait_exit(Duration::from_secs(60));
    let err = d.logs().into_iter().map(|l| l.raw).collect::<Vec<_>>().join("\n");
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains(&format!("auth.jwt[0].public_key_file {}", missing.display())), "{err}");
    // `edgeaid --check-config` reads the key files too.
    let out = std::process::Command::new(paths::edgeaid()).arg("--check-config").arg("--config").arg(d.config_path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains(&format!("auth.jwt[0].public_key_file {}", missing.display())), "{text}");
    std::fs::copy(fixture("ed25519.pub"), &missing).unwrap();
    let out = std::process::Command::new(paths::edgeaid()).arg("--check-config").arg("--config").arg(d.config_path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

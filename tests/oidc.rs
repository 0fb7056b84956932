//! Sign-in with an OpenID provider against a real duet server on loopback, through its
//! real `/auth/oidc/login` and `/auth/callback`, with a provider served by this test on
//! another loopback port: discovery, a JWKS, and a token endpoint that checks the client
//! secret and PKCE and hands out the ID token the test minted for that code. The test
//! mints the token itself so that it can make the bad ones a real provider never would
//! (wrong audience, expired, another nonce, an unknown key). The whole flow with a
//! certified provider (npm `oidc-provider`) and Chromium is e2e/oidc.test.js.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use common::*;

const CLIENT_ID: &str = "duet-test";
const CLIENT_SECRET: &str = "a client secret the provider gave duet";

/// A signing key and its public JWK.
#[derive(Clone)]
struct Key {
    kid: String,
    alg: Algorithm,
    signing: Arc<EncodingKey>,
    jwk: Value,
}

impl Key {
    fn es256(kid: &str) -> Key {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256");
        let raw = pair.public_key_raw();
        assert_eq!(raw.len(), 65, "an uncompressed P-256 point");
        Key {
            kid: kid.into(),
            alg: Algorithm::ES256,
            signing: Arc::new(
                EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC key"),
            ),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
            }),
        }
    }

    fn ed25519(kid: &str) -> Key {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519");
        Key {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            signing: Arc::new(
                EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("Ed key"),
            ),
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
            }),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing).expect("sign")
    }
}

/// What the provider knows: the keys it publishes, the codes it will redeem.
#[derive(Default)]
struct ProviderState {
    issuer: String,
    published: Vec<Value>,
    /// code -> (PKCE challenge, ID token)
    codes: HashMap<String, (String, String)>,
    jwks_fetches: usize,
}

type Shared = Arc<Mutex<ProviderState>>;

struct Provider {
    issuer: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Provider {
    async fn start(published: &[&Key]) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let state: Shared = Arc::new(Mutex::new(ProviderState {
            issuer: issuer.clone(),
            published: published.iter().map(|k| k.jwk.clone()).collect(),
            ..ProviderState::default()
        }));
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Provider {
            issuer,
            state,
            task,
        }
    }

    fn publish(&self, keys: &[&Key]) {
        self.state.lock().expect("lock").published = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn jwks_fetches(&self) -> usize {
        self.state.lock().expect("lock").jwks_fetches
    }

    /// Claims a good ID token for this sign-in would have.
    fn claims(&self, sub: &str, nonce: &str, extra: Value) -> Value {
        let now = now();
        let mut claims = json!({
            "iss": self.issuer, "aud": CLIENT_ID, "sub": sub, "nonce": nonce,
            "iat": now, "exp": now + 300,
        });
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        claims
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn discovery(State(state): State<Shared>) -> axum::Json<Value> {
    let issuer = state.lock().expect("lock").issuer.clone();
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        // Not the default (basic): duet must read this and put the secret in the form.
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "EdDSA"],
    }))
}

async fn jwks(State(state): State<Shared>) -> axum::Json<Value> {
    let mut state = state.lock().expect("lock");
    state.jwks_fetches += 1;
    axum::Json(json!({"keys": state.published}))
}

async fn token(
    State(state): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, axum::Json<Value>) {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let refuse = |error: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({"error": error})));
    if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
        return refuse("invalid_client");
    }
    if field("grant_type") != "authorization_code" {
        return refuse("unsupported_grant_type");
    }
    let Some((challenge, id_token)) = state.lock().expect("lock").codes.remove(field("code"))
    else {
        return refuse("invalid_grant");
    };
    let verifier = field("code_verifier");
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != challenge {
        return refuse("invalid_grant");
    }
    (
        StatusCode::OK,
        axum::Json(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})),
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The value `name=` is set to among a response's `Set-Cookie` headers.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            let (n, value) = pair.split_once('=')?;
            (n == name).then(|| value.to_string())
        })
}

/// A sign-in started at duet: what the redirect to the provider carried.
struct Started {
    state: String,
    nonce: String,
    challenge: String,
    flow_cookie: String,
}

async fn start(duet: SocketAddr, provider: &Provider) -> Started {
    let response = http()
        .get(format!("http://{duet}/auth/oidc/login"))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 303);
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("location")
        .to_string();
    assert!(
        location.starts_with(&format!("{}/authorize?", provider.issuer)),
        "{location}"
    );
    let url = reqwest::Url::parse(&location).expect("url");
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(
        query["redirect_uri"],
        format!("http://{duet}/auth/callback")
    );
    assert_eq!(query["scope"], "openid profile email");
    assert_eq!(query["code_challenge_method"], "S256");
    let flow_cookie = set_cookie(&response, "duet_oidc").expect("flow cookie");
    Started {
        state: query["state"].clone(),
        nonce: query["nonce"].clone(),
        challenge: query["code_challenge"].clone(),
        flow_cookie,
    }
}

/// The callback's answer: status, session cookie (if set), body.
struct Finished {
    status: u16,
    session: Option<String>,
    body: String,
}

/// Has the provider redeem a code for `id_token`, and sends the browser back to duet.
async fn finish(
    duet: SocketAddr,
    provider: &Provider,
    started: &Started,
    id_token: String,
    state: Option<&str>,
) -> Finished {
    let code = format!("code-{}", rand_u64());
    provider
        .state
        .lock()
        .expect("lock")
        .codes
        .insert(code.clone(), (started.challenge.clone(), id_token));
    let state = state.unwrap_or(&started.state);
    let response = http()
        .get(format!(
            "http://{duet}/auth/callback?code={code}&state={state}"
        ))
        .header("cookie", format!("duet_oidc={}", started.flow_cookie))
        .send()
        .await
        .expect("callback");
    let status = response.status().as_u16();
    let session = set_cookie(&response, "duet_session").filter(|v| !v.is_empty());
    if status == 303 {
        assert_eq!(
            response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok()),
            Some("/")
        );
    }
    let body = response.text().await.unwrap_or_default();
    Finished {
        status,
        session,
        body,
    }
}

fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn upgrade(addr: SocketAddr, cookie: Option<&str>) -> Result<Client, u16> {
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    if let Some(cookie) = cookie {
        req.headers_mut().insert(
            "cookie",
            HeaderValue::from_str(&format!("duet_session={cookie}")).expect("cookie value"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("upgrade failed without a status: {e}"),
    }
}

async fn duet_for(provider: &Provider, tweak: impl FnOnce(&mut Config)) -> Server {
    let issuer = provider.issuer.clone();
    let server = Server::start(move |c| {
        c.auth.oidc_issuer = Some(issuer);
        c.auth.oidc_client_id = Some(CLIENT_ID.into());
        c.auth.oidc_client_secret = Some(CLIENT_SECRET.into());
        c.auth.oidc_name_claim = "preferred_username".into();
        tweak(c);
    })
    .await;
    server.wait_healthy().await;
    server
}

/// The whole flow: redirect, callback, the session cookie, and a WebSocket logged in at
/// once under the claim's name; without the cookie the upgrade gets 401; sign-out.
#[tokio::test]
async fn a_provider_sign_in_logs_the_socket_in_under_its_name() {
    let key = Key::es256("k1");
    let provider = Provider::start(&[&key]).await;
    let mut server = duet_for(&provider, |_| {}).await;
    let addr = server.addr;
    assert_eq!(upgrade(addr, None).await.err(), Some(401));

    let started = start(addr, &provider).await;
    let claims = provider.claims(
        "sub-alice",
        &started.nonce,
        json!({"preferred_username": "alice"}),
    );
    let done = finish(addr, &provider, &started, key.sign(&claims), None).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let session = done.session.expect("a session cookie");

    let status: Value = http()
        .get(format!("http://{addr}/auth/status"))
        .header("cookie", format!("duet_session={session}"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["signedIn"], true);
    assert_eq!(status["name"], "alice");
    assert_eq!(status["oidc"]["provider"], "127.0.0.1");

    let mut alice = upgrade(addr, Some(&session))
        .await
        .expect("upgrade with the session");
    let reply = alice.recv_type("login").await;
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["name"], "alice");
    // Its login message gets the same reply: the name is the provider's, not the client's.
    alice
        .send(json!({"type": "login", "name": "mallory"}))
        .await;
    assert_eq!(alice.recv_type("login").await["name"], "alice");
    // The code was redeemed once; a second callback with it is refused by the provider.
    alice.close().await;

    // A tampered session cookie is not a session.
    let tampered = format!("{session}x");
    assert_eq!(upgrade(addr, Some(&tampered)).await.err(), Some(401));
    server.shutdown().await.expect("shutdown");
}

/// Every bad ID token is refused with the reason on the page, and no session is set.
#[tokio::test]
async fn bad_id_tokens_are_refused() {
    let key = Key::es256("k1");
    let stranger = Key::ed25519("not-published");
    let provider = Provider::start(&[&key]).await;
    let mut server = duet_for(&provider, |_| {}).await;
    let addr = server.addr;
    let name = json!({"preferred_username": "bob"});

    type Mint = Box<dyn Fn(&Provider, &str) -> Value>;
    let bob = |p: &Provider, nonce: &str| {
        p.claims("sub-bob", nonce, json!({"preferred_username": "bob"}))
    };
    let cases: Vec<(&str, Mint, &str)> = vec![
        (
            "wrong audience",
            Box::new(move |p, nonce| {
                let mut c = bob(p, nonce);
                c["aud"] = json!("another-client");
                c
            }),
            "issued to another client",
        ),
        (
            "expired",
            Box::new(move |p, nonce| {
                let mut c = bob(p, nonce);
                c["exp"] = json!(now() - 3600);
                c["iat"] = json!(now() - 7200);
                c
            }),
            "has expired",
        ),
        (
            "another nonce",
            Box::new(move |p, _| bob(p, "a nonce of another sign-in")),
            "nonce is not this sign-in",
        ),
        (
            "another issuer",
            Box::new(move |p, nonce| {
                let mut c = bob(p, nonce);
                c["iss"] = json!("https://evil.example");
                c
            }),
            "another issuer",
        ),
        (
            "several audiences, no azp",
            Box::new(move |p, nonce| {
                let mut c = bob(p, nonce);
                c["aud"] = json!([CLIENT_ID, "another-client"]);
                c
            }),
            "several audiences and no azp",
        ),
    ];
    for (what, mint, why) in &cases {
        let started = start(addr, &provider).await;
        let claims = mint(&provider, &started.nonce);
        let done = finish(addr, &provider, &started, key.sign(&claims), None).await;
        assert_eq!(done.status, 401, "{what}: {}", done.body);
        assert!(
            done.body.contains("oidc-bad-token"),
            "{what}: {}",
            done.body
        );
        assert!(
            done.body.contains(why),
            "{what}: expected {why:?} in {}",
            done.body
        );
        assert!(done.session.is_none(), "{what}: a session was set");
    }

    // Signed by another key under the published key's id: a bad signature.
    let started = start(addr, &provider).await;
    let claims = provider.claims("sub-bob", &started.nonce, name.clone());
    let done = finish(
        addr,
        &provider,
        &started,
        Key::es256("k1").sign(&claims),
        None,
    )
    .await;
    assert_eq!(done.status, 401, "{}", done.body);
    assert!(
        done.body.contains("signature does not match"),
        "{}",
        done.body
    );

    // A key the provider never published.
    let started = start(addr, &provider).await;
    let claims = provider.claims("sub-bob", &started.nonce, name.clone());
    let done = finish(addr, &provider, &started, stranger.sign(&claims), None).await;
    assert_eq!(done.status, 401, "{}", done.body);
    assert!(done.body.contains("does not have"), "{}", done.body);

    // The state is not this sign-in's, or there is no flow cookie at all.
    let started = start(addr, &provider).await;
    let claims = provider.claims("sub-bob", &started.nonce, name.clone());
    let done = finish(addr, &provider, &started, key.sign(&claims), Some("forged")).await;
    assert_eq!(done.status, 400, "{}", done.body);
    assert!(done.body.contains("oidc-bad-state"), "{}", done.body);
    let response = http()
        .get(format!(
            "http://{addr}/auth/callback?code=x&state={}",
            started.state
        ))
        .send()
        .await
        .expect("callback");
    assert_eq!(response.status(), 400);

    // And after all that, a good one still works.
    let started = start(addr, &provider).await;
    let claims = provider.claims("sub-bob", &started.nonce, name);
    let done = finish(addr, &provider, &started, key.sign(&claims), None).await;
    assert_eq!(done.status, 303, "{}", done.body);
    server.shutdown().await.expect("shutdown");
}

/// The provider rotates its key: duet fetches the JWKS again for the unknown key id and
/// the sign-in works; made-up key ids cannot make it fetch without limit.
#[tokio::test]
async fn a_rotated_key_is_fetched_again_within_a_budget() {
    let old = Key::es256("2026-old");
    let new = Key::ed25519("2026-new");
    let provider = Provider::start(&[&old]).await;
    let mut server = duet_for(&provider, |_| {}).await;
    let addr = server.addr;
    let sign_in = |key: Key, sub: &'static str| {
        let provider = &provider;
        async move {
            let started = start(addr, provider).await;
            let claims = provider.claims(sub, &started.nonce, json!({"preferred_username": sub}));
            finish(addr, provider, &started, key.sign(&claims), None).await
        }
    };
    let done = sign_in(old.clone(), "carol").await;
    assert_eq!(done.status, 303, "{}", done.body);
    let fetched = provider.jwks_fetches();
    assert_eq!(fetched, 1, "the JWKS is fetched once at discovery");

    provider.publish(&[&new]);
    let done = sign_in(new.clone(), "dave").await;
    assert_eq!(done.status, 303, "after rotation: {}", done.body);
    assert_eq!(provider.jwks_fetches(), 2, "one refetch for the new key id");

    // Tokens naming key ids nobody published: refetches stop at the budget.
    for i in 0..6 {
        let done = sign_in(Key::ed25519(&format!("made-up-{i}")), "eve").await;
        assert_eq!(done.status, 401, "{}", done.body);
    }
    let fetches = provider.jwks_fetches();
    assert!(
        fetches <= 1 + 3,
        "{fetches} JWKS fetches: more than discovery and the burst of 3"
    );
    // The known new key still works without a fetch.
    let done = sign_in(new, "dave").await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(provider.jwks_fetches(), fetches);
    server.shutdown().await.expect("shutdown");
}

/// `--oidc-allowed-domain`: a verified address elsewhere gets a page that says so; an
/// unverified address at the domain proves nothing; one at the domain gets in.
#[tokio::test]
async fn an_allowed_domain_keeps_others_out_with_a_clear_page() {
    let key = Key::es256("k1");
    let provider = Provider::start(&[&key]).await;
    let mut server = duet_for(&provider, |c| {
        c.auth.oidc_allowed_domains = vec!["example.org".into()];
    })
    .await;
    let addr = server.addr;
    let attempt = |extra: Value| {
        let provider = &provider;
        let key = &key;
        async move {
            let started = start(addr, provider).await;
            let claims = provider.claims("sub-x", &started.nonce, extra);
            finish(addr, provider, &started, key.sign(&claims), None).await
        }
    };
    let done = attempt(json!({"email": "frank@elsewhere.net", "email_verified": true})).await;
    assert_eq!(done.status, 403, "{}", done.body);
    assert!(done.body.contains("oidc-not-allowed"), "{}", done.body);
    assert!(
        done.body
            .contains("frank@elsewhere.net may not sign in here")
            && done.body.contains("addresses at example.org"),
        "{}",
        done.body
    );
    assert!(done.session.is_none());
    let done = attempt(json!({"email": "grace@example.org", "email_verified": false})).await;
    assert_eq!(done.status, 403, "an unverified address: {}", done.body);
    // No preferred_username: the name falls back to `name`.
    let done =
        attempt(json!({"email": "Heidi@Example.org", "email_verified": true, "name": "Heidi"}))
            .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let mut heidi = upgrade(addr, done.session.as_deref())
        .await
        .expect("upgrade");
    assert_eq!(heidi.recv_type("login").await["name"], "Heidi");
    heidi.close().await;
    server.shutdown().await.expect("shutdown");
}

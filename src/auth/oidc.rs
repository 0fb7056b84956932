//! Sign-in with an OpenID provider (`--oidc-issuer`, `--oidc-client-id`,
//! `--oidc-client-secret`): the authorization code flow with PKCE (S256), `state` and
//! `nonce`, as a confidential client.
//!
//! 1. `GET /auth/oidc/login` ([`Oidc::start`]) makes a fresh `state`, `nonce` and PKCE
//!    verifier, keeps them in a signed, HttpOnly, 10-minute cookie (`duet_oidc`, so any
//!    node can finish the flow), and redirects to the provider's authorization endpoint.
//! 2. The provider sends the browser back to `<public origin>/auth/callback` with a code;
//!    [`Oidc::finish`] checks `state` against the cookie, redeems the code at the token
//!    endpoint (`client_secret_basic` or `client_secret_post`, as the discovery document
//!    says) with the verifier, and checks the ID token: signature by a key of the
//!    provider's JWKS, `iss`, `aud` (and `azp`), `exp`/`nbf` (60 s leeway), `nonce`.
//! 3. The name comes from `--oidc-name-claim` (then `name`, then `email`);
//!    `--oidc-allowed-domain` / `--oidc-allowed-user` may narrow who gets in.
//!
//! Discovery (`/.well-known/openid-configuration`) happens on the first sign-in and is
//! kept once it worked; a provider that is down at startup does not stop duet. The JWKS
//! is fetched again when a token names a key it does not have (key rotation), at most
//! [`REFETCH_BURST`] times and then once per [`REFETCH_EVERY`], so tokens with made-up
//! key ids cannot make duet hammer the provider.
//!
//! Why not the `openidconnect` crate: its 4.0 release brings a second generation of the
//! RSA/ECDSA/Ed25519 crates (rsa 0.9, p256 0.13, ed25519-dalek 2, rand 0.8) next to the
//! ones `jsonwebtoken` 12 already compiles here (rsa 0.10, p256 0.14, ed25519-dalek 3),
//! plus chrono, serde_with and oauth2, and still leaves JWKS refresh on rotation to the
//! caller. What duet needs of it is one redirect, one token request and the ID token
//! checks above; the signature checks are `jsonwebtoken`'s (the same code that checks
//! application tokens), the HTTP is `reqwest` on rustls (no OpenSSL).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::cookie::{self, CookieKey};
use super::jwt::LEEWAY_SECS;
use crate::protocol::Name;

/// The cookie that carries a sign-in in progress from the redirect to the callback.
pub const FLOW_COOKIE: &str = "duet_oidc";
/// How long a sign-in at the provider may take.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(600);
/// How long an OpenID session lasts: a user removed at the provider loses duet within a
/// working day; signing in again is one click while the provider's own session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// JWKS refetches for unknown key ids allowed at once ...
pub const REFETCH_BURST: f64 = 3.0;
/// ... and then one per this long.
pub const REFETCH_EVERY: Duration = Duration::from_secs(60);
/// Requests to the provider (discovery, JWKS, token) that take longer fail.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The signature algorithms accepted on ID tokens: the asymmetric ones (an HS256 ID token
/// would be signed with the client secret, which duet's config may share with others).
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The OpenID options, as given.
pub struct OidcOptions {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub name_claim: String,
    pub allowed_domains: Vec<String>,
    pub allowed_users: Vec<String>,
    pub provider_name: Option<String>,
    pub public_url: Option<String>,
}

/// The relying party: configuration, what discovery found, the provider's keys.
pub struct Oidc {
    /// `--oidc-issuer`, without a trailing `/`: what `iss` must say.
    issuer: String,
    client_id: String,
    client_secret: String,
    /// The claim the name is read from first.
    name_claim: String,
    /// Lower case.
    allowed_domains: Vec<String>,
    /// Lower case: e-mail addresses or subjects.
    allowed_users: Vec<String>,
    /// Shown on the button: "Sign in with <provider>".
    pub provider_name: String,
    /// `--public-url`: the origin the redirect URI is built on (else the request's).
    public_url: Option<String>,
    http: reqwest::Client,
    /// Filled by the first discovery that worked.
    discovery: tokio::sync::OnceCell<Discovery>,
    keys: Mutex<Keys>,
}

/// What the discovery document says duet needs.
#[derive(Debug, Clone)]
struct Discovery {
    authorization_endpoint: Url,
    token_endpoint: Url,
    jwks_uri: Url,
    /// Send the client secret in the form body rather than in `Authorization: Basic`.
    secret_in_body: bool,
}

/// The provider's signing keys, and the budget for fetching them again.
struct Keys {
    set: Vec<Jwk>,
    budget: f64,
    refilled: Instant,
}

/// Why a sign-in did not work. Each has a stable `code` shown on the error page.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error(
        "this sign-in was not started here or took longer than 10 minutes (no matching \
         state); start again"
    )]
    BadState,
    #[error("the provider refused the sign-in: {0}")]
    Provider(String),
    #[error("the provider cannot be reached or answered nonsense: {0}")]
    Unavailable(String),
    #[error("the provider's ID token is refused: {0}")]
    BadToken(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("the provider gives no usable name: {0}")]
    NoName(String),
}

impl OidcError {
    /// The stable code for the error page and the log.
    pub fn code(&self) -> &'static str {
        match self {
            OidcError::BadState => "oidc-bad-state",
            OidcError::Provider(_) => "oidc-provider-refused",
            OidcError::Unavailable(_) => "oidc-unavailable",
            OidcError::BadToken(_) => "oidc-bad-token",
            OidcError::NotAllowed(_) => "oidc-not-allowed",
            OidcError::NoName(_) => "oidc-no-name",
        }
    }
}

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub sub: String,
    pub name: String,
}

/// A URL duet may talk to: `https://`, or `http://` on a loopback address (tests).
fn usable_url(what: &str, raw: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw).with_context(|| format!("{what} {raw}: not a URL"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => bail!(
            "{what} {raw}: http:// is accepted only on a loopback address (tests); use https://"
        ),
        other => bail!("{what} {raw}: {other}:// is not http(s)"),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Random bytes in URL-safe base64 (no dots: they separate the flow cookie's parts).
fn random_b64(bytes: usize) -> String {
    let buf: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(buf)
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A sign-in in progress, as kept in the flow cookie.
#[derive(Debug, PartialEq, Eq)]
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            state: random_b64(16),
            nonce: random_b64(16),
            // 43 characters, the least RFC 7636 allows, of 256 random bits.
            verifier: random_b64(32),
        }
    }

    fn seal(&self, key: &CookieKey, now: SystemTime) -> String {
        let expiry = cookie::unix(now + FLOW_LIFETIME);
        key.sign(&format!(
            "f1.{expiry}.{}.{}.{}",
            self.state, self.nonce, self.verifier
        ))
    }

    fn open(key: &CookieKey, value: &str, now: SystemTime) -> Option<Flow> {
        let payload = key.open(value)?;
        let mut parts = payload.split('.');
        let (Some("f1"), Some(expiry), Some(state), Some(nonce), Some(verifier), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let expiry: u64 = expiry.parse().ok()?;
        (expiry > cookie::unix(now)).then(|| Flow {
            state: state.into(),
            nonce: nonce.into(),
            verifier: verifier.into(),
        })
    }
}

/// Constant-time equality of two strings.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Oidc {
    /// Checks the options (URLs, non-empty client); nothing is fetched yet.
    pub fn new(options: OidcOptions) -> anyhow::Result<Oidc> {
        let issuer_url = usable_url("--oidc-issuer", &options.issuer)?;
        if options.client_id.is_empty() {
            bail!("--oidc-issuer needs --oidc-client-id (the id the provider gave duet)");
        }
        if options.client_secret.is_empty() {
            bail!(
                "--oidc-issuer needs --oidc-client-secret or --oidc-client-secret-file (the \
                 secret the provider gave duet)"
            );
        }
        if let Some(public) = &options.public_url {
            let url =
                Url::parse(public).with_context(|| format!("--public-url {public}: not a URL"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                bail!(
                    "--public-url {public}: give the address users open, e.g. https://call.example.org"
                );
            }
        }
        let provider_name = options
            .provider_name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| issuer_url.host_str().unwrap_or("your provider").to_string());
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            // The provider's endpoints are used as discovery names them.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot set up the HTTP client for the OpenID provider")?;
        let lower = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .map(|s| s.trim().trim_start_matches('@').to_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Ok(Oidc {
            issuer: options.issuer.trim_end_matches('/').to_string(),
            client_id: options.client_id,
            client_secret: options.client_secret,
            name_claim: options.name_claim,
            allowed_domains: lower(options.allowed_domains),
            allowed_users: lower(options.allowed_users),
            provider_name,
            public_url: options
                .public_url
                .map(|u| u.trim_end_matches('/').to_string()),
            http,
            discovery: tokio::sync::OnceCell::new(),
            keys: Mutex::new(Keys {
                set: Vec::new(),
                budget: REFETCH_BURST,
                refilled: Instant::now(),
            }),
        })
    }

    /// The client secret: cookie keys are derived from it (secret, same on every node).
    pub fn secret(&self) -> &str {
        &self.client_secret
    }

    /// `<origin>/auth/callback`, the origin from `--public-url` or else `request_origin`.
    pub fn redirect_uri(&self, request_origin: &str) -> String {
        let origin = self.public_url.as_deref().unwrap_or(request_origin);
        format!("{origin}/auth/callback")
    }

    async fn discovered(&self) -> Result<&Discovery, OidcError> {
        self.discovery.get_or_try_init(|| self.discover()).await
    }

    async fn discover(&self) -> Result<Discovery, OidcError> {
        #[derive(Deserialize)]
        struct Document {
            issuer: String,
            authorization_endpoint: String,
            token_endpoint: String,
            jwks_uri: String,
            #[serde(default)]
            token_endpoint_auth_methods_supported: Option<Vec<String>>,
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let document: Document = self.get_json(&url).await?;
        if document.issuer.trim_end_matches('/') != self.issuer {
            return Err(OidcError::Unavailable(format!(
                "the discovery document at {url} is for issuer {}, not {}",
                document.issuer, self.issuer
            )));
        }
        let endpoint = |what: &str, raw: &str| {
            usable_url(what, raw).map_err(|e| OidcError::Unavailable(format!("{e:#}")))
        };
        // RFC 8414: client_secret_basic when the document names none.
        let methods = document
            .token_endpoint_auth_methods_supported
            .unwrap_or_default();
        let basic = methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic");
        let post = methods.iter().any(|m| m == "client_secret_post");
        if !basic && !post {
            return Err(OidcError::Unavailable(format!(
                "the token endpoint takes none of client_secret_basic, client_secret_post \
                 (it takes {methods:?})"
            )));
        }
        let discovery = Discovery {
            authorization_endpoint: endpoint(
                "authorization_endpoint",
                &document.authorization_endpoint,
            )?,
            token_endpoint: endpoint("token_endpoint", &document.token_endpoint)?,
            jwks_uri: endpoint("jwks_uri", &document.jwks_uri)?,
            secret_in_body: !basic,
        };
        let keys = self.fetch_keys(&discovery.jwks_uri).await?;
        lock(&self.keys).set = keys;
        info!(issuer = %self.issuer, "OpenID provider discovered");
        Ok(discovery)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(format!("GET {url}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(OidcError::Unavailable(format!("GET {url}: HTTP {status}")));
        }
        response
            .json()
            .await
            .map_err(|e| OidcError::Unavailable(format!("GET {url}: {e}")))
    }

    /// The keys of the JWKS at `url`; keys of kinds `jsonwebtoken` does not read
    /// (encryption keys, unknown curves) are skipped.
    async fn fetch_keys(&self, url: &Url) -> Result<Vec<Jwk>, OidcError> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<Value>,
        }
        let set: Set = self.get_json(url.as_str()).await?;
        Ok(set
            .keys
            .into_iter()
            .filter(|k| k.get("use").and_then(Value::as_str) != Some("enc"))
            .filter_map(|k| serde_json::from_value(k).ok())
            .collect())
    }

    /// Step 1: where to send the browser, and the flow cookie to set.
    pub async fn start(
        &self,
        key: &CookieKey,
        request_origin: &str,
    ) -> Result<(Url, String), OidcError> {
        let discovery = self.discovered().await?;
        let flow = Flow::new();
        let mut url = discovery.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri(request_origin))
            .append_pair("scope", "openid profile email")
            .append_pair("state", &flow.state)
            .append_pair("nonce", &flow.nonce)
            .append_pair("code_challenge", &pkce_challenge(&flow.verifier))
            .append_pair("code_challenge_method", "S256");
        Ok((url, flow.seal(key, SystemTime::now())))
    }

    /// Step 2: the callback's query (`code` and `state`, or `error`) and the flow cookie,
    /// to who signed in.
    pub async fn finish(
        &self,
        key: &CookieKey,
        request_origin: &str,
        query: &Map<String, Value>,
        flow_cookie: Option<&str>,
    ) -> Result<SignedIn, OidcError> {
        let text = |k: &str| query.get(k).and_then(Value::as_str);
        let flow = flow_cookie
            .and_then(|v| Flow::open(key, v, SystemTime::now()))
            .ok_or(OidcError::BadState)?;
        if !text("state").is_some_and(|s| same(s, &flow.state)) {
            return Err(OidcError::BadState);
        }
        if let Some(error) = text("error") {
            let detail = text("error_description").unwrap_or("");
            return Err(OidcError::Provider(
                format!("{error} {detail}").trim().into(),
            ));
        }
        let code = text("code")
            .ok_or_else(|| OidcError::Provider("the callback carries no code".into()))?;
        let id_token = self.redeem(code, &flow.verifier, request_origin).await?;
        let claims = self.verify(&id_token, &flow.nonce).await?;
        self.admit(&claims)
    }

    /// Redeems `code` at the token endpoint; the ID token.
    async fn redeem(
        &self,
        code: &str,
        verifier: &str,
        request_origin: &str,
    ) -> Result<String, OidcError> {
        let discovery = self.discovered().await?;
        let redirect_uri = self.redirect_uri(request_origin);
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        let mut request = self.http.post(discovery.token_endpoint.clone());
        if discovery.secret_in_body {
            form.push(("client_id", &self.client_id));
            form.push(("client_secret", &self.client_secret));
        } else {
            // RFC 6749 2.3.1: each form-urlencoded before they are joined.
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let basic = STANDARD.encode(format!(
                "{}:{}",
                encode(&self.client_id),
                encode(&self.client_secret)
            ));
            request = request.header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let response = request
            .form(&form)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(format!("token endpoint: {e}")))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| OidcError::Unavailable(format!("token endpoint (HTTP {status}): {e}")))?;
        if !status.is_success() {
            let error = body.get("error").and_then(Value::as_str).unwrap_or("error");
            let detail = body
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(OidcError::Provider(
                format!("token endpoint: {error} {detail}").trim().into(),
            ));
        }
        body.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| OidcError::Provider("the token response has no id_token".into()))
    }

    /// The ID token's claims, once its signature, issuer, audience, times and nonce are
    /// right.
    pub async fn verify(
        &self,
        id_token: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let bad = OidcError::BadToken;
        let header = decode_header(id_token).map_err(|e| bad(format!("not a usable JWT: {e}")))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(bad(format!(
                "algorithm {:?} is not accepted (only the provider's public-key algorithms)",
                header.alg
            )));
        }
        let discovery = self.discovered().await?;
        let key = match self.find_key(header.kid.as_deref(), header.alg) {
            Some(key) => key,
            None => {
                // Perhaps the provider rotated its keys since we fetched them.
                if !self.may_refetch() {
                    return Err(bad(format!(
                        "signed with key {:?}, which the provider's JWKS does not have (not \
                         fetched again yet: fetched too often)",
                        header.kid
                    )));
                }
                info!(kid = ?header.kid, "unknown key id on an ID token: fetching the provider's keys again");
                let keys = self.fetch_keys(&discovery.jwks_uri).await?;
                lock(&self.keys).set = keys;
                self.find_key(header.kid.as_deref(), header.alg)
                    .ok_or_else(|| {
                        bad(format!(
                            "signed with key {:?}, which the provider's JWKS does not have",
                            header.kid
                        ))
                    })?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer, &format!("{}/", self.issuer)]);
        validation.set_audience(&[&self.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = decode::<Map<String, Value>>(id_token, &key, &validation)
            .map_err(|e| bad(reason(&e)))?;
        let claims = data.claims;
        match claims.get("nonce").and_then(Value::as_str) {
            Some(n) if same(n, nonce) => {}
            Some(_) => {
                return Err(bad(
                    "its nonce is not this sign-in's (a replayed token?)".into()
                ));
            }
            None => return Err(bad("it has no nonce".into())),
        }
        // OpenID Connect Core 3.1.3.7: with several audiences, azp names us.
        let several = claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() > 1);
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != self.client_id => {
                return Err(bad(format!("it was issued to {azp} (azp), not to duet")));
            }
            None if several => {
                return Err(bad("it has several audiences and no azp".into()));
            }
            _ => {}
        }
        Ok(claims)
    }

    /// The key named `kid`, or (when the token names none) the first of the kind `alg`
    /// signs with.
    fn find_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        use jsonwebtoken::jwk::AlgorithmParameters as Kind;
        let fits = |jwk: &Jwk| {
            matches!(
                (&jwk.algorithm, alg),
                (
                    Kind::RSA(_),
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                ) | (Kind::EllipticCurve(_), Algorithm::ES256 | Algorithm::ES384)
                    | (Kind::OctetKeyPair(_), Algorithm::EdDSA)
            )
        };
        let keys = lock(&self.keys);
        keys.set
            .iter()
            .filter(|jwk| match kid {
                Some(kid) => jwk.common.key_id.as_deref() == Some(kid),
                None => true,
            })
            .filter(|jwk| fits(jwk))
            .find_map(|jwk| DecodingKey::from_jwk(jwk).ok())
    }

    /// Spends one JWKS refetch of the budget, if there is one.
    fn may_refetch(&self) -> bool {
        let mut keys = lock(&self.keys);
        let now = Instant::now();
        let refill = now.duration_since(keys.refilled).as_secs_f64() / REFETCH_EVERY.as_secs_f64();
        keys.budget = (keys.budget + refill).min(REFETCH_BURST);
        keys.refilled = now;
        if keys.budget >= 1.0 {
            keys.budget -= 1.0;
            true
        } else {
            false
        }
    }

    /// Step 3: the name, and whether this user may sign in here.
    fn admit(&self, claims: &Map<String, Value>) -> Result<SignedIn, OidcError> {
        let text = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let sub = text("sub")
            .ok_or_else(|| OidcError::BadToken("its sub is not a string".into()))?
            .to_string();
        // A provider may say an address is unverified: then it proves nothing.
        let verified = claims.get("email_verified").and_then(Value::as_bool) != Some(false);
        let email = text("email").filter(|_| verified).map(str::to_lowercase);
        if !self.allowed_domains.is_empty() || !self.allowed_users.is_empty() {
            let domain = email
                .as_deref()
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d);
            let by_domain = domain.is_some_and(|d| self.allowed_domains.iter().any(|a| a == d));
            let by_user = self
                .allowed_users
                .iter()
                .any(|a| Some(a.as_str()) == email.as_deref() || *a == sub.to_lowercase());
            if !by_domain && !by_user {
                let who = email.clone().unwrap_or_else(|| format!("subject {sub}"));
                return Err(OidcError::NotAllowed(format!(
                    "{who} may not sign in here: this duet admits only {}; ask its operator \
                     to add you (--oidc-allowed-domain, --oidc-allowed-user)",
                    self.admitted()
                )));
            }
        }
        let name = [self.name_claim.as_str(), "name", "email"]
            .into_iter()
            .find_map(text)
            .ok_or_else(|| {
                OidcError::NoName(format!(
                    "the ID token has none of the claims {}, name, email (ask for the \
                     profile scope, or set --oidc-name-claim)",
                    self.name_claim
                ))
            })?;
        let name = Name::parse(name)
            .map_err(|e| OidcError::NoName(format!("\"{name}\" cannot be a duet name: {e}")))?;
        Ok(SignedIn {
            sub,
            name: name.as_str().to_string(),
        })
    }

    fn admitted(&self) -> String {
        let mut parts: Vec<String> = self
            .allowed_domains
            .iter()
            .map(|d| format!("addresses at {d}"))
            .collect();
        if !self.allowed_users.is_empty() {
            parts.push("a list of users".into());
        }
        parts.join(" and ")
    }
}

fn lock(keys: &Mutex<Keys>) -> std::sync::MutexGuard<'_, Keys> {
    keys.lock().unwrap_or_else(|poisoned| {
        warn!("the OpenID key cache lock was poisoned; using it anyway");
        poisoned.into_inner()
    })
}

/// What is wrong with an ID token, in words an operator can act on.
fn reason(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "it has expired (exp is in the past)".into(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf is in the future)".into(),
        ErrorKind::InvalidSignature => "its signature does not match the provider's key".into(),
        ErrorKind::InvalidAudience => "it was issued to another client (aud)".into(),
        ErrorKind::InvalidIssuer => "it was issued by another issuer (iss)".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("its {claim} claim has the wrong type"),
        _ => format!("not a usable JWT: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_cookie_round_trips_and_expires() {
        let key = CookieKey::derive("secret");
        let now = SystemTime::now();
        let flow = Flow::new();
        let sealed = flow.seal(&key, now);
        assert_eq!(Flow::open(&key, &sealed, now).as_ref(), Some(&flow));
        assert_eq!(Flow::open(&key, &sealed, now + FLOW_LIFETIME), None);
        assert_eq!(Flow::open(&CookieKey::derive("other"), &sealed, now), None);
    }

    #[test]
    fn pkce_matches_rfc_7636() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn issuers_must_be_https_unless_loopback() {
        assert!(usable_url("i", "https://accounts.example.org").is_ok());
        assert!(usable_url("i", "http://127.0.0.1:3000").is_ok());
        assert!(usable_url("i", "http://localhost:3000").is_ok());
        assert!(usable_url("i", "http://[::1]:3000").is_ok());
        assert!(usable_url("i", "http://accounts.example.org").is_err());
        assert!(usable_url("i", "ftp://127.0.0.1").is_err());
    }
}

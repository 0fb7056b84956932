//! Tokens from an application (`--jwt-secret`, `--jwt-public-key`): an app that embeds
//! duet signs its users in itself and hands each a JWT, which the client puts on the
//! WebSocket URL (`?token=`). The token says who the user is: `sub` (required), `name`
//! (optional, else `sub` is the name), `exp` (required), `nbf` (checked when present);
//! 60 s of clock leeway.
//!
//! Checked with `jsonwebtoken` (>= 10.3, which refuses registered claims of the wrong
//! JSON type instead of skipping them) on its RustCrypto backend (pure Rust, no C build).
//! Only the algorithm of the configured key is accepted for it: HS256 for the secret, the
//! public key's own (RS256, ES256 or EdDSA), so an HS256 token "signed" with the public
//! key as its secret, or `alg: none`, never verifies.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

/// Clock difference tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;

/// The configured keys.
pub struct Jwt {
    /// `--jwt-secret`, as its UTF-8 bytes.
    secret: Option<DecodingKey>,
    /// `--jwt-public-key`, and the one algorithm its type signs with.
    public: Option<(DecodingKey, Algorithm)>,
}

pub use super::Identity;

/// The claims duet reads. `exp`/`nbf` are checked by `jsonwebtoken` (their type too).
#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// Checked (present, a number, not past) by `jsonwebtoken` before this is read.
    /// (Read as any JSON so that its type error is `jsonwebtoken`'s clearer one.)
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    name: Option<String>,
}

impl Jwt {
    /// The keys the options name, or `None` when neither is given.
    pub fn load(secret: Option<&str>, public_key: Option<&PathBuf>) -> anyhow::Result<Option<Jwt>> {
        if secret.is_none() && public_key.is_none() {
            return Ok(None);
        }
        let secret = match secret {
            Some(s) if s.len() < 32 => {
                bail!(
                    "--jwt-secret is {} bytes; use at least 32 random bytes",
                    s.len()
                )
            }
            Some(s) => Some(
                DecodingKey::from_secret(s.as_bytes())
                    .map_err(|e| anyhow::anyhow!("--jwt-secret: {e}"))?,
            ),
            None => None,
        };
        let public = match public_key {
            Some(path) => Some(load_public_key(path)?),
            None => None,
        };
        Ok(Some(Jwt { secret, public }))
    }

    /// The identity in `token`, or why it is refused (for the log and the 401).
    pub fn verify(&self, token: &str) -> Result<Identity, String> {
        let header = decode_header(token).map_err(|e| format!("not a usable JWT: {e}"))?;
        let key = match (header.alg, &self.secret, &self.public) {
            (Algorithm::HS256, Some(secret), _) => secret,
            (alg, _, Some((key, own))) if alg == *own => key,
            (alg, _, _) => {
                return Err(format!(
                    "algorithm {alg:?} is not accepted here (accepted: {})",
                    self.accepted()
                ));
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = decode::<Claims>(token, key, &validation).map_err(|e| reason(&e))?;
        let claims = data.claims;
        let name = claims.name.unwrap_or_else(|| claims.sub.clone());
        Ok(Identity {
            sub: claims.sub,
            name,
            expires: claims
                .exp
                .and_then(|exp| exp.as_u64().or_else(|| exp.as_f64().map(|f| f as u64)))
                .unwrap_or(0),
        })
    }

    fn accepted(&self) -> String {
        let mut algs = Vec::new();
        if self.secret.is_some() {
            algs.push("HS256".to_string());
        }
        if let Some((_, alg)) = &self.public {
            algs.push(format!("{alg:?}"));
        }
        algs.join(", ")
    }
}

/// What is wrong with a token, in words an app developer can act on.
fn reason(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired (exp is in the past)".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf is in the future)".into(),
        ErrorKind::InvalidSignature => "the signature does not match the configured key".into(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match the key".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => {
            format!("the {claim} claim has the wrong JSON type")
        }
        ErrorKind::Json(e) => format!("the claims have the wrong JSON types: {e}"),
        _ => format!("not a usable JWT: {e}"),
    }
}

/// A PEM public key: Ed25519 (EdDSA), P-256 (ES256) or RSA (RS256).
fn load_public_key(path: &Path) -> anyhow::Result<(DecodingKey, Algorithm)> {
    let pem = std::fs::read(path)
        .with_context(|| format!("--jwt-public-key {}: cannot read it", path.display()))?;
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, Algorithm::EdDSA));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, Algorithm::ES256));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    bail!(
        "--jwt-public-key {}: not a PEM public key of a kind duet reads (Ed25519, P-256 or RSA)",
        path.display()
    )
}

//! The household password: an argon2 hash in PHC format (`$argon2id$v=19$...`), one line
//! in `--password-file`, printed by `duet hash-password`. Verifying costs ~tens of ms of
//! CPU on purpose, so it runs on a blocking thread and attempts are limited per address.

use std::io::Read;
use std::path::Path;

use anyhow::{Context as _, bail};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// A loaded, well-formed password hash.
#[derive(Clone)]
pub struct Password {
    phc: String,
}

impl Password {
    /// Reads `path`: one PHC argon2 line (surrounding white space ignored).
    pub fn load(path: &Path) -> anyhow::Result<Password> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--password-file {}: cannot read it", path.display()))?;
        Password::parse(text.trim()).with_context(|| {
            format!(
                "--password-file {}: expected one argon2 hash as printed by \
                 `duet hash-password`",
                path.display()
            )
        })
    }

    pub fn parse(phc: &str) -> anyhow::Result<Password> {
        let hash = PasswordHash::new(phc).map_err(|e| anyhow::anyhow!("{e}"))?;
        if !hash.algorithm.as_str().starts_with("argon2") {
            bail!("the hash is {}, not argon2", hash.algorithm);
        }
        Ok(Password {
            phc: phc.to_string(),
        })
    }

    /// The PHC line (secret: cookie keys are derived from it).
    pub fn phc(&self) -> &str {
        &self.phc
    }

    /// Whether `candidate` is the password. Slow by design: call off the async runtime.
    pub fn verify(&self, candidate: &str) -> bool {
        PasswordHash::new(&self.phc).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(candidate.as_bytes(), &hash)
                .is_ok()
        })
    }
}

/// The PHC line for `password`, with a fresh random salt and argon2id's default cost.
pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

/// `duet hash-password`: reads the password from standard input (one line; a trailing
/// newline is not part of it) and prints its PHC line.
pub fn hash_password_command() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read the password from standard input")?;
    let password = input
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&input);
    if password.is_empty() {
        bail!("empty password: type it on standard input, e.g. `duet hash-password < file`");
    }
    println!("{}", hash(password)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_parse() {
        let line = hash("correct horse").expect("hash");
        assert!(line.starts_with("$argon2id$"), "{line}");
        let password = Password::parse(&line).expect("parse");
        assert!(password.verify("correct horse"));
        assert!(!password.verify("correct horse "));
        assert!(!password.verify(""));
        assert!(Password::parse("plain text").is_err());
        assert!(Password::parse("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA").is_err());
    }
}

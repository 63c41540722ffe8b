//! The folder where `autopost dev` keeps the secrets it generates when none are configured (the
//! JWT secret, the token key), readable only by the user, so that tokens it printed and accounts
//! it stored survive a restart. Production reads its secrets from the environment instead.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::Context;
use secrecy::SecretString;

pub struct DevState {
    path: PathBuf,
}

impl DevState {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(DevState { path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The secret kept as `name`, made with `generate` (and kept, mode 0600) the first time.
    pub fn secret(&self, name: &str, generate: impl FnOnce() -> String) -> anyhow::Result<SecretString> {
        let file = self.path.join(name);
        match fs::read_to_string(&file) {
            Ok(value) if !value.trim().is_empty() => return Ok(value.trim().to_owned().into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        }
        let value = generate();
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&file)
            .with_context(|| format!("writing {}", file.display()))?;
        writeln!(out, "{value}")?;
        Ok(value.into())
    }
}

/// 64 hex characters from the OS's random source (two v4 UUIDs: 244 random bits).
pub fn random_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_kept_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("autopost-dev-state-{}", uuid::Uuid::new_v4()));
        let state = DevState::open(&dir).unwrap();
        let first = state.secret("jwt-secret", random_secret).unwrap();
        let again = DevState::open(&dir).unwrap().secret("jwt-secret", || panic!("must not generate twice")).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(first.expose_secret(), again.expose_secret());
        assert_eq!(first.expose_secret().len(), 64);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(dir.join("jwt-secret")).unwrap().permissions().mode() & 0o777, 0o600);
        fs::remove_dir_all(dir).unwrap();
    }
}

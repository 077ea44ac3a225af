use std::fmt;
use std::path::PathBuf;

/// Where a problem is: file, line (1-based) and dotted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: Option<usize>,
    pub key: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {path}: {source} (pass an existing file with --config or GATEHOUSE_CONFIG)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, a value of the wrong
    /// type, or a value that is none of an enumerated setting's choices.
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    /// The TOML is well-formed but a value is not acceptable.
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
}

impl ConfigError {
    /// Line of the problem, when known (1-based).
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { at, .. } | ConfigError::Invalid { at, .. } => at.line,
        }
    }

    /// Dotted key of the problem, when known (e.g. `tls.handshake_timeout`).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { at, .. } | ConfigError::Invalid { at, .. } => at.key.as_deref(),
        }
    }
}
